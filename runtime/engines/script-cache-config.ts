/**
 * The config's `[scriptCache]` and the script size bound, apart from the store (script-store.ts)
 * so that the process manager's primary, which validates the config but runs no script, loads
 * none of the store (nor lru-cache), as fetch-config.ts and files-config.ts keep theirs.
 */
import { positive, section } from '../config-schema.js';

/**
 * Largest script read by default. A hand-written edge script is a few KiB; issue 16 measured a
 * 400 MB `.lua` taking 3.3 s and 1.46 GB to compile (about 3.7 bytes of memory per source byte,
 * `.js` worse), so 4 MiB keeps one compile near 15 MiB while leaving room for generated tables.
 */
export const DEFAULT_MAX_SCRIPT_BYTES = 4 * 1024 * 1024;

/** The config's `[scriptCache]`: the bounds of the store. */
export const scriptCacheSection = section({
  maxEntries: positive(1000, 'compiled scripts kept (LRU)'),
  maxBytes: positive(64 * 1024 * 1024, 'estimated memory of compiled scripts kept'),
  maxScriptBytes: positive(
    DEFAULT_MAX_SCRIPT_BYTES,
    'largest script file read: a bigger one is refused before it is read (500, `LS_SCRIPT_TOO_LARGE` with its path and size); `lodestone check` reports it too',
  ),
});

/** The operator's words for a script over the size bound (the server's log and `lodestone check`). */
export function tooLargeMessage(size: number, max: number): string {
  return `script is ${size} bytes, over scriptCache.maxScriptBytes (${max})`;
}
