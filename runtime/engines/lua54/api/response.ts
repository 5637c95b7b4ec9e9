/**
 * Response bindings: response.status and response.headers[name], read and written through the
 * shared read-only tables the sandbox builds (they hold nothing per request: status and
 * headers live in the run's host).
 */
import { LUA_TNIL, LUA_TNUMBER, LUA_TSTRING } from '../capi.js';
import type { Bindings } from '../run.js';
import type { Ptr } from '../wasm.js';

/** The host functions of this capability, by their names in the sandbox. */
export function bindResponse(b: Bindings): Record<string, (L: Ptr) => number> {
  const { api } = b;
  const x = api.x;

  const headerName = (L: Ptr, idx: number): string => api.text(L, idx) ?? api.raise(L, 'header name must be a string');

  return {
    header_get(L) {
      const value = b.run(L).host.getHeader(headerName(L, 2));
      if (value === undefined) x.lua_pushnil(L);
      else api.push(L, value);
      return 1;
    },
    header_set(L) {
      const host = b.run(L).host;
      const name = headerName(L, 2);
      const t = x.lua_type(L, 3);
      if (t === LUA_TNIL) host.setHeader(name, null);
      else if (t === LUA_TSTRING) host.setHeader(name, api.text(L, 3));
      else if (t === LUA_TNUMBER) host.setHeader(name, x.lua_tonumberx(L, 3, 0));
      else return api.raise(L, `header ${name} must be a string, a number or nil`);
      return 0;
    },
    status_get(L) {
      x.lua_pushinteger(L, BigInt(b.run(L).host.status));
      return 1;
    },
    response_set(L) {
      // The response table's __newindex: (table, key, value).
      const key = x.lua_type(L, 2) === LUA_TSTRING ? api.text(L, 2) : null;
      if (key !== 'status') return api.raise(L, `response.${key ?? '?'} cannot be set (only response.status and response.headers[name])`);
      if (x.lua_isnumber(L, 3) === 0) return api.raise(L, 'response.status must be a number');
      b.run(L).host.status = x.lua_tonumberx(L, 3, 0);
      return 0;
    },
  };
}
