/**
 * Which script the event loop is running now, published for the watchdog thread
 * (process/watchdog.ts): the engines mark each run slice's start and end; the watchdog, when
 * started, gives the shared slot to store into. The engines import this, never the watchdog, so
 * the scripting layer does not depend on the process layer above it.
 *
 * The hot path pays one Map lookup and one Atomics store per slice, and nothing at all when no
 * watchdog runs.
 */

/** The Int32Array slot that holds the running script's id (0: none). */
export const SCRIPT_SLOT = 1;

/** A message to the watchdog thread: the path of a script id. */
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
