/**
 * A whole response as a Lua table ({status, headers, body[, file][, age]}) and back: what
 * pass() returns, what the cache stores, what emit() takes.
 */
import { bodyFile, type ScriptResponse } from '../../host.js';
import { LUA_TNIL, LUA_TNUMBER, LUA_TSTRING, LUA_TTABLE, type LuaApi } from '../capi.js';
import type { Ptr } from '../wasm.js';

/** The two conversions, bound to one module's API, and the result pusher of pass() and fetch(). */
export interface ResponseTables {
  pushResponseTable: (L: Ptr, r: ScriptResponse, storedAt: number | null) => void;
  toResponse: (L: Ptr, idx: number, what: string) => ScriptResponse;
  /** A host call's response (pass(), fetch()) as the one result of the resumed call. */
  pushResult: (L: Ptr, value: unknown) => number;
}

/** {@link ResponseTables} for one module's API. */
export function responseTables(api: LuaApi): ResponseTables {
  const x = api.x;
  const tables: Omit<ResponseTables, 'pushResult'> = {
    /**
     * Pushes a response as a table: headers by lower-case name, a header sent several times
     * with its values joined by "\n" (which emit() splits again); `age` in seconds when cached.
     */
    pushResponseTable: (L, r, storedAt) => {
      x.lua_createtable(L, 0, 4);
      x.lua_pushinteger(L, BigInt(r.status));
      api.setField(L, -2, 'status');
      const split = bodyFile(r);
      if (split.file !== undefined) {
        api.push(L, split.file);
        api.setField(L, -2, 'file');
      }
      const headers = Object.create(null) as Record<string, string>;
      for (const [name, value] of split.headers) {
        const lower = name.toLowerCase();
        headers[lower] = lower in headers ? `${headers[lower]}\n${value}` : value;
      }
      x.lua_createtable(L, 0, 0);
      for (const name in headers) {
        api.push(L, name);
        api.push(L, headers[name]!);
        x.lua_rawset(L, -3);
      }
      api.setField(L, -2, 'headers');
      api.push(L, r.body);
      api.setField(L, -2, 'body');
      if (storedAt !== null) {
        x.lua_pushinteger(L, BigInt(Math.max(0, Math.floor((Date.now() - storedAt) / 1000))));
        api.setField(L, -2, 'age');
      }
    },
    /** Reads a response table at `idx` (status defaults to 200, body to ""). */
    toResponse: (L, idx, what) => {
      const at = x.lua_absindex(L, idx);
      let status = 200;
      if (api.getField(L, at, 'status') !== LUA_TNIL) {
        if (!x.lua_isinteger(L, -1)) api.raise(L, `${what}: status must be an integer`);
        status = Number(x.lua_tointegerx(L, -1, 0));
      }
      api.pop(L, 1);
      const headers: Array<[string, string]> = [];
      const t = api.getField(L, at, 'headers');
      if (t === LUA_TTABLE) {
        api.solid(L, -1);
        x.lua_pushnil(L);
        while (x.lua_next(L, -2) !== 0) {
          if (x.lua_type(L, -2) !== LUA_TSTRING || (x.lua_type(L, -1) !== LUA_TSTRING && x.lua_type(L, -1) !== LUA_TNUMBER)) {
            api.raise(L, `${what}: headers must map names to strings`);
          }
          // lua_tolstring on a number would change the key during lua_next: copy the value first.
          x.lua_pushvalue(L, -1);
          const value = api.text(L, -1)!;
          api.pop(L, 1);
          const name = api.text(L, -2)!;
          for (const line of value.split('\n')) headers.push([name, line]);
          api.pop(L, 1);
        }
      } else if (t !== LUA_TNIL) {
        api.raise(L, `${what}: headers must be a table`);
      }
      api.pop(L, 1);
      let body: Buffer = Buffer.alloc(0);
      const bt = api.getField(L, at, 'body');
      if (bt === LUA_TSTRING || bt === LUA_TNUMBER) body = api.bytes(L, -1)!;
      else if (bt !== LUA_TNIL) api.raise(L, `${what}: body must be a string`);
      api.pop(L, 1);
      const f = api.getField(L, at, 'file');
      const file = f === LUA_TSTRING ? api.text(L, -1)! : f === LUA_TNIL ? undefined : api.raise(L, `${what}: file must be a string`);
      api.pop(L, 1);
      return file === undefined ? { status, headers, body } : { status, headers, body, file };
    },
  };
  return {
    ...tables,
    pushResult: (L, value) => {
      tables.pushResponseTable(L, value as ScriptResponse, null);
      return 1;
    },
  };
}
