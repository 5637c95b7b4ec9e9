/**
 * require(), both sides of the boundary: the prelude part (the run's modules, each top level
 * run once per run with a fresh `module`, CommonJS style) and the host primitives (the compiled
 * module by name, ../../host/modules.ts; the chain left when its top level ends).
 *
 * Modules are compiled into a Vm before a run starts there (JsEngine.run), never from inside a
 * primitive: a compile moves QuickJS's stack limit, which must stay where the run set it.
 */
import { str, type Bindings, type Bridge } from './binding.js';

/** The host primitives of this capability. */
export const MODULES_PRIMITIVES = ['moduleOpen', 'moduleClose'] as const;

/**
 * The prelude part (see ../prelude.ts for the names in scope): require(), and the run's table of
 * modules required so far, emptied by start(). `callModule(fn, module)` is the frame's: it passes
 * the API to the module's wrapper as start() does to the script's.
 */
export const MODULES_PRELUDE = `
  let modulesLoaded = null;
  function require(name) {
    if (typeof name !== 'string') throw new TypeError_('require(): the module name must be a string');
    if (modulesLoaded === null) modulesLoaded = new Map();
    const done = modulesLoaded.get(name);
    if (done !== undefined) return done.exports;
    let fn;
    try {
      fn = h_moduleOpen(name);
    } catch (e) {
      // A refusal is made outside any script frame: it gets the stack of this call.
      throw atSite(e, new Error_());
    }
    const module = { exports: {} };
    try {
      callModule(fn, module);
    } finally {
      h_moduleClose(name);
    }
    modulesLoaded.set(name, module);
    return module.exports;
  }`;

/** The host side of require(). */
export function modulesBindings(vm: Bridge): Bindings<(typeof MODULES_PRIMITIVES)[number]> {
  const ctx = vm.context;
  return {
    moduleOpen: (run, [name]) => {
      const n = str(ctx, name);
      const script = run.host.openModule(n);
      const fn = vm.compiledIn(script);
      if (fn === undefined) {
        run.host.closeModule(n);
        throw new Error(`module '${n}' is not compiled in this sandbox (${script.path})`);
      }
      return fn.dup();
    },
    moduleClose: (run, [name]) => {
      run.host.closeModule(str(ctx, name));
      return undefined;
    },
  };
}
