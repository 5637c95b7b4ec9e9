/**
 * The watchdog: a thread that kills its own process when the event loop has been stuck longer
 * than a limit. The engines' CPU limits stop a script from their instruction hooks, but no hook
 * runs inside one long library call (a Lua pattern that backtracks for hours, a catastrophic
 * regular expression): only another thread can notice that, and only a kill ends it. The
 * process manager then replaces the worker, as after any crash.
 *
 * The main thread bumps a counter in a SharedArrayBuffer from a timer and stores the id of the
 * script it is about to run; the thread, which learns each id's path by message when the id is
 * first used, reads both with Atomics. So the hot path pays one Map lookup and one store per
 * script slice, and nothing at all when the watchdog is off.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from './log.js';

/** Slots of the shared Int32Array. */
export const BEAT = 0;
export const SCRIPT = 1;

/** What the watchdog thread gets as workerData. */
export interface WatchdogData {
  readonly shared: SharedArrayBuffer;
  readonly limitMs: number;
  readonly checkMs: number;
  /** The error log file the thread appends its one line to (opened then, so rotation is no matter); null: stderr. */
  readonly logFile: string | null;
  readonly pid: number;
}

/** A message to the thread: the path of a script id. */
export interface ScriptName {
  readonly id: number;
  readonly file: string;
}

let slots: Int32Array | null = null;
let thread: Worker | null = null;
const ids = new Map<string, number>();

/**
 * Marks `file` as the script the event loop is running now (its path goes into the watchdog's
 * log line if the loop gets stuck). Called by the engines at the start of each run slice.
 */
export function markRunning(file: string): void {
  if (slots === null) return;
  let id = ids.get(file);
  if (id === undefined) {
    id = ids.size + 1;
    ids.set(file, id);
    const msg: ScriptName = { id, file };
    thread?.postMessage(msg);
  }
  Atomics.store(slots, SCRIPT, id);
}

/** Marks the end of a script slice: a stuck loop now would not be a script's fault. */
export function markIdle(): void {
  if (slots !== null) Atomics.store(slots, SCRIPT, 0);
}

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
  const worker = new Worker(new URL('./watchdog-thread.js', import.meta.url), { workerData: data, stdout: false, stderr: false });
  worker.unref();
  worker.on('error', (err) => log.error('LS_WATCHDOG', `watchdog thread failed: ${err.message}`));
  const beat = setInterval(() => Atomics.add(beats, BEAT, 1), Math.max(5, Math.floor(checkMs / 2)));
  beat.unref();
  slots = beats;
  thread = worker;
  for (const [file, id] of ids) worker.postMessage({ id, file } satisfies ScriptName);
  return () => {
    clearInterval(beat);
    slots = null;
    thread = null;
    void worker.terminate();
  };
}
