/**
 * response.cookie(name, value[, options]), over host/cookies.ts, which checks the arguments and
 * writes the Set-Cookie line; this file only turns the Lua arguments into JS values. Its own
 * file, as its host side is one: request.cookies is a field of request.ts's table.
 */
import { lua, type LuaJsFunction, type LuaState } from 'fengari';
import { runOf, text } from '../core.js';

const {
  LUA_TBOOLEAN,
  LUA_TNIL,
  LUA_TNUMBER,
  LUA_TSTRING,
  LUA_TTABLE,
  lua_next,
  lua_pop,
  lua_pushnil,
  lua_pushvalue,
  lua_toboolean,
  lua_tolstring,
  lua_tonumberx,
  lua_type,
} = lua;

/** Anything that is no boolean, number or string: every option check refuses it. */
const OTHER = Object.freeze({});

/** The Lua value at `idx` as the host's checks take it (a string as text, or as bytes). */
function value(L: LuaState, idx: number, bytes: boolean): unknown {
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return undefined;
    case LUA_TBOOLEAN:
      return lua_toboolean(L, idx);
    case LUA_TNUMBER:
      return lua_tonumberx(L, idx);
    case LUA_TSTRING:
      return bytes ? lua_tolstring(L, idx)! : text(lua_tolstring(L, idx)!);
    default:
      return OTHER;
  }
}

/** The options table at `idx` as a JS object (a key that is not a string by its tostring). */
function options(L: LuaState, idx: number): unknown {
  if (lua_type(L, idx) !== LUA_TTABLE) return value(L, idx, false);
  const out: Record<string, unknown> = {};
  lua_pushnil(L);
  while (lua_next(L, idx) !== 0) {
    // Copy the key before converting it: lua_tolstring on a number key would break lua_next.
    lua_pushvalue(L, -2);
    const kt = lua_type(L, -1);
    const key = text(kt === LUA_TSTRING || kt === LUA_TNUMBER ? lua_tolstring(L, -1)! : lua.lua_typename(L, kt));
    lua_pop(L, 1);
    out[key] = value(L, -1, false);
    lua_pop(L, 1);
  }
  return out;
}

/** response.cookie(name, value[, options]): one Set-Cookie line (a number value becomes its text). */
export const cookie: LuaJsFunction = (L) => {
  const t = lua_type(L, 2);
  // A number is converted by lua_tolstring in place, as Lua's own string functions do.
  const v = t === LUA_TNUMBER ? lua_tolstring(L, 2)! : value(L, 2, true);
  runOf(L).host.cookie(value(L, 1, false), v, options(L, 3));
  return 0;
};
