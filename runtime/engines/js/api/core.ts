/**
 * sleep(), the one script call of the run core (../../host/core.ts: waits, limits), both sides
 * of the boundary: the prelude part and its host primitive. Its own file, as its host side has
 * one, so that each capability's calls are found in the same place in both engines.
 */
import { num, type Bindings, type Bridge } from './binding.js';

/** The host primitives of this capability. */
export const CORE_PRIMITIVES = ['sleep'] as const;

/** The prelude part (see ../prelude.ts for the names in scope): sleep(), a wait the slow log can place. */
export const CORE_PRELUDE = `
  const sleep = async (ms) => {
    const site = new Error_();
    waitFrom(site);
    try {
      return await h_sleep(Number_(ms));
    } finally {
      waitDone(site);
    }
  };`;

/** The host side of sleep(). */
export function coreBindings(vm: Bridge): Bindings<(typeof CORE_PRIMITIVES)[number]> {
  const ctx = vm.context;
  return {
    sleep: (run, [ms]) => vm.hostCall(run, run.host.sleep(num(ctx, ms)), () => ctx.undefined),
  };
}
