/**
 * The watchdog: a thread that kills its own process when the event loop has been stuck longer
 * than a limit. The engines' CPU limits stop a script from their instruction hooks, but no hook
 * runs inside one long library call (a Lua pattern that backtracks for hours, a catastrophic
 * regular expression): only another thread can notice that, and only a kill ends it. The
 * process manager then replaces the worker, as after any crash.
 *
 * The main thread bumps a counter in a SharedArrayBuffer from a timer, and the engines store the
 * id of the script they are about to run (engines/running.ts); the thread, which learns each
 * id's path by message when the id is first used, reads both with Atomics.
 */
import { Worker } from 'node:worker_threads';
import { publishRunning, SCRIPT_SLOT, type ScriptName } from '../engines/running.js';
import type { Logger } from '../log.js';

/** Slots of the shared Int32Array: the loop's heartbeat, and the running script's id. */
export const BEAT = 0;
export const SCRIPT = SCRIPT_SLOT;
export type { ScriptName };

/** What the watchdog thread gets as workerData. */
export interface WatchdogData {
  readonly shared: SharedArrayBuffer;
  readonly limitMs: number;
  readonly checkMs: number;
  /** The error log file the thread appends its one line to (opened then, so rotation is no matter); null: stderr. */
  readonly logFile: string | null;
  readonly pid: number;
}

/** The thread's own V8 heap: it allocates almost nothing (see WATCHDOG_LIMITS' use). */
const WATCHDOG_LIMITS = { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 16 };

/**
 * Starts the watchdog for this process: if the event loop does not turn for `limitMs`, the
 * thread writes one `LS_WATCHDOG` line (with the running script's path) to the error log and kills the
 * process with SIGKILL. Returns a function that stops it (before a graceful exit).
 */
export function startWatchdog(limitMs: number, log: Logger, logFile: string | null = null): () => void {
  const shared = new SharedArrayBuffer(8);
  const beats = new Int32Array(shared);
  // Sampling at a quarter of the limit bounds the detection delay to 1.25 x the limit.
  const checkMs = Math.max(10, Math.min(1000, Math.floor(limitMs / 4)));
  const data: WatchdogData = { shared, limitMs, checkMs, logFile, pid: process.pid };
  const worker = new Worker(new URL('./watchdog-thread.js', import.meta.url), {
    workerData: data,
    stdout: false,
    stderr: false,
    resourceLimits: WATCHDOG_LIMITS,
  });
  worker.unref();
  worker.on('error', (err) => log.error('LS_WATCHDOG', `watchdog thread failed: ${err.message}`));
  const beat = setInterval(() => Atomics.add(beats, BEAT, 1), Math.max(5, Math.floor(checkMs / 2)));
  beat.unref();
  publishRunning({ slots: beats, post: (msg) => worker.postMessage(msg) });
  return () => {
    clearInterval(beat);
    publishRunning(null);
    void worker.terminate();
  };
}
