/**
 * The fetch() binding, over host/fetch.ts: an outbound HTTP call to an allowed origin. It
 * looks synchronous, as pass() does: the run's coroutine yields until the response is in, and
 * a refusal or failure is a Lua error (`LS_FETCH_*: ...`) the script can catch with pcall.
 */
import { lauxlib, lua, type LuaJsFunction, type LuaState } from 'fengari';
import { keyAt, raise, runOf, text } from '../core.js';
import { checkCanWait, hostWait } from '../control.js';
import type { FetchOptions, ScriptResponse } from '../../host.js';
import { pushResponseTable } from './script-response.js';

const { LUA_TNIL, LUA_TNUMBER, LUA_TSTRING, LUA_TTABLE, lua_pop, lua_pushnil, lua_pushvalue, lua_tolstring, lua_type } = lua;

const OPTIONS = new Set(['method', 'headers', 'body', 'timeoutMs']);

const pushResponseResult = (L: LuaState, value: unknown): number => {
  pushResponseTable(L, value as ScriptResponse, null);
  return 1;
};

/** The options table of fetch() at `idx`: method, headers (a value with "\n" is several lines), body, timeoutMs. */
function fetchOptions(L: LuaState, idx: number): FetchOptions {
  const t = lua_type(L, idx);
  if (t <= LUA_TNIL) return {};
  if (t !== LUA_TTABLE) return raise(L, 'fetch(url[, options]): options must be a table');
  lua_pushnil(L);
  while (lua.lua_next(L, idx) !== 0) {
    const key = keyAt(L, -2);
    if (key === null || !OPTIONS.has(key)) raise(L, `fetch(): unknown option ${key === null ? '(not a string)' : JSON.stringify(key)}`);
    lua_pop(L, 1);
  }
  const options: { -readonly [K in keyof FetchOptions]: FetchOptions[K] } = {};
  const m = lua.lua_getfield(L, idx, 'method');
  if (m === LUA_TSTRING) options.method = text(lua_tolstring(L, -1)!);
  else if (m !== LUA_TNIL) raise(L, 'fetch(): method must be a string');
  lua_pop(L, 1);
  const h = lua.lua_getfield(L, idx, 'headers');
  if (h === LUA_TTABLE) options.headers = headerList(L);
  else if (h !== LUA_TNIL) raise(L, 'fetch(): headers must be a table');
  lua_pop(L, 1);
  const b = lua.lua_getfield(L, idx, 'body');
  if (b === LUA_TSTRING) options.body = Buffer.from(lua_tolstring(L, -1)!);
  else if (b !== LUA_TNIL) raise(L, 'fetch(): body must be a string');
  lua_pop(L, 1);
  const tm = lua.lua_getfield(L, idx, 'timeoutMs');
  if (tm === LUA_TNUMBER) options.timeoutMs = lua.lua_tonumberx(L, -1) as number;
  else if (tm !== LUA_TNIL) raise(L, 'fetch(): timeoutMs must be a number');
  lua_pop(L, 1);
  return options;
}

// The headers table on top of the stack as pairs.
function headerList(L: LuaState): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  lua_pushnil(L);
  while (lua.lua_next(L, -2) !== 0) {
    if (lua_type(L, -2) !== LUA_TSTRING || (lua_type(L, -1) !== LUA_TSTRING && lua_type(L, -1) !== LUA_TNUMBER)) {
      raise(L, 'fetch(): headers must map names to strings');
    }
    // lua_tolstring on a number would change the key during lua_next: copy the value first.
    lua_pushvalue(L, -1);
    const value = text(lua_tolstring(L, -1)!);
    lua_pop(L, 1);
    const name = text(lua_tolstring(L, -2)!);
    for (const line of value.split('\n')) out.push([name, line]);
    lua_pop(L, 1);
  }
  return out;
}

/** fetch(url[, options]): the response as a table {status, headers, body}; waits without blocking. */
export const fetch: LuaJsFunction = (L) => {
  const url = text(lauxlib.luaL_checklstring(L, 1));
  const options = fetchOptions(L, 2);
  const run = runOf(L);
  checkCanWait(L, 'fetch()');
  return hostWait(L, run, run.host.fetch(url, options), pushResponseResult);
};
