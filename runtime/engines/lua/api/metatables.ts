/**
 * Shared metatables for the Lua bindings: one metatable per lua_State, and a new empty table over it
 * for each request. It has its own module because request.ts, response.ts and lighty.ts (mod_magnet's
 * tables) all make their per-request tables this way, and none of them owns it.
 */
import { lua, type LuaJsFunction, type LuaProxy, type LuaState } from 'fengari';
import { S, jsfn, setFunction } from '../core.js';

const {
  lua_createtable,
  lua_pop,
  lua_pushboolean,
  lua_setfield,
  lua_setmetatable,
  lua_toproxy,
} = lua;

/** Pushes a metatable with the given metamethods and a hidden (__metatable) marker; returns its proxy. */
export function makeMetatable(L: LuaState, index: LuaJsFunction | null, newindex: LuaJsFunction | null): LuaProxy {
  lua_createtable(L, 0, 3);
  if (index) setFunction(L, S.__index, jsfn(index));
  if (newindex) setFunction(L, S.__newindex, jsfn(newindex));
  // Scripts see `false` from getmetatable() and cannot setmetatable(): the table is shared.
  lua_pushboolean(L, false);
  lua_setfield(L, -2, S.__metatable);
  const proxy = lua_toproxy(L, -1);
  lua_pop(L, 1);
  return proxy;
}

/** Pushes a new empty table over a shared metatable. */
export function pushProxyTable(L: LuaState, meta: LuaProxy): void {
  lua_createtable(L, 0, 0);
  meta(L);
  lua_setmetatable(L, -2);
}
