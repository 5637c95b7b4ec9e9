/**
 * Content cache bindings: cache.get/set/delete/incr. The embedded cache answers at once, and
 * not yielding then keeps the whole run synchronous; Redis answers with a promise.
 */
import type { CacheValue } from '../../../content-cache/content-cache.js';
import type { ScriptResponse } from '../../host.js';
import { LUA_TNIL, LUA_TNUMBER, LUA_TSTRING, LUA_TTABLE } from '../capi.js';
import type { Bindings, PushResult, Run54 } from '../run.js';
import type { Ptr } from '../wasm.js';
import { responseTables } from './response-table.js';

/** The host functions of this capability, by their names in the sandbox. */
export function bindCache(b: Bindings): Record<string, (L: Ptr) => number> {
  const { api } = b;
  const x = api.x;
  const { pushResponseTable, toResponse } = responseTables(api);

  const pushCacheValue = (L: Ptr, value: unknown): number => {
    const v = value as CacheValue | null;
    if (v === null) x.lua_pushnil(L);
    else if (Buffer.isBuffer(v)) api.push(L, v);
    else pushResponseTable(L, v, v.storedAt);
    return 1;
  };
  const pushBoolean = (L: Ptr, value: unknown): number => {
    x.lua_pushboolean(L, value === true ? 1 : 0);
    return 1;
  };
  const pushCount = (L: Ptr, value: unknown): number => {
    if (value === null) x.lua_pushnil(L);
    else x.lua_pushinteger(L, BigInt(value as number));
    return 1;
  };

  /** A host call's result: pushed at once when the host has it, else after a wait. */
  function answer<T>(L: Ptr, run: Run54, what: string, call: () => T | Promise<T>, push: PushResult): number {
    if (!x.lua_isyieldable(L)) return b.wait(L, run, what, () => Promise.resolve(), null);
    const result = call();
    return result instanceof Promise ? b.wait(L, run, what, () => result, push) : push(L, result);
  }

  // Keys are text: UTF-8, as a PHP application sharing the same Redis would write them.
  const keyArg = (L: Ptr): string => {
    x.luaL_checklstring(L, 1, 0);
    return api.text(L, 1)!;
  };

  return {
    cache_get(L) {
      const key = keyArg(L);
      const run = b.run(L);
      return answer(L, run, 'cache.get()', () => run.host.cacheGet(key), pushCacheValue);
    },
    cache_set(L) {
      const key = keyArg(L);
      const t = x.lua_type(L, 2);
      let value: Buffer | ScriptResponse;
      if (t === LUA_TSTRING || t === LUA_TNUMBER) value = api.bytes(L, 2)!;
      else if (t === LUA_TTABLE) value = toResponse(L, 2, 'cache.set()');
      else return api.raise(L, 'cache.set(key, value[, ttl]): value must be a string or a response table');
      const ttl = x.lua_type(L, 3) <= LUA_TNIL ? 0 : x.luaL_checknumber(L, 3);
      const run = b.run(L);
      return answer(L, run, 'cache.set()', () => run.host.cacheSet(key, value, ttl), pushBoolean);
    },
    cache_delete(L) {
      const key = keyArg(L);
      const run = b.run(L);
      return answer(L, run, 'cache.delete()', () => run.host.cacheDelete(key), pushBoolean);
    },
    cache_incr(L) {
      const key = keyArg(L);
      const by = x.lua_type(L, 2) <= LUA_TNIL ? 1 : Number(x.luaL_checkinteger(L, 2));
      const ttl = x.lua_type(L, 3) <= LUA_TNIL ? undefined : x.luaL_checknumber(L, 3);
      const run = b.run(L);
      return answer(L, run, 'cache.incr()', () => run.host.cacheIncr(key, by, ttl), pushCount);
    },
  };
}
