/**
 * fetch(url[, options]), over host/fetch.ts: an outbound HTTP call to an allowed origin that
 * looks synchronous (the run's thread yields as for pass()); a refusal or failure is a Lua
 * error (`LS_FETCH_*: ...`) the script can catch with pcall. Strings in and out are bytes.
 */
import type { FetchOptions } from '../../host.js';
import { LUA_TNIL, LUA_TNUMBER, LUA_TSTRING, LUA_TTABLE } from '../capi.js';
import type { Bindings } from '../run.js';
import type { Ptr } from '../wasm.js';
import { responseTables } from './response-table.js';

const OPTIONS = new Set(['method', 'headers', 'body', 'timeoutMs']);

/** The host functions of this capability, by their names in the sandbox. */
export function bindFetch(b: Bindings): Record<string, (L: Ptr) => number> {
  const { api } = b;
  const x = api.x;
  const { pushResult } = responseTables(api);

  // The headers table on top of the stack as pairs (a value with "\n" is several lines).
  function headerList(L: Ptr): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    api.solid(L, -1);
    x.lua_pushnil(L);
    while (x.lua_next(L, -2) !== 0) {
      if (x.lua_type(L, -2) !== LUA_TSTRING || (x.lua_type(L, -1) !== LUA_TSTRING && x.lua_type(L, -1) !== LUA_TNUMBER)) {
        api.raise(L, 'fetch(): headers must map names to strings');
      }
      // lua_tolstring on a number would change the key during lua_next: copy the value first.
      x.lua_pushvalue(L, -1);
      const value = api.text(L, -1)!;
      api.pop(L, 1);
      const name = api.text(L, -2)!;
      for (const line of value.split('\n')) out.push([name, line]);
      api.pop(L, 1);
    }
    return out;
  }

  /** The options table of fetch() at `idx`: method, headers, body, timeoutMs. */
  function fetchOptions(L: Ptr, idx: number): FetchOptions {
    const t = x.lua_type(L, idx);
    if (t <= LUA_TNIL) return {};
    if (t !== LUA_TTABLE) return api.raise(L, 'fetch(url[, options]): options must be a table');
    api.solid(L, idx);
    x.lua_pushnil(L);
    while (x.lua_next(L, idx) !== 0) {
      const key = x.lua_type(L, -2) === LUA_TSTRING ? api.text(L, -2) : null;
      if (key === null || !OPTIONS.has(key)) api.raise(L, `fetch(): unknown option ${key === null ? '(not a string)' : JSON.stringify(key)}`);
      api.pop(L, 1);
    }
    const options: { -readonly [K in keyof FetchOptions]: FetchOptions[K] } = {};
    const m = api.getField(L, idx, 'method');
    if (m === LUA_TSTRING) options.method = api.text(L, -1)!;
    else if (m !== LUA_TNIL) api.raise(L, 'fetch(): method must be a string');
    api.pop(L, 1);
    const h = api.getField(L, idx, 'headers');
    if (h === LUA_TTABLE) options.headers = headerList(L);
    else if (h !== LUA_TNIL) api.raise(L, 'fetch(): headers must be a table');
    api.pop(L, 1);
    const bt = api.getField(L, idx, 'body');
    if (bt === LUA_TSTRING) options.body = api.bytes(L, -1)!;
    else if (bt !== LUA_TNIL) api.raise(L, 'fetch(): body must be a string');
    api.pop(L, 1);
    const tm = api.getField(L, idx, 'timeoutMs');
    if (tm === LUA_TNUMBER) options.timeoutMs = x.lua_tonumberx(L, -1, 0);
    else if (tm !== LUA_TNIL) api.raise(L, 'fetch(): timeoutMs must be a number');
    api.pop(L, 1);
    return options;
  }

  return {
    fetch(L) {
      x.luaL_checklstring(L, 1, 0);
      const url = api.text(L, 1)!;
      const options = fetchOptions(L, 2);
      const run = b.run(L);
      return b.wait(L, run, 'fetch()', () => run.host.fetch(url, options), pushResult);
    },
  };
}
