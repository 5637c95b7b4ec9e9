/**
 * The Lua script API (README, "Script API"), installed in the shared globals: the one place that
 * names every global function and builds the shared metatables. Each binding lives in the module
 * of its capability, as on the host side (host/*.ts): output.ts (print, write, flush, log, emit),
 * sleep.ts, files.ts (stat, sendfile), pass.ts, fetch.ts, cache.ts (the `cache` table), library.ts
 * (json, base64, url, crypto, time), request.ts (the `request` table) and response.ts (the
 * `response` table). script-response.ts and metatables.ts hold what several of them share. A new call is one binding in its capability's module, plus
 * one line here if it is a global.
 */
import { lua, type LuaJsFunction, type LuaProxy, type LuaState } from 'fengari';
import { jsfn } from '../core.js';
import { readOnly } from '../libs.js';
import { cacheDelete, cacheGet, cacheIncr, cacheSet } from './cache.js';
import { fetch } from './fetch.js';
import { sendfile, stat } from './files.js';
import { registerLibrary } from './library.js';
import { emit, flush, log, print, write } from './output.js';
import { pass } from './pass.js';
import { makeRequestMetatable } from './request.js';
import { makeHeadersMetatable } from './response.js';
import { sleep } from './sleep.js';

export { pushProxyTable } from './metatables.js';
export { pushResponse } from './response.js';

const { lua_createtable, lua_pushjsfunction, lua_setfield } = lua;

/** The shared metatables, one set per lua_State (proxies are bound to their state). */
export interface ApiMetatables {
  request: LuaProxy;
  headers: LuaProxy;
}

/** Builds the API's shared metatables in L. */
export function makeApiMetatables(L: LuaState): ApiMetatables {
  return {
    request: makeRequestMetatable(L),
    headers: makeHeadersMetatable(L),
  };
}

/**
 * Adds print, write, flush, log, sleep, stat, sendfile, pass, fetch, emit, the `cache` table and
 * the data library's tables (json, base64, url, crypto, time) to the table at the top of the stack.
 */
export function registerFunctions(L: LuaState): void {
  const functions: Record<string, LuaJsFunction> = { print, write, flush, log, sleep, stat, sendfile, pass, fetch, emit };
  for (const name in functions) {
    lua_pushjsfunction(L, jsfn(functions[name]!));
    lua_setfield(L, -2, name);
  }
  // `cache` is a shared library table like `string`: read-only, the same for every request.
  const cache: Record<string, LuaJsFunction> = { get: cacheGet, set: cacheSet, delete: cacheDelete, incr: cacheIncr };
  lua_createtable(L, 0, 4);
  for (const name in cache) {
    lua_pushjsfunction(L, jsfn(cache[name]!));
    lua_setfield(L, -2, name);
  }
  readOnly(L, 'cache');
  lua_setfield(L, -2, 'cache');
  registerLibrary(L);
}
