/**
 * The pass() binding, over host/pass.ts: forwards the request to a FastCGI backend. It is kept
 * apart because it is the only call that reaches another server. Its options table has more to
 * check than any other argument, and its response comes back as a table (script-response.ts)
 * unless `emit = true` relays it to the client.
 */
import { lauxlib, lua, type LuaJsFunction, type LuaState } from 'fengari';
import { raise, runOf, text } from '../core.js';
import { checkCanWait, hostWait } from '../control.js';
import type { PassOptions, ScriptResponse } from '../../host.js';
import { pushResponseTable } from './script-response.js';

const {
  LUA_TBOOLEAN,
  LUA_TNIL,
  LUA_TNUMBER,
  LUA_TSTRING,
  lua_pop,
  lua_pushnil,
  lua_pushvalue,
  lua_tolstring,
  lua_type,
} = lua;

const pushResponseResult = (L: LuaState, value: unknown): number => {
  pushResponseTable(L, value as ScriptResponse, null);
  return 1;
};

/** The options table of pass() at `idx`: params (false removes one), body, emit. */
function passOptions(L: LuaState, idx: number): { options: PassOptions; emit: boolean } {
  const t = lua_type(L, idx);
  if (t <= LUA_TNIL) return { options: {}, emit: false };
  if (t !== lua.LUA_TTABLE) return raise(L, 'pass(backend[, options]): options must be a table');
  let params: Record<string, string | null> | undefined;
  if (lua.lua_getfield(L, idx, 'params') === lua.LUA_TTABLE) {
    params = {};
    lua_pushnil(L);
    while (lua.lua_next(L, -2) !== 0) {
      if (lua_type(L, -2) !== LUA_TSTRING) raise(L, 'pass(): params must map names to strings or false');
      const name = text(lua_tolstring(L, -2)!);
      const vt = lua_type(L, -1);
      if (vt === LUA_TBOOLEAN && !lua.lua_toboolean(L, -1)) params[name] = null;
      else if (vt === LUA_TSTRING || vt === LUA_TNUMBER) {
        lua_pushvalue(L, -1);
        params[name] = text(lua_tolstring(L, -1)!);
        lua_pop(L, 1);
      } else raise(L, 'pass(): params must map names to strings or false');
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  let body: Buffer | undefined;
  const bt = lua.lua_getfield(L, idx, 'body');
  if (bt === LUA_TSTRING) body = Buffer.from(lua_tolstring(L, -1)!);
  else if (bt !== LUA_TNIL) raise(L, 'pass(): body must be a string');
  lua_pop(L, 1);
  lua.lua_getfield(L, idx, 'emit');
  const emit = lua.lua_toboolean(L, -1);
  lua_pop(L, 1);
  return { options: { ...(params ? { params } : {}), ...(body ? { body } : {}) }, emit };
}

/**
 * pass(backend[, options]): the backend's response as a table; with `emit = true` the response
 * goes to the client as it arrives and the run ends.
 */
export const pass: LuaJsFunction = (L) => {
  const name = text(lauxlib.luaL_checklstring(L, 1));
  const { options, emit: direct } = passOptions(L, 2);
  const run = runOf(L);
  // Ends the run at once (the host throws its exit): the relay waits for the backend, not the script.
  if (direct) return run.host.passThrough(name, options);
  checkCanWait(L, 'pass()');
  return hostWait(L, run, run.host.pass(name, options), pushResponseResult);
};
