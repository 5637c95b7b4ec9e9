/**
 * Output bindings: print, write, flush, log, and sleep (the one wait that belongs to no other
 * capability). Arguments are converted as tostring() would; the bytes are copied out of wasm
 * memory once, into the Buffer the response keeps.
 */
import { utf8Boundary } from '../../host.js';
import { LUA_TBOOLEAN, LUA_TNIL, LUA_TNUMBER, LUA_TSTRING } from '../capi.js';
import type { Bindings } from '../run.js';
import type { Ptr } from '../wasm.js';

const TAB = 9;
const NEWLINE = 10;
const TRUE = Buffer.from('true');
const FALSE = Buffer.from('false');
const NIL = Buffer.from('nil');

/** The host functions of this capability, by their names in the sandbox. */
export function bindOutput(b: Bindings): Record<string, (L: Ptr) => number> {
  const { api } = b;
  const x = api.x;

  /** Argument `i` as a byte string, as tostring() would make it. */
  function strings1(L: Ptr, i: number): Buffer {
    const t = x.lua_type(L, i);
    if (t === LUA_TSTRING || t === LUA_TNUMBER) return api.bytes(L, i)!;
    if (t === LUA_TNIL) return NIL;
    if (t === LUA_TBOOLEAN) return x.lua_toboolean(L, i) ? TRUE : FALSE;
    x.luaL_tolstring(L, i, api.scratch);
    const out = api.bytes(L, -1)!;
    x.lua_settop(L, -2);
    return out;
  }

  /** Arguments 1..n as byte strings, as tostring() would make them. */
  function strings(L: Ptr): Buffer[] {
    const n = x.lua_gettop(L);
    const out: Buffer[] = [];
    for (let i = 1; i <= n; i++) out.push(strings1(L, i));
    return out;
  }

  /** Joins parts with an optional separator byte and final byte (-1: none). */
  function join(parts: Buffer[], sep: number, end: number): Buffer {
    let size = end >= 0 ? 1 : 0;
    for (const p of parts) size += p.length;
    if (sep >= 0 && parts.length > 1) size += parts.length - 1;
    const out = Buffer.allocUnsafe(size);
    let at = 0;
    for (let i = 0; i < parts.length; i++) {
      if (i > 0 && sep >= 0) out[at++] = sep;
      at += parts[i]!.copy(out, at);
    }
    if (end >= 0) out[at] = end;
    return out;
  }

  return {
    print(L) {
      const run = b.run(L);
      // The common print("one string"): one copy, straight from wasm memory, newline included.
      if (x.lua_gettop(L) === 1 && x.lua_type(L, 1) === LUA_TSTRING) {
        const v = api.view(L, 1)!;
        const out = Buffer.allocUnsafe(v.len + 1);
        api.module.heap.copy(out, 0, v.ptr, v.ptr + v.len);
        out[v.len] = NEWLINE;
        run.host.write(out);
        return 0;
      }
      run.host.write(join(strings(L), TAB, NEWLINE));
      return 0;
    },
    write(L) {
      const run = b.run(L);
      if (x.lua_gettop(L) === 1 && x.lua_type(L, 1) === LUA_TSTRING) run.host.write(api.bytes(L, 1)!);
      else run.host.write(join(strings(L), -1, -1));
      return 0;
    },
    flush(L) {
      b.run(L).host.flush();
      return 0;
    },
    log(L) {
      const host = b.run(L).host;
      const room = host.logRoom;
      const n = x.lua_gettop(L);
      // Sizes first, from the strings in place: log() of a 20 MiB string copies at most the
      // log room out of wasm memory, not the string (the host adds the marker and the budget).
      let size = n > 1 ? n - 1 : 0;
      for (let i = 1; i <= n; i++) {
        const t = x.lua_type(L, i);
        if (t === LUA_TSTRING || t === LUA_TNUMBER) size += api.view(L, i)!.len;
        else size += strings1(L, i).length;
      }
      if (size <= room) {
        host.log(join(strings(L), TAB, -1).toString('utf8'));
        return 0;
      }
      const kept: Buffer[] = [];
      let left = room;
      for (let i = 1; i <= n && left > 0; i++) {
        // Up to 3 bytes past the room: a character split at the room's edge must show its
        // continuation bytes, or the cut below cannot see it and keeps half of it.
        const t = x.lua_type(L, i);
        let part: Buffer;
        if (t === LUA_TSTRING || t === LUA_TNUMBER) {
          const v = api.view(L, i)!;
          const take = Math.min(v.len, left + 3);
          part = Buffer.allocUnsafe(take);
          api.module.heap.copy(part, 0, v.ptr, v.ptr + take);
        } else part = strings1(L, i).subarray(0, left + 3);
        kept.push(part);
        left -= part.length + 1;
      }
      const joined = join(kept, TAB, -1);
      // Cut at a character boundary, so the count of bytes cut is exact.
      const line = joined.subarray(0, utf8Boundary(joined, room));
      host.log(line.toString('utf8'), size - line.length);
      return 0;
    },
    sleep(L) {
      const ms = x.luaL_checknumber(L, 1);
      const run = b.run(L);
      return b.wait(L, run, 'sleep()', () => run.host.sleep(ms), null);
    },
  };
}
