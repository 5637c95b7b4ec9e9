/**
 * A run's stack as the slow log shows it (slow-log.ts): read with lua_getstack/lua_getinfo into
 * a lua_Debug in wasm memory. Once per slow run, never on the hot path.
 */
import { MAX_FRAMES, type Frame } from '../slow-log.js';
import type { LuaApi } from './capi.js';
import type { Ptr } from './wasm.js';

// lua_Debug on wasm32 (Lua 5.4): event, name, namewhat, what, source, srclen, currentline,
// linedefined, lastlinedefined, nups, nparams, isvararg, istailcall, ftransfer, ntransfer,
// short_src[60], i_ci.
const NAME = 4;
const SOURCE = 16;
const CURRENTLINE = 24;
const SHORT_SRC = 44;
export const LUA_DEBUG_BYTES = 128;

function cstring(heap: Buffer, p: Ptr): string | null {
  if (p === 0) return null;
  return heap.toString('utf8', p, heap.indexOf(0, p));
}

/**
 * The script's frames on thread `L` from stack level `from` (0: the running function),
 * innermost first, then those of `main` when `L` is a coroutine of the run: at most
 * MAX_FRAMES + 1, so the slow log knows when there were more.
 */
export function stackOf(api: LuaApi, ar: Ptr, path: string, L: Ptr, from: number, main: Ptr): Frame[] {
  const frames: Frame[] = [];
  framesOf(api, ar, path, L, from, frames);
  if (main !== 0 && L !== main) framesOf(api, ar, path, main, 0, frames);
  return frames;
}

function framesOf(api: LuaApi, ar: Ptr, path: string, L: Ptr, from: number, frames: Frame[]): void {
  const x = api.x;
  const chunk = '@' + path;
  for (let level = from; frames.length <= MAX_FRAMES && x.lua_getstack(L, level, ar) !== 0; level++) {
    if (x.lua_getinfo(L, api.name('Sln'), ar) === 0) continue;
    const heap = api.module.heap;
    // The script's chunk is '@' + its path; a C function's is '=[C]'; a load()ed string keeps
    // its text, which short_src shortens to [string "..."].
    const source = cstring(heap, heap.readUInt32LE(ar + SOURCE));
    const line = heap.readInt32LE(ar + CURRENTLINE);
    const file = source === chunk ? path : (cstring(heap, ar + SHORT_SRC) ?? '?');
    frames.push({ name: cstring(heap, heap.readUInt32LE(ar + NAME)), file, line: line > 0 ? line : null });
  }
}

/**
 * Where stock Lua would have placed an error that a library function raised under one of the
 * sandbox's wrappers (sandbox-lua.ts, LIBRARY_WRAPPERS_LUA): that chunk is loaded stripped, so
 * its frames read as source '=?' with no line, and luaL_where gave the message no position. The
 * place is the first frame with a line above them, as `short_src:line: `; null when no wrapper
 * frame lies between the error and that frame (an error the script raised without a position
 * keeps none). Read on thread `L` after its error, whose stack Lua leaves as it was.
 */
export function wrapperCallerPlace(api: LuaApi, ar: Ptr, L: Ptr): string | null {
  const x = api.x;
  let wrapped = false;
  for (let level = 0; level < 8 && x.lua_getstack(L, level, ar) !== 0; level++) {
    if (x.lua_getinfo(L, api.name('Sl'), ar) === 0) return null;
    const heap = api.module.heap;
    const source = cstring(heap, heap.readUInt32LE(ar + SOURCE));
    const line = heap.readInt32LE(ar + CURRENTLINE);
    if (source === '=?') wrapped = true;
    else if (line > 0) return wrapped ? `${cstring(heap, ar + SHORT_SRC) ?? '?'}:${line}: ` : null;
  }
  return null;
}
