/**
 * The prelude: JavaScript that runs inside the QuickJS sandbox once per context, not per
 * request. It builds the script API (print, request, response...) from host primitives and then
 * hardens the global object. This file holds its frame (the shared helpers, the waits the slow
 * log can place, start() and the functions the host calls, the hardening) and assembles the
 * capabilities' parts, which live beside their host bindings in api/ (one file a capability).
 *
 * Why most of the API lives in the sandbox: every value that crosses the host boundary costs a
 * handle, a malloc and a copy. Building `request` and `response` from private classes in here
 * lets a request cost two calls into QuickJS (start, and takeOut for the output at the end of
 * each CPU slice) and, out of it, one call for the string fields (all of them, on the first
 * read) and one for each record (query, headers, params) the script reads.
 *
 * The parts are pieces of one function body, not modules: each may use the names this frame
 * declares (the primitives as `h_NAME`, String_, Number_, TypeError_, Error_, isInteger, parse,
 * stringify, create, assign, freeze, apply, TOKEN, waitFrom/waitDone, show, send, atSite, waitAt,
 * join) and the
 * names other parts declare (flushBuffered and addHeader from output, fromHost/toHost/
 * defineProperty from script-response, setCookie from cookies, formOf from form), at call time
 * only; the frame uses the API names each part declares.
 */
import { CACHE_PRELUDE, CACHE_PRIMITIVES } from './api/cache.js';
import { COOKIES_PRELUDE, COOKIES_PRIMITIVES } from './api/cookies.js';
import { CORE_PRELUDE, CORE_PRIMITIVES } from './api/core.js';
import { FETCH_PRELUDE, FETCH_PRIMITIVES } from './api/fetch.js';
import { FILES_PRELUDE, FILES_PRIMITIVES } from './api/files.js';
import { LIBRARY_PRELUDE, LIBRARY_PRIMITIVES } from './api/library.js';
import { MODULES_PRELUDE, MODULES_PRIMITIVES } from './api/modules.js';
import { FORM_PRELUDE, FORM_PRIMITIVES } from './api/form.js';
import { OUTPUT_PRELUDE, OUTPUT_PRIMITIVES } from './api/output.js';
import { PASS_PRELUDE, PASS_PRIMITIVES } from './api/pass.js';
import { REQUEST_PRELUDE, REQUEST_PRIMITIVES } from './api/request.js';
import { RESPONSE_PRELUDE, RESPONSE_PRIMITIVES } from './api/script-response.js';

/** File name the prelude is evaluated under; stack frames from it are never the script's line. */
export const PRELUDE_FILENAME = '<lodestone>';

/**
 * The script API's globals: each name a script sees (a parameter of every compiled wrapper) and
 * the prelude's name for the value start() passes there. A new global is one line here.
 */
const API_GLOBALS: ReadonlyArray<readonly [param: string, prelude: string]> = [
  ['print', 'print'],
  ['write', 'write'],
  ['flush', 'flush'],
  ['log', 'log'],
  ['sleep', 'sleep'],
  ['stat', 'stat'],
  ['sendfile', 'sendfile'],
  ['cache', 'cache'],
  ['pass', 'pass'],
  ['fetch', 'fetch'],
  ['emit', 'emitResponse'],
  ['request', 'request'],
  ['response', 'response'],
  ['base64', 'base64'],
  ['url', 'url'],
  ['crypto', 'crypto'],
  ['time', 'time'],
  ['require', 'require'],
];

/** The head of every compiled wrapper: its parameters are the script API (API_GLOBALS). */
export const WRAPPER_HEAD = `async function (${API_GLOBALS.map(([param]) => param).join(', ')}) {"use strict"; `;

/**
 * The head of the wrapper of a script that never says `await` (compile.ts): a plain function,
 * which start() runs to its end in one call, with no promise to settle and inspect afterwards
 * (the hello script: 3 calls into QuickJS instead of 7). As long as WRAPPER_HEAD, so that
 * columns on the script's first line mean the same in either (stack.ts).
 */
export const SYNC_WRAPPER_HEAD = WRAPPER_HEAD.replace('async ', '') + '      ';

/**
 * The head of a module's wrapper: CommonJS's `module` and `exports`, then the script API as a
 * script gets it. A plain function: require() is synchronous, so a module's top level cannot
 * await (its functions can).
 */
export const MODULE_WRAPPER_HEAD = `function (module, exports, ${API_GLOBALS.map(([param]) => param).join(', ')}) {"use strict"; `;

/** The script API's parameter names, in order (js/share.ts resolves a module's references against them). */
export const API_PARAMS: readonly string[] = API_GLOBALS.map(([param]) => param);

/**
 * The shared module wrapper's last parameter: the loader's control (api/modules.ts). A module
 * that names it is never shared (js/share.ts).
 */
export const SHARE_CONTROL = '$lodestone$';

/**
 * API values a shared module's top level gets as they are: they hold nothing of a request.
 * The others (print, request, cache, ...) are stand-ins there that refuse any use, so a module
 * that reads or writes the request at its top level runs per request instead.
 */
const SHARE_SAFE: ReadonlySet<string> = new Set(['base64', 'url', 'crypto', 'time', 'require']);

/**
 * The head of a shared module's wrapper (js/share.ts decides which modules): a module
 * wrapper's parameters and the loader's control, to which the head hands `bind`, which sets the
 * API parameters the module uses (`rebinds`) to the real API once the top level has run with
 * stand-ins, and `names`, which returns the values of the top level's variables for the loader
 * to freeze. One parameter more than {@link MODULE_WRAPPER_HEAD}: that is how the loader tells a
 * shared wrapper (SHARED_LENGTH).
 */
export function sharedModuleHead(rebinds: readonly string[], names: readonly string[]): string {
  const binds = rebinds.map((n) => `${n} = a[${API_PARAMS.indexOf(n)}];`).join(' ');
  return `function (module, exports, ${API_PARAMS.join(', ')}, ${SHARE_CONTROL}) {"use strict"; ${SHARE_CONTROL}.bind = (a) => { ${binds} }; ${SHARE_CONTROL}.names = () => [${names.join(', ')}]; `;
}

/** Names of the host primitives the prelude expects, in one object passed to it (api/install.ts makes them). */
export const PRIMITIVES = [
  ...REQUEST_PRIMITIVES,
  ...OUTPUT_PRIMITIVES,
  ...CORE_PRIMITIVES,
  ...FILES_PRIMITIVES,
  ...CACHE_PRIMITIVES,
  ...PASS_PRIMITIVES,
  ...FETCH_PRIMITIVES,
  ...RESPONSE_PRIMITIVES,
  ...LIBRARY_PRIMITIVES,
  ...COOKIES_PRIMITIVES,
  ...FORM_PRIMITIVES,
  ...MODULES_PRIMITIVES,
] as const;

/** A host primitive's name. */
export type Primitive = (typeof PRIMITIVES)[number];

/**
 * The prelude: an expression evaluating to `install(prim)`, which returns
 * `{ start, promise, takeOut, describe, probe, nul, same, error, where, waitedAt }`:
 * - `start(fn)` calls the compiled wrapper `fn` with the API. When it returned an object (the
 *   promise of an async wrapper), it answers 'P' and `promise()` hands that promise to the host;
 *   otherwise the run is over and it answers what takeOut() would, led by the status the
 *   script returned (a number, else nothing). A script that throws throws out of start. The API
 *   acts on the run whose CPU slice is executing (js/vm.ts): only one runs at a time, and no
 *   job of a run outlives its slice, so no run id needs to travel with each call.
 * - `takeOut()` returns (and empties) the head changes and output buffered since it was last
 *   called, as '' \x01 head \x01 output (see `takeOut` in api/output.ts); the host must call it at
 *   the end of every slice, and calls it once more when a run ends: anything left then was not
 *   the run's to keep (a leak guard). `start` also empties it, so a run never begins with
 *   another run's output or head changes.
 * - `describe(err)` turns anything thrown into JSON `[name, message, stack, line]`, never throwing.
 * - `nul(...parts)` joins parts with NUL (the host cannot pass a string holding NUL directly).
 * - `error(name, message)` makes the Error (TypeError, RangeError) a host call rejects or throws with.
 * - `same(fn, text)` returns 1 when `fn`'s source text is `text`.
 * - `probe(n)` returns 1 when an n-byte allocation currently fits the heap, else 0 (see Vm.ensureRoom).
 * - `where()` returns the stack where it is called: called by the host from QuickJS's interrupt
 *   handler, it is the stack of the script the handler interrupted (the slow log).
 * - `waitedAt()` returns the stack of the script's latest pass(), fetch() or sleep() still
 *   waiting ('' if none): where a script waiting past slowRequestMs made the call it waits in.
 *
 * Hardening, after the API exists: `eval` and the four Function constructors are disabled
 * (they would reach the parser, the deepest native recursion in QuickJS, with the large run-time
 * stack limit; and Cloudflare Workers make the same choice), FinalizationRegistry is removed
 * (its callbacks would run a finished request's code inside a later request), and every object
 * reachable from the global object or from a hidden intrinsic is frozen.
 */
export const PRELUDE_SOURCE = `(function install(prim) {
  'use strict';
  const { ${PRIMITIVES.map((p) => `${p}: h_${p}`).join(', ')} } = prim;
  const String_ = String, Number_ = Number, TypeError_ = TypeError, Error_ = Error, isInteger = Number.isInteger;
  const parse = JSON.parse, stringify = JSON.stringify, create = Object.create, assign = Object.assign;
  const freeze = Object.freeze, apply = Reflect.apply, fnToString = Function.prototype.toString;
  const Promise_ = Promise, resolve = (v) => Promise_.resolve(v);
  const TOKEN = freeze(create(null));

  // Where the script called pass(), fetch() or sleep(), while those wait: the slow log asks for the
  // latest still waiting (waitedAt). pass() and fetch() make their Error anyway (for their errors'
  // stack); sleep() makes one: a few us of QuickJS time (4-6 us measured on the loaded 2-core dev
  // machine), next to a wait of at least a timer tick (~1.2 ms for sleep(0)). The other calls that
  // wait (request.body(), stat(), sendfile(), cache calls on Redis) are hot paths where an Error
  // each would add those us to every request that makes them: the slow log names them without a
  // line.
  const waitSites = new Set();
  // waitSites.size, kept in a variable: start() reads it every run, a plain read (no accessor call).
  let sitesWaiting = 0;
  const waitFrom = (site) => { waitSites.add(site); sitesWaiting++; };
  const waitDone = (site) => { if (waitSites.delete(site)) sitesWaiting--; };

  const show = (v) => { try { return String_(v); } catch { return typeof v; } };
  // Strings reach the host as C strings, which end at the first NUL: a string holding NULs is
  // sent as its NUL-separated parts (extra arguments), and the host joins them again.
  const send = (prim, s) => (s.indexOf('\\0') < 0 ? prim(s) : prim(...s.split('\\0')));
  // A host call's error is made outside any script frame, so it would name no line: it gets the
  // stack of an Error made at the call (site) instead. The calls that wait on I/O anyway make
  // one (pass, fetch, request.body, request.form); stat() and cache.* do not (hot paths).
  const atSite = (e, site) => {
    if (e !== null && typeof e === 'object') {
      try { defineProperty(e, 'stack', { value: site.stack, writable: true, configurable: true }); } catch {}
    }
    return e;
  };
  // A host call the script waits in, made by call(): listed for the slow log while it waits,
  // its errors (thrown or rejected) given the site's stack. pass() and fetch() wait in one.
  const waitAt = async (site, call) => {
    waitFrom(site);
    try {
      return await call();
    } catch (e) {
      throw atSite(e, site);
    } finally {
      waitDone(site);
    }
  };
  const join = (args, sep) => {
    let out = '';
    for (let i = 0; i < args.length; i++) {
      if (i > 0) out += sep;
      out += String_(args[i]);
    }
    return out;
  };
${OUTPUT_PRELUDE}
${CORE_PRELUDE}
${FILES_PRELUDE}
${RESPONSE_PRELUDE}
${CACHE_PRELUDE}
${PASS_PRELUDE}
${COOKIES_PRELUDE}
${FORM_PRELUDE}
${FETCH_PRELUDE}
${REQUEST_PRELUDE}
${LIBRARY_PRELUDE}
${MODULES_PRELUDE}
  // A module's wrapper gets the API; a shared one run per request gets the inert control too.
  const callModule = (fn, module) => fn(module, module.exports, ${API_GLOBALS.map(([, value]) => value).join(', ')}, inertShare);
  // The API as a shared module's top level gets it, and as it gets it bound afterwards.
  const SHARED_LENGTH = ${API_GLOBALS.length + 3};
  const loadSharedTop = (fn, module, ctl) => fn(module, module.exports, ${API_GLOBALS.map(([param, value]) => (SHARE_SAFE.has(param) ? value : `standIn(${value})`)).join(', ')}, ctl);
  const realApi = () => [${API_GLOBALS.map(([, value]) => value).join(', ')}];

  // Everything here is shared by the runs of this context; harden() deep-freezes it with the
  // intrinsics, functions included (the accessors on the prototypes, cache.get, request.body).
  const api = [Request, Response, ${API_GLOBALS.map(([, value]) => value).join(', ')}];

  const start = (fn, modules) => {
    resetOut();
    resetRequest(request);
    modulesLoaded = null;
    moduleDepth = 0;
    runModules = modules;
    // A load a limit stopped never reached its finally (QuickJS's interrupt skips them).
    sharing = 0;
    shareRefused = false;
    // A wait the last run left unfinished (a sleep() it did not await) never reaches its
    // finally: its site is not this run's.
    if (sitesWaiting !== 0) {
      waitSites.clear();
      sitesWaiting = 0;
    }
    const r = fn(${API_GLOBALS.map(([, value]) => value).join(', ')});
    // An object may be a promise (every async wrapper's result) or a thenable: the host then
    // waits for it as an async function would, taking it with promise().
    if (r !== null && (typeof r === 'object' || typeof r === 'function')) {
      running = r instanceof Promise_ ? r : resolve(r);
      return 'P';
    }
    return (typeof r === 'number' ? String_(r) : '') + takeOut();
  };
  let running = null;
  const promise = () => {
    const p = running;
    running = null;
    return p;
  };

  function field(e, name) {
    try { const v = e[name]; return v === undefined ? '' : String_(v); } catch { return ''; }
  }
  function describe(e) {
    try {
      if (e !== null && typeof e === 'object' && 'message' in e) {
        const line = typeof e.lineNumber === 'number' ? String_(e.lineNumber) : '';
        return stringify([field(e, 'name') || 'Error', field(e, 'message'), field(e, 'stack'), line]);
      }
      return stringify(['uncaught exception', show(e), '', '']);
    } catch {
      return '["uncaught exception", "(unprintable value)", "", ""]';
    }
  }
  const nul = (...parts) => parts.join('\\0');
  // Host errors are made in here: the host's own newError sets message and name by assignment,
  // which the frozen Error.prototype turns into silent no-ops (the override mistake).
  const error = (name, message) => new (name === 'TypeError' ? TypeError_ : name === 'RangeError' ? RangeError : Error)(message);
  const same = (fn, text) => { try { return apply(fnToString, fn, []) === text ? 1 : 0; } catch { return 0; } };
  function probe(n) {
    try { new ArrayBuffer(n); return 1; } catch { return 0; }
  }
  const where = () => { try { return String_(new Error_().stack); } catch { return ''; } };
  const waitedAt = () => {
    let last = null;
    for (const site of waitSites) last = site;
    try { return last === null ? '' : String_(last.stack); } catch { return ''; }
  };

  guardSorts();
  harden();
  return freeze({ start, promise, takeOut, describe, probe, nul, same, error, where, waitedAt });

  // QuickJS checks its interrupt handler on calls and loop back-edges of JS code only: a sort
  // without a comparator compares in C and ran 1.9 s with a 400 ms CPU limit (300,000 strings,
  // sorted four times) and answered 200. With a comparator written in JS each comparison is a
  // call, so the CPU limit applies; these are the spec's default orders (undefined and holes
  // are kept out of the comparator by sort itself, as without one).
  function guardSorts() {
    const byString = (a, b) => {
      const x = String_(a), y = String_(b);
      return x < y ? -1 : x > y ? 1 : 0;
    };
    // TypedArray order: numeric, -0 before +0, NaN last.
    const byNumber = (a, b) => {
      if (a < b) return -1;
      if (a > b) return 1;
      if (a === b) return a === 0 ? (1 / a < 0 ? (1 / b < 0 ? 0 : -1) : 1 / b < 0 ? 1 : 0) : 0;
      return a !== a ? (b !== b ? 0 : 1) : -1;
    };
    const wrap = (proto, name, order) => {
      const original = proto[name];
      if (typeof original !== 'function') return;
      const f = { [name](compare) { return apply(original, this, [compare === undefined ? order : compare]); } }[name];
      Object.defineProperty(proto, name, { value: f, writable: true, enumerable: false, configurable: true });
    };
    wrap(Array.prototype, 'sort', byString);
    wrap(Array.prototype, 'toSorted', byString);
    const typed = Object.getPrototypeOf(Int8Array).prototype;
    wrap(typed, 'sort', byNumber);
    wrap(typed, 'toSorted', byNumber);
  }

  function harden() {
    const G = globalThis;
    const disabled = (name) => {
      const f = function () { throw new EvalError(name + ' is disabled in Lodestone scripts'); };
      Object.defineProperty(f, 'name', { value: name });
      return f;
    };
    const protos = [
      Function.prototype,
      Object.getPrototypeOf(async function () {}),
      Object.getPrototypeOf(function* () {}),
      Object.getPrototypeOf(async function* () {}),
    ];
    const names = ['Function', 'AsyncFunction', 'GeneratorFunction', 'AsyncGeneratorFunction'];
    protos.forEach((proto, i) => {
      const f = disabled(names[i]);
      f.prototype = proto; // instanceof Function keeps working
      Object.defineProperty(proto, 'constructor', { value: f, writable: false, enumerable: false, configurable: false });
      if (i === 0) Object.defineProperty(G, 'Function', { value: f, writable: true, enumerable: false, configurable: true });
    });
    Object.defineProperty(G, 'eval', { value: disabled('eval'), writable: true, enumerable: false, configurable: true });
    delete G.FinalizationRegistry;

    // Intrinsics not reachable as properties of the global object.
    const hidden = [
      ...protos,
      Object.getPrototypeOf([][Symbol.iterator]()),
      Object.getPrototypeOf(new Map()[Symbol.iterator]()),
      Object.getPrototypeOf(new Set()[Symbol.iterator]()),
      Object.getPrototypeOf(''[Symbol.iterator]()),
      Object.getPrototypeOf(/a/[Symbol.matchAll]('')),
      Object.getPrototypeOf((function* () {})()),
      Object.getPrototypeOf((async function* () {})()),
      Object.getPrototypeOf(Int8Array),
    ];
    if (typeof Iterator === 'function') {
      hidden.push(Object.getPrototypeOf([].values().map((x) => x)));
      hidden.push(Object.getPrototypeOf(Iterator.from({ next() { return { done: true }; } })));
    }
    // While a shared module's top level runs (api/modules.ts), nothing may change an object's
    // prototype or make a Proxy: the loader tells a Map, a Date or an iterator (state freezing
    // cannot reach) by its prototype, and a Proxy's handler is out of freezing's reach.
    const gated = (f, name) => ({ [name](...a) { if (sharing !== 0) refuseShare(); return apply(f, this, a); } })[name];
    Object.defineProperty(Object, 'setPrototypeOf', { value: gated(Object.setPrototypeOf, 'setPrototypeOf'), writable: true, enumerable: false, configurable: true });
    Object.defineProperty(Reflect, 'setPrototypeOf', { value: gated(Reflect.setPrototypeOf, 'setPrototypeOf'), writable: true, enumerable: false, configurable: true });
    const protoAccess = Object.getOwnPropertyDescriptor(Object.prototype, '__proto__');
    Object.defineProperty(Object.prototype, '__proto__', { get: protoAccess.get, set: gated(protoAccess.set, '__proto__'), enumerable: false, configurable: true });
    const Proxy_ = Proxy;
    const GatedProxy = function Proxy(target, handler) {
      if (new.target === undefined) throw new TypeError_("Constructor Proxy requires 'new'");
      if (sharing !== 0) refuseShare();
      return new Proxy_(target, handler);
    };
    Object.defineProperty(GatedProxy, 'revocable', { value: gated(Proxy_.revocable, 'revocable'), writable: true, enumerable: false, configurable: true });
    Object.defineProperty(G, 'Proxy', { value: GatedProxy, writable: true, enumerable: false, configurable: true });

    const seen = hardened;
    const todo = [G, ...hidden, ...api];
    while (todo.length > 0) {
      const o = todo.pop();
      if (o === null || (typeof o !== 'object' && typeof o !== 'function') || seen.has(o)) continue;
      seen.add(o);
      freeze(o);
      todo.push(Object.getPrototypeOf(o));
      for (const key of Reflect.ownKeys(o)) {
        const d = Reflect.getOwnPropertyDescriptor(o, key);
        if (d === undefined) continue;
        if ('value' in d) todo.push(d.value);
        else todo.push(d.get, d.set);
      }
    }
  }
})`;
