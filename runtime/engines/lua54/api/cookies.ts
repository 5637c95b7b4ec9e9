/**
 * response.cookie(name, value[, options]), over host/cookies.ts, which checks the arguments and
 * writes the Set-Cookie line; this file only turns the Lua arguments into JS values. Its own
 * file, as its host side is one: request.cookies is a field of request.ts's table.
 */
import { LUA_TBOOLEAN, LUA_TNIL, LUA_TNUMBER, LUA_TSTRING, LUA_TTABLE } from '../capi.js';
import type { Bindings } from '../run.js';
import type { Ptr } from '../wasm.js';

/** Anything that is no boolean, number or string: every option check refuses it. */
const OTHER = Object.freeze({});
/** Lua's names of its types (lua_typename), by type number, for a key that is not a string. */
const TYPE_NAMES = ['nil', 'boolean', 'userdata', 'number', 'string', 'table', 'function', 'userdata', 'thread'];

/** The host functions of this capability, by their names in the sandbox. */
export function bindCookies(b: Bindings): Record<string, (L: Ptr) => number> {
  const { api } = b;
  const x = api.x;

  /** The Lua value at `idx` as the host's checks take it (a string as text, or as bytes). */
  const value = (L: Ptr, idx: number, bytes: boolean): unknown => {
    switch (x.lua_type(L, idx)) {
      case LUA_TNIL:
        return undefined;
      case LUA_TBOOLEAN:
        return x.lua_toboolean(L, idx) !== 0;
      case LUA_TNUMBER:
        return x.lua_tonumberx(L, idx, 0);
      case LUA_TSTRING:
        return bytes ? api.bytes(L, idx) : api.text(L, idx);
      default:
        return OTHER;
    }
  };

  /** The options table at `idx` as a JS object (a key that is not a string by its tostring). */
  const options = (L: Ptr, idx: number): unknown => {
    if (x.lua_type(L, idx) !== LUA_TTABLE) return value(L, idx, false);
    const out: Record<string, unknown> = {};
    api.solid(L, idx);
    x.lua_pushnil(L);
    while (x.lua_next(L, idx) !== 0) {
      // Copy the key before converting it: lua_tolstring on a number key would break lua_next.
      x.lua_pushvalue(L, -2);
      const kt = x.lua_type(L, -1);
      const key = kt === LUA_TSTRING || kt === LUA_TNUMBER ? api.text(L, -1)! : (TYPE_NAMES[kt] ?? 'userdata');
      api.pop(L, 1);
      out[key] = value(L, -1, false);
      api.pop(L, 1);
    }
    return out;
  };

  return {
    /** response.cookie(name, value[, options]): one Set-Cookie line (a number value becomes its text). */
    response_cookie(L) {
      const v = x.lua_type(L, 2) === LUA_TNUMBER ? api.bytes(L, 2) : value(L, 2, true);
      b.run(L).host.cookie(value(L, 1, false), v, options(L, 3));
      return 0;
    },
  };
}
