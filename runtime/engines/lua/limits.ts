/**
 * CPU and memory limits for Lua runs. fengari has neither an allocator hook nor a way to
 * interrupt the VM from outside, so both limits are checked from inside: a count hook every
 * {@link HOOK_COUNT} VM instructions, plus {@link reserve} before the library calls and the
 * `..` operator that can build a big string in a single instruction, and {@link spend} for
 * work done in JS where the hook never runs (lua/guards.ts installs the checks in fengari).
 *
 * Memory is the worker's heap growth (V8 heap plus array buffers, where fengari keeps string
 * bytes) since the run's first sample. That is approximate: garbage counts until V8 collects it
 * (so before failing a run the guard measures exactly and forces a full GC), and a concurrent
 * run that grows its heap while this one waits between slices is counted here too.
 */
import v8 from 'node:v8';
import { forceGc } from '../gc.js';
import { lua, to_luastring, type LuaDebug, type LuaHook, type LuaState } from 'fengari';
import { raiseFatal, running, stackOf, text, type LuaRun } from './core.js';

/**
 * VM instructions between two hook calls. fengari runs some tens of millions of instructions a
 * second, so this is tens of microseconds of script time; a check (clock and heap sample) costs
 * about 1 us.
 */
export const HOOK_COUNT = 1000;

/**
 * Strings and buffers from this size on are charged to the run's memory budget (smaller ones are
 * left to the hook's heap samples: checking every small result would cost the hot path).
 */
export const BIG_STRING = 64 * 1024;

/**
 * Units of work done in JS outside the count hook (sort comparisons, pattern-matching steps,
 * element moves) between two CPU clock reads: a few hundred microseconds of work at most, and a
 * clock read (~30 ns) per 4096 units costs nothing measurable.
 */
const WORK_CHECK = 4096;
let workLeft = WORK_CHECK;

/**
 * The worker's heap in use, cheaply (about 1 us): JS heap plus V8's external memory count,
 * where fengari's string bytes are. That count lags: it can keep freed array buffers for a
 * while, so an apparent overrun is confirmed with {@link exactHeap}.
 */
export function heapUsed(): number {
  const h = v8.getHeapStatistics();
  return h.used_heap_size + h.external_memory;
}

/** The worker's heap in use, up to date (about 10 us): JS heap plus live array buffers. */
function exactHeap(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/**
 * Samples the heap for `run`; returns the limit message when the run is over its budget.
 * The first sample sets the baselines (less what was charged before it, which is the run's).
 */
export function sampleMemory(run: LuaRun, extra = 0): string | null {
  const used = heapUsed();
  if (run.heapBase < 0) {
    run.heapBase = used - run.charged;
    run.exactBase = exactHeap() - run.charged;
  } else if (used < run.heapBase) {
    // The baseline held garbage collected since: it would give the run that much extra room.
    run.heapBase = used;
  }
  run.charged = 0;
  run.heapLast = used;
  if (used - run.heapBase + extra <= run.host.limits.memoryBytes) return null;
  return confirmOverrun(run, extra);
}

/**
 * The cheap sample says over: measure exactly, then after a full GC, before failing the run.
 * `extra`: bytes about to be allocated, counted as if they were.
 */
function confirmOverrun(run: LuaRun, extra: number): string | null {
  const limit = run.host.limits.memoryBytes;
  let exact = exactHeap();
  if (exact < run.exactBase) run.exactBase = exact;
  // A forced GC just found the run under its budget: tolerate a quarter of it more before the
  // next one, or a run that keeps close to its budget would pay a full GC (tens of ms) every
  // hook call. So a run can overshoot by that quarter before it is stopped.
  const tolerated = run.exactAfterGc >= 0 && exact - run.exactAfterGc < limit / 4;
  if (exact - run.exactBase + extra > limit && !tolerated && forceGc()) {
    exact = exactHeap();
    run.exactAfterGc = exact;
    if (exact < run.exactBase) run.exactBase = exact;
  }
  const grown = exact - run.exactBase;
  if (grown + extra > limit && !tolerated) {
    return extra > 0 ? `memory over ${limit} bytes (${extra} more bytes asked for)` : `memory over ${limit} bytes`;
  }
  // Align the cheap sample on the exact growth, so its stale external count stops counting.
  run.heapLast = heapUsed();
  run.heapBase = run.heapLast - grown;
  return null;
}

/** Stops the run for a limit: records it on the host (first one wins) and raises in Lua. */
export function failLimit(L: LuaState, run: LuaRun, message: string, line: number | null = null): never {
  const fatal = run.host.abort('limit', message, line);
  lua.lua_pushstring(L, fatal.message);
  return raiseFatal(L);
}

/**
 * Checks that `bytes` more fit in the run's memory budget BEFORE they are allocated (a result
 * whose size is known up front: a rep, a join, a concatenation, a buffer's next size) and
 * charges them; fails the run otherwise. Checking after building let single calls reach
 * 1.2-5.6 GB (issue 16, item 7). An apparent overrun is confirmed by a fresh (and, if need be,
 * exact, after-GC) sample that counts the bytes as allocated.
 */
export function reserve(L: LuaState, run: LuaRun, bytes: number): void {
  const limit = run.host.limits.memoryBytes;
  if (bytes > limit) failLimit(L, run, `memory over ${limit} bytes (one result of ${bytes} bytes)`);
  const grown = run.heapBase < 0 ? run.charged : run.heapLast - run.heapBase + run.charged;
  if (grown + bytes > limit) {
    const over = sampleMemory(run, bytes);
    if (over !== null) failLimit(L, run, over);
  }
  run.charged += bytes;
}

/**
 * Stops the run when it has a fatal error or its CPU time is over (`ar`: for the line); past
 * slowRequestMs, has the slow log write where the script is (one comparison until then).
 */
function checkCpu(L: LuaState, run: LuaRun, ar: LuaDebug | null): void {
  const host = run.host;
  if (host.fatal) {
    lua.lua_pushstring(L, host.fatal.message);
    raiseFatal(L);
  }
  const now = performance.now();
  if (run.cpu + now - run.sliceStart > host.limits.cpuMs) {
    failLimit(L, run, `CPU time over ${host.limits.cpuMs} ms`, ar ? lineOf(L, run, ar) : null);
  }
  if (now >= host.slowAt) host.slowWhileRunning(now, stackOf(run, L, 0));
}

/**
 * Counts `units` of work done in JS, where the count hook never runs (a sort without a Lua
 * comparator, pattern matching, a JS function called in a loop by a library function), and
 * checks the CPU limit every {@link WORK_CHECK} units: such a loop stops like Lua code does.
 */
export function spend(L: LuaState, units: number): void {
  workLeft -= units;
  if (workLeft > 0) return;
  workLeft = WORK_CHECK;
  const run = running.current;
  if (run !== null) checkCpu(L, run, null);
}

/**
 * Charges `bytes` about to be (or just) allocated by one call; checks the budget with a fresh
 * sample when the charges since the last one could have overrun it.
 */
export function charge(L: LuaState, run: LuaRun, bytes: number): void {
  const limit = run.host.limits.memoryBytes;
  if (bytes > limit) failLimit(L, run, `memory over ${limit} bytes (one string of ${bytes} bytes)`);
  run.charged += bytes;
  const grown = run.heapBase < 0 ? run.charged : run.heapLast - run.heapBase + run.charged;
  if (grown <= limit) return;
  const over = sampleMemory(run);
  if (over !== null) failLimit(L, run, over);
}

const lineInfo = to_luastring('Sl', true);

/** The current line when the running function is the script's own chunk, else null. */
function lineOf(L: LuaState, run: LuaRun, ar: LuaDebug): number | null {
  if (!lua.lua_getinfo(L, lineInfo, ar) || ar.source === null || ar.currentline <= 0) return null;
  return text(ar.source) === '@' + run.path ? ar.currentline : null;
}

/**
 * The count hook: stops the run when the host recorded a fatal error (wall time, abort, a limit
 * a pcall tried to swallow), when its CPU time is over, or when its heap growth is.
 */
export const limitHook: LuaHook = (L, ar) => {
  const run = running.current;
  if (run === null) return;
  checkCpu(L, run, ar);
  const over = sampleMemory(run);
  if (over !== null) failLimit(L, run, over, lineOf(L, run, ar));
};
