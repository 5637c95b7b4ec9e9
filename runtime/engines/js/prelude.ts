/**
 * JavaScript that runs inside the QuickJS sandbox once per context, not per request: it builds
 * the script API (print, request, response...) from a few host primitives and then hardens the
 * global object. Kept as source text here so js.ts stays about driving QuickJS.
 *
 * Why most of the API lives in the sandbox: every value that crosses the host boundary costs a
 * handle, a malloc and a copy. Building `request` and `response` from private classes in here
 * lets a request cost one host call, and each field the script reads costs one more.
 */

/** File name the prelude is evaluated under; stack frames from it are never the script's line. */
export const PRELUDE_FILENAME = '<lodestone>';

/**
 * Order of the request string fields the `text` primitive serves (index -> field). The prelude
 * and the host both use this table, so the two cannot drift apart.
 */
export const TEXT_FIELDS = [
  'method',
  'uri',
  'path',
  'query_string',
  'remote_addr',
  'script_filename',
  'document_root',
] as const;

/** Order of the request record fields the `json` primitive serves. */
export const JSON_FIELDS = ['query', 'headers', 'params'] as const;

/** Names of the host primitives the prelude expects, in one object passed to it. */
export const PRIMITIVES = [
  'text',
  'json',
  'write',
  'flush',
  'log',
  'logRoom',
  'sleep',
  'body',
  'stat',
  'sendfile',
  'cacheGet',
  'cacheSet',
  'cacheDelete',
  'cacheIncr',
  'pass',
  'emit',
  'held',
  'getStatus',
  'setStatus',
  'getHeader',
  'setHeader',
] as const;

const textGetters = TEXT_FIELDS.map((name, i) => `get ${name}() { return this.#text(${i}); }`).join('\n    ');
const jsonGetters = JSON_FIELDS.map((name, i) => `get ${name}() { return this.#record(${i}); }`).join('\n    ');

/**
 * The prelude: an expression evaluating to `install(prim)`, which returns
 * `{ start, takeOut, describe, probe, nul, same, error, where, waitedAt }`:
 * - `start(fn)` calls the compiled wrapper `fn` with the API and returns its promise. The API
 *   acts on the run whose CPU slice is executing (js/vm.ts): only one runs at a time, and no
 *   job of a run outlives its slice, so no run id needs to travel with each call.
 * - `takeOut()` returns the output buffered since the first write of the slice (see `emit`);
 *   the host must call it at the end of every slice in which `write` reached it, and calls it
 *   once more when a run ends: anything left then was not the run's to keep (a leak guard).
 *   `start` also empties it, so a run never begins with another run's output.
 * - `describe(err)` turns anything thrown into JSON `[name, message, stack, line]`, never throwing.
 * - `nul(...parts)` joins parts with NUL (the host cannot pass a string holding NUL directly).
 * - `error(name, message)` makes the Error (TypeError, RangeError) a host call rejects or throws with.
 * - `same(fn, text)` returns 1 when `fn`'s source text is `text`.
 * - `probe(n)` returns 1 when an n-byte allocation currently fits the heap, else 0 (see vm.ts).
 * - `where()` returns the stack where it is called: called by the host from QuickJS's interrupt
 *   handler, it is the stack of the script the handler interrupted (the slow log).
 * - `waitedAt()` returns the stack of the script's latest pass() or sleep() still waiting ('' if
 *   none): where a script waiting past slowRequestMs made the call it waits in.
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
  const TOKEN = freeze(create(null));

  // Where the script called pass() or sleep(), while those wait: the slow log asks for the
  // latest still waiting (waitedAt). pass() makes its Error anyway (for its errors' stack);
  // sleep() makes one: a few us of QuickJS time (4-6 us measured on the loaded 2-core dev
  // machine), next to a wait of at least a timer tick (~1.2 ms for sleep(0)). The other calls
  // that wait (request.body(), stat(), sendfile(), cache calls on Redis) are hot paths where an
  // Error each would add those us to every request that makes them: the slow log names them
  // without a line.
  const waitSites = new Set();
  // waitSites.size, kept in a variable: start() reads it every run, a plain read (no accessor call).
  let sitesWaiting = 0;
  const waitFrom = (site) => { waitSites.add(site); sitesWaiting++; };
  const waitDone = (site) => { if (waitSites.delete(site)) sitesWaiting--; };

  const show = (v) => { try { return String_(v); } catch { return typeof v; } };
  // Strings reach the host as C strings, which end at the first NUL: a string holding NULs is
  // sent as its NUL-separated parts (extra arguments), and the host joins them again.
  const send = (prim, s) => (s.indexOf('\\0') < 0 ? prim(s) : prim(...s.split('\\0')));
  const join = (args, sep) => {
    let out = '';
    for (let i = 0; i < args.length; i++) {
      if (i > 0) out += sep;
      out += String_(args[i]);
    }
    return out;
  };

  // Output: a host call costs ~5 us, so only the first write of a CPU slice calls the host (which
  // then knows to collect the rest with takeOut() when the slice ends); later writes collect
  // in 'buffered', handed over early once it grows large.
  // The state belongs to the run in progress: start() resets it, and it is set to '' only
  // after the host took the first write, so a write the host refuses (a stopped run, or a
  // stack overflow at the call) leaves nothing behind that later writes would pile onto.
  let buffered = null;
  const emit = (s) => {
    if (buffered === null) {
      send(h_write, s);
      buffered = '';
      return;
    }
    buffered += s;
    if (buffered.length >= 16384) {
      const b = buffered;
      buffered = '';
      send(h_write, b);
    }
  };
  // Hands buffered output to the host before a call that acts on the response.
  const flushBuffered = () => {
    if (buffered) {
      const out = buffered;
      buffered = '';
      send(h_write, out);
    }
  };
  const takeOut = () => {
    const b = buffered;
    buffered = null;
    return b === null ? '' : b;
  };

  // The API functions are shared by all runs (and frozen): the host primitives act on the run
  // whose slice is executing, so nothing here names a run.
  const print = (...args) => { emit(join(args, '\\t') + '\\n'); };
  const write = (...args) => { emit(join(args, '')); };
  const flush = () => {
    if (buffered) {
      const b = buffered;
      buffered = '';
      send(h_write, b);
    }
    h_flush();
  };
  // A log line is built only up to the host's room (log bytes left this run, at most one line's
  // bound): log('x'.repeat(2e7)) copies that room, not 20 MiB, out of the VM. The host gets the
  // count of characters cut and adds the marker.
  const log = (...args) => {
    const room = h_logRoom();
    let out = '', size = 0;
    for (let i = 0; i < args.length; i++) {
      const a = String_(args[i]);
      size += (i > 0 ? 1 : 0) + a.length;
      if (out.length <= room) out += (i > 0 ? '\\t' : '') + (a.length > room ? a.slice(0, room) : a);
    }
    if (size > room) out = out.slice(0, room);
    h_log(size - out.length, ...out.split('\\0'));
  };
  const sleep = async (ms) => {
    const site = new Error_();
    waitFrom(site);
    try {
      return await h_sleep(Number_(ms));
    } finally {
      waitDone(site);
    }
  };
  // Paths go last, as NUL-separated parts (see send): a NUL must reach the host, which
  // refuses such a path, rather than cut it short.
  const stat = async (path) => {
    const json = await h_stat(...String_(path).split('\0'));
    return json === '' ? null : freeze(parse(json));
  };
  // sendfile(path[, offset, length][, options]); the run ends inside it.
  const sendfile = (path, a, b, c) => {
    const ranged = !(a !== null && typeof a === 'object');
    const options = ranged ? c : a;
    if (options !== undefined && options !== null && typeof options !== 'object') throw new TypeError_('sendfile(): options must be an object');
    const type = options?.content_type, name = options?.filename;
    if ((type !== undefined && typeof type !== 'string') || (name !== undefined && typeof name !== 'string')) {
      throw new TypeError_('sendfile(): content_type and filename must be strings');
    }
    flushBuffered();
    const offset = ranged && a != null ? Number_(a) : undefined, length = ranged && b != null ? Number_(b) : undefined;
    return h_sendfile(offset, length, type, name, ...String_(path).split('\0'));
  };

  // Cache values, pass() and emit(): everything crosses the host boundary as JSON (which
  // escapes NUL). A response from the host carries a hidden handle, so caching or emitting it
  // unchanged sends the backend's exact bytes, whatever their encoding; its body string is UTF-8.
  const HANDLE = Symbol('response');
  const defineProperty = Object.defineProperty;
  // A response's headers and body are fetched from the host when first read: emitting a
  // cached page (the common case) never needs them in here.
  const fromHost = (json) => {
    if (json === '') return null;
    const o = parse(json);
    if (o.r === undefined) return o.s;
    const h = o.h;
    let headers = null, body = null;
    const res = {
      status: o.r.status,
      get headers() {
        if (headers === null) {
          headers = create(null);
          for (const [n, v] of parse(h_held(h, 0))) {
            const k = n.toLowerCase();
            headers[k] = k in headers ? headers[k] + '\\n' + v : v;
          }
          freeze(headers);
        }
        return headers;
      },
      get body() { return body ??= h_held(h, 1); },
    };
    if (o.r.age !== undefined) res.age = o.r.age;
    if (o.r.file !== undefined) res.file = o.r.file;
    defineProperty(res, HANDLE, { value: h });
    return freeze(res);
  };
  const toHost = (what, v) => {
    if (typeof v === 'string' || typeof v === 'number') return { s: String_(v) };
    if (v !== null && typeof v === 'object') {
      if (typeof v[HANDLE] === 'number') return { h: v[HANDLE] };
      const headers = [];
      const h = v.headers;
      if (h !== undefined && h !== null) {
        if (typeof h !== 'object') throw new TypeError_(what + ': headers must be an object');
        for (const name of Object.keys(h)) {
          for (const line of String_(h[name]).split('\\n')) headers.push([name, line]);
        }
      }
      const status = v.status === undefined ? 200 : v.status;
      if (typeof status !== 'number') throw new TypeError_(what + ': status must be a number');
      const r = { status, headers, body: v.body === undefined || v.body === null ? '' : String_(v.body) };
      if (typeof v.file === 'string') r.file = v.file;
      return { r };
    }
    throw new TypeError_(what + ': value must be a string or a response object');
  };
  const cache = {
    get: async (key) => fromHost(await h_cacheGet(stringify(String_(key)))),
    set: async (key, value, ttl) => parse(await h_cacheSet(stringify({ k: String_(key), v: toHost('cache.set()', value), t: ttl === undefined ? 0 : Number_(ttl) }))),
    delete: async (key) => parse(await h_cacheDelete(stringify(String_(key)))),
    incr: async (key, by, ttl) => parse(await h_cacheIncr(stringify({ k: String_(key), by: by === undefined ? 1 : Number_(by), t: ttl === undefined ? null : Number_(ttl) }))),
  };
  const pass = async (name, options) => {
    if (options !== undefined && options !== null && typeof options !== 'object') throw new TypeError_('pass(): options must be an object');
    const o = options ?? {};
    let params;
    if (o.params !== undefined && o.params !== null) {
      params = create(null);
      for (const k of Object.keys(o.params)) {
        const v = o.params[k];
        params[k] = v === false || v === null || v === undefined ? null : String_(v);
      }
    }
    const body = o.body === undefined || o.body === null ? undefined : String_(o.body);
    if (o.emit) flushBuffered();
    // The host makes pass()'s errors outside any script frame, so they would carry no line: they
    // get the stack of this call instead (one Error, ~1 us, beside a relay of ~230 us).
    const site = new Error_();
    waitFrom(site);
    try {
      return fromHost(await h_pass(stringify({ n: String_(name), p: params, b: body, e: !!o.emit })));
    } catch (e) {
      if (e !== null && typeof e === 'object') {
        try { defineProperty(e, 'stack', { value: site.stack, writable: true, configurable: true }); } catch {}
      }
      throw e;
    } finally {
      waitDone(site);
    }
  };
  // Returns a promise when the body is a file (the run ends in sendfile): await it.
  const emitResponse = (res) => {
    flushBuffered();
    return h_emit(stringify(toHost('emit()', res)));
  };

  // A Request caches what it fetched for its run, so a new one is made per run.
  class Request {
    #texts = null; #records = null; #body = null;
    constructor(token) { if (token !== TOKEN) throw new TypeError_('Illegal constructor'); }
    #text(i) {
      const cache = (this.#texts ??= []);
      return cache[i] ??= h_text(i);
    }
    #record(i) {
      const cache = (this.#records ??= []);
      return cache[i] ??= assign(create(null), parse(h_json(i)));
    }
    ${textGetters}
    ${jsonGetters}
    body() { return this.#body ??= h_body(); }
  }

  const setHeader = (name, value) => {
    // undefined asks the host to remove the header.
    const v = value === undefined || value === null ? undefined : typeof value === 'number' ? value : String_(value);
    if (name.indexOf('\\0') >= 0 || (typeof v === 'string' && v.indexOf('\\0') >= 0)) {
      throw new TypeError_('invalid header ' + stringify(name) + ': NUL');
    }
    const err = h_setHeader(name, v);
    if (err !== undefined) throw new TypeError_(err);
  };
  const headerTraps = freeze({
    get: (t, k) => (typeof k === 'string' && k.indexOf('\\0') < 0 ? h_getHeader(k) : undefined),
    has: (t, k) => typeof k === 'string' && k.indexOf('\\0') < 0 && h_getHeader(k) !== undefined,
    set: (t, k, v) => { if (typeof k !== 'string') return false; setHeader(k, v); return true; },
    deleteProperty: (t, k) => { if (typeof k === 'string') setHeader(k, undefined); return true; },
    defineProperty: () => false,
  });

  class Response {
    #headers = null;
    constructor(token) { if (token !== TOKEN) throw new TypeError_('Illegal constructor'); }
    get status() { return h_getStatus(); }
    set status(v) {
      if (typeof v !== 'number' || !isInteger(v) || v < 100 || v > 999) throw new TypeError_('invalid status ' + show(v));
      h_setStatus(v);
    }
    get headers() { return this.#headers ??= new Proxy(create(null), headerTraps); }
  }
  // Everything here is shared by the runs of this context; harden() deep-freezes it with the
  // intrinsics, functions included (the accessors on the prototypes, cache.get, request.body).
  const api = [Request, Response, print, write, flush, log, sleep, stat, sendfile, cache, pass, emitResponse];

  const start = (fn) => {
    buffered = null;
    // A wait the last run left unfinished (a sleep() it did not await) never reaches its
    // finally: its site is not this run's.
    if (sitesWaiting !== 0) {
      waitSites.clear();
      sitesWaiting = 0;
    }
    return fn(print, write, flush, log, sleep, stat, sendfile, cache, pass, emitResponse, new Request(TOKEN), new Response(TOKEN));
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
  return freeze({ start, takeOut, describe, probe, nul, same, error, where, waitedAt });

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
    const seen = new Set();
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
