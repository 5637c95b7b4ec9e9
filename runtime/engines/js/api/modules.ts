/**
 * require(), both sides of the boundary: the prelude part (the run's modules, each top level
 * run once per run with a fresh `module`, CommonJS style) and the host primitives (the compiled
 * module by name, ../../host/modules.ts).
 *
 * Modules are compiled into a Vm before a run starts there (JsEngine.run), never from inside a
 * primitive: a compile moves QuickJS's stack limit, which must stay where the run set it.
 */
import { num, str, type Bindings, type Bridge } from './binding.js';

/** The host primitives of this capability. */
export const MODULES_PRIMITIVES = ['moduleOpen'] as const;

/**
 * The prelude part (see ../prelude.ts for the names in scope): require(), and the run's table of
 * modules required so far, emptied by start(). `callModule(fn, module)` is the frame's: it passes
 * the API to the module's wrapper as start() does to the script's.
 */
export const MODULES_PRELUDE = `
  // The modules required so far in this run, and how many top levels are running (the host's
  // chain is cut to that count on the next open: one call out of QuickJS per require, not two).
  // runModules: the run's modules, name -> compiled wrapper (from start(); undefined: none).
  let modulesLoaded = null, moduleDepth = 0, runModules;
  function require(name) {
    if (typeof name !== 'string') throw new TypeError_('require(): the module name must be a string');
    if (modulesLoaded === null) modulesLoaded = new Map();
    const done = modulesLoaded.get(name);
    if (done !== undefined) return done.exports;
    // A shared module loaded in this Vm needs no host call (nor the host's chain: no top level runs).
    const known = runModules === undefined ? undefined : runModules[name];
    if (known !== undefined) {
      const exports = sharedExports.get(known);
      if (exports !== undefined && exports !== NOT_SHARED) {
        modulesLoaded.set(name, { exports });
        return exports;
      }
    }
    let fn;
    try {
      fn = h_moduleOpen(name, moduleDepth);
    } catch (e) {
      // A refusal is made outside any script frame: it gets the stack of this call.
      throw atSite(e, new Error_());
    }
    if (fn.length === SHARED_LENGTH) {
      const exports = sharedExports.get(fn) ?? loadShared(fn);
      if (exports !== NOT_SHARED) {
        modulesLoaded.set(name, { exports });
        return exports;
      }
    }
    // A module run per request cannot be part of a shared one: the shared one would keep it.
    if (sharing !== 0) refuseShare();
    const module = { exports: {} };
    moduleDepth++;
    try {
      callModule(fn, module);
    } finally {
      moduleDepth--;
    }
    modulesLoaded.set(name, module);
    return module.exports;
  }

  // Shared modules (js/share.ts chose them when they compiled; README, "Modules"): the top
  // level runs once per Vm, with stand-ins for the API that holds a request (each refuses any
  // use), then the real API is bound in and everything the module's variables reach is frozen.
  // A refusal, a closure factory run by the top level (its instrumented start calls t()), or a
  // value freezing cannot hold (a Map, a Date, a bound function, a stand-in kept) makes it
  // NOT_SHARED: it then runs per request, in this run too. Its own error is thrown as a
  // per-request run would throw it, and the next require tries again.
  // Plain Map and Set, not Weak ones: a WeakSet of the intrinsics kept a Vm's runtime from
  // being freed after a full heap (the whole wasm module stayed: the sandbox-isolation test of
  // six heap-filling faults). A wrapper kept here stays alive with its Vm (as lua54 keeps a
  // module in a state): a module edited often is bounded by MAX_SHARED, then all load again.
  let sharing = 0, shareRefused = false;
  const sharedExports = new Map(), MAX_SHARED = 256;
  const NOT_SHARED = freeze(create(null));
  // Everything harden() froze (the intrinsics, the API): never walked again, never a module's.
  const hardened = new Set();
  function refuseShare() {
    shareRefused = true;
    throw new Error_('not available while a shared module loads');
  }
  const refusing = freeze({
    get: refuseShare, set: refuseShare, has: refuseShare, deleteProperty: refuseShare, ownKeys: refuseShare,
    getOwnPropertyDescriptor: refuseShare, defineProperty: refuseShare, getPrototypeOf: refuseShare,
    setPrototypeOf: refuseShare, isExtensible: refuseShare, preventExtensions: refuseShare, apply: refuseShare, construct: refuseShare,
  });
  const standInFn = new Proxy(function () {}, refusing), standInObj = new Proxy({}, refusing);
  const standIn = (value) => (typeof value === 'function' ? standInFn : standInObj);
  const markRan = () => { if (sharing !== 0) shareRefused = true; };
  const inertShare = freeze({ t() {}, set bind(f) {}, set names(f) {} });

  function loadShared(fn) {
    const module = { exports: {} };
    const ctl = { t: markRan, bind: null, names: null };
    const outerRefused = shareRefused;
    shareRefused = false;
    sharing++;
    moduleDepth++;
    let values = null, refused;
    try {
      loadSharedTop(fn, module, ctl);
    } catch (e) {
      if (!shareRefused) throw e;
    } finally {
      sharing--;
      moduleDepth--;
      refused = shareRefused;
      shareRefused = outerRefused;
    }
    // A top level that returned before a \`let\` leaves it uninitialised: names() throws.
    if (!refused) {
      try { values = ctl.names(); } catch { refused = true; }
    }
    let exports = NOT_SHARED;
    if (!refused && freezeShared([module, ...values])) {
      ctl.bind(realApi());
      exports = module.exports;
    }
    ctl.bind = ctl.names = null;
    freeze(ctl);
    if (sharedExports.size >= MAX_SHARED) sharedExports.clear();
    sharedExports.set(fn, exports);
    return exports;
  }

  // The prototypes a shared value may have besides the module's own objects: none of these
  // keeps state outside its properties.
  const plainProtos = new Set([null, Object.prototype, Array.prototype, Function.prototype, RegExp.prototype,
    Object.getPrototypeOf(async function () {}), Object.getPrototypeOf(function* () {}), Object.getPrototypeOf(async function* () {}),
    Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError,
    Error.prototype, TypeError.prototype, RangeError.prototype, SyntaxError.prototype, ReferenceError.prototype, EvalError.prototype, URIError.prototype]);
  const getProto = Object.getPrototypeOf, ownKeys = Reflect.ownKeys, ownDesc = Reflect.getOwnPropertyDescriptor;
  // RegExp.prototype's own getters, called directly: reading o.global could run a getter of the module's.
  const regexpGlobal = ownDesc(RegExp.prototype, 'global').get, regexpSticky = ownDesc(RegExp.prototype, 'sticky').get;
  // Everything reachable from roots, frozen when all of it may be shared; false (nothing frozen) otherwise.
  function freezeShared(roots) {
    const seen = new Set();
    const todo = roots;
    while (todo.length > 0) {
      const o = todo.pop();
      if (o === null || (typeof o !== 'object' && typeof o !== 'function') || seen.has(o) || hardened.has(o)) continue;
      if (o === standInFn || o === standInObj) return false;
      const proto = getProto(o);
      if (!plainProtos.has(proto) && hardened.has(proto)) return false;
      if (typeof o === 'function' && apply(fnToString, o, []).includes('[native code]')) return false;
      if (proto === RegExp.prototype) {
        try { if (apply(regexpGlobal, o, []) || apply(regexpSticky, o, [])) return false; } catch { return false; }
      }
      seen.add(o);
      todo.push(proto);
      for (const key of ownKeys(o)) {
        const d = ownDesc(o, key);
        if ('value' in d) todo.push(d.value);
        else todo.push(d.get, d.set);
      }
    }
    for (const o of seen) freeze(o);
    return true;
  }`;

/** The host side of require(). */
export function modulesBindings(vm: Bridge): Bindings<(typeof MODULES_PRIMITIVES)[number]> {
  const ctx = vm.context;
  return {
    moduleOpen: (run, [name, depth]) => {
      const n = str(ctx, name);
      const script = run.host.openModule(n, num(ctx, depth));
      const fn = vm.compiledIn(script);
      if (fn === undefined) {
        run.host.closeModule(n);
        throw new Error(`module '${n}' is not compiled in this sandbox (${script.path})`);
      }
      return fn.dup();
    },
  };
}
