/**
 * The `cache` table's bindings: cache.get, set, delete and incr, over host/cache.ts. They are
 * apart from the rest because only these calls may answer at once or later. The embedded cache
 * answers synchronously, and Redis answers with a promise, so these calls wait only when they
 * have to ({@link answer}).
 */
import { lauxlib, lua, type LuaJsFunction, type LuaState } from 'fengari';
import type { CacheValue } from '../../../content-cache/content-cache.js';
import { raise, runOf, text, type LuaRun, type PushResult } from '../core.js';
import { checkCanWait, hostWait } from '../control.js';
import type { ScriptResponse } from '../../host.js';
import { pushResponseTable, toResponse } from './script-response.js';

const {
  LUA_TNIL,
  LUA_TNUMBER,
  LUA_TSTRING,
  lua_pushboolean,
  lua_pushinteger,
  lua_pushnil,
  lua_pushstring,
  lua_tolstring,
  lua_type,
} = lua;

const pushCacheValue = (L: LuaState, value: unknown): number => {
  const v = value as CacheValue | null;
  if (v === null) lua_pushnil(L);
  else if (Buffer.isBuffer(v)) lua_pushstring(L, v);
  else pushResponseTable(L, v, v.storedAt);
  return 1;
};

const pushBoolean = (L: LuaState, value: unknown): number => {
  lua_pushboolean(L, value === true);
  return 1;
};

const pushCount = (L: LuaState, value: unknown): number => {
  if (value === null) lua_pushnil(L);
  else lua_pushinteger(L, value as number);
  return 1;
};

/**
 * Pushes a host call's result, waiting first when it is a promise. The embedded cache answers
 * at once, and not yielding keeps the whole run synchronous (see LuaEngine.run).
 */
function answer<T>(L: LuaState, run: LuaRun, result: T | Promise<T>, push: PushResult): number {
  return result instanceof Promise ? hostWait(L, run, result, push) : push(L, result);
}

// Keys are text: UTF-8, as a PHP application sharing the same Redis would write them.
const keyArg = (L: LuaState): string => text(lauxlib.luaL_checklstring(L, 1));

/** cache.get(key): a string, a response table, or nil. */
export const cacheGet: LuaJsFunction = (L) => {
  const key = keyArg(L);
  const run = runOf(L);
  checkCanWait(L, 'cache.get()');
  return answer(L, run, run.host.cacheGet(key), pushCacheValue);
};

/** cache.set(key, value[, ttl]): value a string (or number) or a response table; true when stored. */
export const cacheSet: LuaJsFunction = (L) => {
  const key = keyArg(L);
  const t = lua_type(L, 2);
  let value: Buffer | ScriptResponse;
  if (t === LUA_TSTRING || t === LUA_TNUMBER) value = Buffer.from(lua_tolstring(L, 2)!);
  else if (t === lua.LUA_TTABLE) value = toResponse(L, 2, 'cache.set()');
  else return raise(L, 'cache.set(key, value[, ttl]): value must be a string or a response table');
  const ttl = lua_type(L, 3) <= LUA_TNIL ? 0 : lauxlib.luaL_checknumber(L, 3);
  const run = runOf(L);
  checkCanWait(L, 'cache.set()');
  return answer(L, run, run.host.cacheSet(key, value, ttl), pushBoolean);
};

/** cache.delete(key): true when a value was removed. */
export const cacheDelete: LuaJsFunction = (L) => {
  const key = keyArg(L);
  const run = runOf(L);
  checkCanWait(L, 'cache.delete()');
  return answer(L, run, run.host.cacheDelete(key), pushBoolean);
};

/** cache.incr(key[, n[, ttl]]): the new value (a missing key counts from 0), nil when the cache is down. */
export const cacheIncr: LuaJsFunction = (L) => {
  const key = keyArg(L);
  const by = lua_type(L, 2) <= LUA_TNIL ? 1 : lauxlib.luaL_checkinteger(L, 2);
  const ttl = lua_type(L, 3) <= LUA_TNIL ? undefined : lauxlib.luaL_checknumber(L, 3);
  const run = runOf(L);
  checkCanWait(L, 'cache.incr()');
  return answer(L, run, run.host.cacheIncr(key, by, ttl), pushCount);
};
