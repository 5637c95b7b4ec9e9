/**
 * The interrupt handler: QuickJS polls it while code runs, and it stops the run that passed its
 * CPU or wall-time limit (naming the script's line), code that escaped a wrapper at compile
 * time, and captures the script's stack once for the slow log. Apart from the Vm's slices
 * (vm.ts) because it is the one part that runs inside QuickJS's own call, in the middle of
 * script code, and must never throw.
 */
import type { QuickJSContext } from 'quickjs-emscripten-core';
import type { Frame } from '../slow-log.js';
import { isModuleFault } from './module.js';
import { framesFrom, type PreludeFns } from './prelude-calls.js';
import type { Run } from './run.js';

/** Compile-mode evaluation allowed before the interrupt handler stops it (escaped code). */
const COMPILE_BUDGET_MS = 50;

/** The Vm as the interrupt handler uses it (vm.ts implements it). */
export interface LimitedVm {
  readonly context: QuickJSContext;
  readonly fns: PreludeFns;
  /** The run whose slice is executing, or null. */
  readonly current: Run | null;
  readonly compiling: boolean;
  readonly compileStart: number;
  /** Set while the slow log's where() runs inside the interrupt handler: its own polls pass. */
  capturing: boolean;
  suspect: boolean;
}

/** QuickJS's interrupt handler for `vm`: true stops the code running. */
export function shouldInterrupt(vm: LimitedVm): boolean {
  const run = vm.current;
  // Code that escaped a wrapper at compile time is stopped, but only once it has run for a
  // while: QuickJS's interrupt check fires every so many operations, and answering it at
  // once killed about 1 in 10,000 legitimate compiles (the wrapper expression evaluating).
  if (!run) return vm.compiling && performance.now() - vm.compileStart > COMPILE_BUDGET_MS;
  if (vm.capturing) return false;
  const host = run.host;
  if (host.fatal) return true;
  const now = performance.now();
  if (run.cpuMs + (now - run.sliceStart) > host.limits.cpuMs) {
    host.abort('limit', `CPU time over ${host.limits.cpuMs} ms`, lineHere(vm, run));
    run.interrupted = true;
    return true;
  }
  // The wall-clock timer cannot fire while QuickJS holds the event loop: check it here too.
  if (now - run.startedAt > host.limits.wallMs) {
    host.abort('limit', `wall time over ${host.limits.wallMs} ms`, lineHere(vm, run));
    run.interrupted = true;
    return true;
  }
  // Past slowRequestMs: the slow log gets the stack of the script this handler interrupted.
  if (now >= host.slowAt) {
    host.slowWhileRunning(now, stackHere(vm, run));
    return host.fatal !== null;
  }
  return false;
}

/**
 * The script's line where the interrupt handler stops it for a limit, or null. The error the
 * handler leaves in the script knows it less often: in `for (;;) n = f(n)` it said line 4,
 * an earlier call's line or none (the function's head), depending on which poll site the
 * interrupt counter reached zero at, which any code run before shifts (a prelude change did);
 * where()'s Error, made in the same poll, said line 4 in every phase (engine-js test).
 */
function lineHere(vm: LimitedVm, run: Run): number | null {
  const line = stackHere(vm, run).find((f) => f.file === run.path && f.line !== null)?.line ?? null;
  // An async frame resumed after an await keeps the await's position until a call or a throw
  // moves it (QuickJS updates a frame's pc only there): a loop after `await null` was reported
  // at line 1. A line that says await may be that stale position: no line rather than a wrong one.
  return line !== null && run.trustsStopLine(line) ? line : null;
}

/**
 * The stack of the script executing now, from inside the interrupt handler: the prelude's
 * where() makes an Error there, whose backtrace continues into the frames the handler
 * interrupted (QuickJS lets a host callback call back into the VM, as every primitive does).
 * Once per slow run, and once when a limit stops a run. A failure (no memory, the stack limit)
 * gives no frames, never an error; a native stack overflow stops the run as in a primitive.
 */
function stackHere(vm: LimitedVm, run: Run): Frame[] {
  vm.capturing = true;
  try {
    return framesFrom(vm.context, vm.fns.where, run.path);
  } catch (err) {
    if (isModuleFault(err)) {
      vm.suspect = true;
      run.host.abort('limit', 'stack overflow');
    }
    return [];
  } finally {
    vm.capturing = false;
  }
}
