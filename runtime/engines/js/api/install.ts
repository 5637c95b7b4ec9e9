/**
 * Installs the script API in a new context: every capability's bindings, each wrapped in the
 * one guard all primitives share, handed to the prelude, which builds the API from them. The one
 * place that lists the capabilities on the host side (../prelude.ts lists them on the sandbox
 * side): a new call of a capability is its file here and nothing else (plus, for a new global,
 * its line in the prelude's API_GLOBALS); a new capability, a file and a line in each.
 */
import type { QuickJSHandle } from 'quickjs-emscripten-core';
import { isModuleFault } from '../module.js';
import { PRELUDE_FILENAME, PRELUDE_SOURCE, PRIMITIVES, type Primitive } from '../prelude.js';
import type { Bridge, PrimitiveImpl } from './binding.js';
import { cacheBindings } from './cache.js';
import { coreBindings } from './core.js';
import { fetchBindings } from './fetch.js';
import { filesBindings } from './files.js';
import { libraryBindings } from './library.js';
import { modulesBindings } from './modules.js';
import { formBindings } from './form.js';
import { outputBindings } from './output.js';
import { passBindings } from './pass.js';
import { requestBindings } from './request.js';
import { responseBindings } from './script-response.js';

/**
 * Evaluates the prelude with `vm`'s primitives; returns its object of host-facing functions
 * (`start`, `takeOut`, ...: see PRELUDE_SOURCE), for the caller to take apart and dispose.
 */
export function install(vm: Bridge): QuickJSHandle {
  const ctx = vm.context;
  const impls: Record<Primitive, PrimitiveImpl> = {
    ...requestBindings(vm),
    ...outputBindings(vm),
    ...coreBindings(vm),
    ...filesBindings(vm),
    ...cacheBindings(vm),
    ...passBindings(vm),
    ...fetchBindings(vm),
    ...responseBindings(vm),
    ...libraryBindings(vm),
    ...formBindings(vm),
    ...modulesBindings(vm),
  };
  const prim = ctx.newObject();
  try {
    for (const name of PRIMITIVES) {
      const fn = guarded(vm, name, impls[name]);
      ctx.setProp(prim, name, fn);
      fn.dispose();
    }
    const prelude = ctx.unwrapResult(ctx.evalCode(PRELUDE_SOURCE, PRELUDE_FILENAME, { type: 'global', strict: true }));
    try {
      return ctx.unwrapResult(ctx.callFunction(prelude, ctx.undefined, prim));
    } finally {
      prelude.dispose();
    }
  } finally {
    prim.dispose();
  }
}

/**
 * Wraps a primitive: it acts on the run whose slice is executing (script code runs only
 * inside its own run's slices), refuses stopped runs, and spots native stack overflows.
 */
function guarded(vm: Bridge, name: Primitive, impl: PrimitiveImpl): QuickJSHandle {
  return vm.context.newFunction(name, (...args) => {
    const run = vm.current;
    if (!run || run.finished) throw new Error('no request is running');
    if (run.host.fatal) throw run.host.fatal;
    try {
      return impl(run, args) ?? vm.context.undefined;
    } catch (err) {
      if (isModuleFault(err)) {
        vm.suspect = true;
        run.host.abort('limit', 'stack overflow');
        throw err;
      }
      // A host TypeError (a bad argument) reaches the script as a catchable error with its message.
      if (run.host.fatal || !(err instanceof Error)) throw err;
      // quickjs-emscripten throws a handle into the VM as it is (its errorToHandle).
      // eslint-disable-next-line @typescript-eslint/only-throw-error
      throw vm.vmError(err);
    }
  });
}
