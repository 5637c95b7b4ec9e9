/**
 * The watchdog kills a process whose event loop has been stuck longer than a limit. The
 * engines' CPU limits stop a script from their instruction hooks, but no hook runs inside one
 * long library call (a Lua pattern that backtracks for hours, a catastrophic regular
 * expression): only another thread or process can notice that, and only a kill ends it.
 *
 * Under the process manager the primary is the watchdog (worker-watchdog.ts): each worker
 * sends a heartbeat over the IPC channel and writes the script it runs to a scoreboard file the
 * primary opened for it (engines/running.ts); the primary kills a worker whose heartbeats stop,
 * naming that script, and replaces it as after any crash. A worker thread did this before, in
 * each worker: a V8 isolate of its own, ~9 MiB of every worker's RSS (issue 22).
 *
 * In one process (`--workers 0`) there is no primary: a thread watches ({@link startWatchdog}).
 * The main thread bumps a counter in a SharedArrayBuffer from a timer, and the engines store the
 * id of the script they are about to run; the thread, which learns each id's path by message
 * when the id is first used, reads both with Atomics.
 */
import { Worker } from 'node:worker_threads';
import { publishRunning, publishToBoard, SCRIPT_SLOT, type ScriptName } from '../engines/running.js';
import type { Logger } from '../log.js';
import { checkEveryMs } from './worker-watchdog.js';
import { reportBeat } from './worker.js';

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
  const checkMs = checkEveryMs(limitMs);
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

/** How often a watched loop beats: twice per look. */
function beatEveryMs(limitMs: number): number {
  return Math.max(5, Math.floor(checkEveryMs(limitMs) / 2));
}

/**
 * A managed worker's side of the primary's watchdog: a heartbeat to the primary from a timer
 * (it stops when the loop is stuck) and the running script on the scoreboard `boardFd`. The
 * first beat goes at once, so the primary starts its clock only once the worker is this far.
 * Returns a function that stops both (at the end of a graceful exit).
 */
export function startHeartbeat(limitMs: number, boardFd: number): () => void {
  publishToBoard(boardFd);
  reportBeat();
  const beat = setInterval(reportBeat, beatEveryMs(limitMs));
  beat.unref();
  return () => {
    clearInterval(beat);
    publishToBoard(null);
  };
}
