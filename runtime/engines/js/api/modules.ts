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
  let modulesLoaded = null, moduleDepth = 0;
  function require(name) {
    if (typeof name !== 'string') throw new TypeError_('require(): the module name must be a string');
    if (modulesLoaded === null) modulesLoaded = new Map();
    const done = modulesLoaded.get(name);
    if (done !== undefined) return done.exports;
    let fn;
    try {
      fn = h_moduleOpen(name, moduleDepth);
    } catch (e) {
      // A refusal is made outside any script frame: it gets the stack of this call.
      throw atSite(e, new Error_());
    }
    const module = { exports: {} };
    moduleDepth++;
    try {
      callModule(fn, module);
    } finally {
      moduleDepth--;
    }
    modulesLoaded.set(name, module);
    return module.exports;
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
