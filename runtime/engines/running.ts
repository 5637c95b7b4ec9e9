/**
 * Which script the event loop is running now, published for the watchdog (process/watchdog.ts):
 * the engines mark each run slice's start and end. In one process the watchdog is a thread that
 * gives a shared slot to store into; under the manager it is the primary, which reads a
 * scoreboard file the primary opened for the worker (the last script a slice started, written
 * only when it changes). The engines import this, never the watchdog, so the scripting layer
 * does not depend on the process layer above it.
 *
 * The hot path pays one Map lookup and one Atomics store per slice with the thread, one string
 * comparison with the scoreboard (a write only when the script changes), and nothing at all when
 * no watchdog runs.
 */
import { writeSync } from 'node:fs';

/** The Int32Array slot that holds the running script's id (0: none). */
export const SCRIPT_SLOT = 1;

/** A message to the watchdog thread (one process, no manager): the path of a script id. */
export interface ScriptName {
  readonly id: number;
  readonly file: string;
}

let slots: Int32Array | null = null;
let post: ((msg: ScriptName) => void) | null = null;
const ids = new Map<string, number>();

/**
 * Marks `file` as the script the event loop is running now (its path goes into the watchdog's
 * log line if the loop gets stuck). Called by the engines at the start of each run slice.
 */
export function markRunning(file: string): void {
  if (board !== null && file !== boardLast) writeBoard(file);
  if (slots === null) return;
  let id = ids.get(file);
  if (id === undefined) {
    id = ids.size + 1;
    ids.set(file, id);
    post?.({ id, file });
  }
  Atomics.store(slots, SCRIPT_SLOT, id);
}

/** Marks the end of a script slice: a stuck loop now would not be a script's fault. */
export function markIdle(): void {
  if (slots !== null) Atomics.store(slots, SCRIPT_SLOT, 0);
}

/**
 * The watchdog's side: where to store the running script's id and how to tell the thread an
 * id's path (every id known so far is told at once); null stops publishing.
 */
export function publishRunning(target: { readonly slots: Int32Array; readonly post: (msg: ScriptName) => void } | null): void {
  slots = target?.slots ?? null;
  post = target?.post ?? null;
  if (target) for (const [file, id] of ids) target.post({ id, file });
}

let board: number | null = null;
let boardLast: string | null = null;

/**
 * Publishes the running script to a scoreboard file (`fd`, opened by the primary, which reads it
 * when this process's heartbeats stop; see process/watchdog.ts); null stops publishing.
 */
export function publishToBoard(fd: number | null): void {
  board = fd;
  boardLast = null;
}

// The path and a newline at offset 0: a shorter path leaves the end of a longer one after its
// newline, and the reader stops at the first.
function writeBoard(file: string): void {
  boardLast = file;
  try {
    const line = Buffer.from(`${file}\n`);
    writeSync(board!, line, 0, line.length, 0);
  } catch {
    board = null; // the primary's watchdog then names no script; nothing else depends on it
  }
}
