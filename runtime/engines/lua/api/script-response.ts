/**
 * A response value (host/script-response.ts) as a Lua table, and back again. pass() returns one,
 * the cache stores and returns one, and emit() sends one. So pass.ts, cache.ts and output.ts
 * share these conversions, and they have their own module, as on the host side.
 */
import { lua, type LuaState } from 'fengari';
import { pushRecord, raise, text } from '../core.js';
import { bodyFile, type ScriptResponse } from '../../host.js';

const {
  LUA_TNIL,
  LUA_TNUMBER,
  LUA_TSTRING,
  lua_createtable,
  lua_pop,
  lua_pushinteger,
  lua_pushnil,
  lua_pushstring,
  lua_pushvalue,
  lua_setfield,
  lua_tolstring,
  lua_type,
} = lua;

/**
 * Pushes a response as a table: status, headers (lower-case names; a header sent several
 * times has its values joined by "\n", which emit() splits again), body, and `age` in seconds
 * for a cached one.
 */
export function pushResponseTable(L: LuaState, r: ScriptResponse, storedAt: number | null): void {
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, r.status);
  lua_setfield(L, -2, 'status');
  const split = bodyFile(r);
  if (split.file !== undefined) {
    lua_pushstring(L, split.file);
    lua_setfield(L, -2, 'file');
  }
  const headers = Object.create(null) as Record<string, string>;
  for (const [name, value] of split.headers) {
    const lower = name.toLowerCase();
    headers[lower] = lower in headers ? `${headers[lower]}\n${value}` : value;
  }
  pushRecord(L, headers);
  lua_setfield(L, -2, 'headers');
  lua_pushstring(L, r.body);
  lua_setfield(L, -2, 'body');
  if (storedAt !== null) {
    lua_pushinteger(L, Math.max(0, Math.floor((Date.now() - storedAt) / 1000)));
    lua_setfield(L, -2, 'age');
  }
}

/** Reads a response table at `idx` (status defaults to 200, body to ""). */
export function toResponse(L: LuaState, idx: number, what: string): ScriptResponse {
  const at = lua.lua_absindex(L, idx);
  let status = 200;
  if (lua.lua_getfield(L, at, 'status') !== LUA_TNIL) {
    if (!lua.lua_isinteger(L, -1)) raise(L, `${what}: status must be an integer`);
    status = lua.lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  const headers: Array<[string, string]> = [];
  const t = lua.lua_getfield(L, at, 'headers');
  if (t === lua.LUA_TTABLE) {
    lua_pushnil(L);
    while (lua.lua_next(L, -2) !== 0) {
      if (lua_type(L, -2) !== LUA_TSTRING || (lua_type(L, -1) !== LUA_TSTRING && lua_type(L, -1) !== LUA_TNUMBER)) {
        raise(L, `${what}: headers must map names to strings`);
      }
      // lua_tolstring on a number would change the key during lua_next: copy the value first.
      lua_pushvalue(L, -1);
      const value = text(lua_tolstring(L, -1)!);
      lua_pop(L, 1);
      const name = text(lua_tolstring(L, -2)!);
      for (const line of value.split('\n')) headers.push([name, line]);
      lua_pop(L, 1);
    }
  } else if (t !== LUA_TNIL) {
    raise(L, `${what}: headers must be a table`);
  }
  lua_pop(L, 1);
  let body: Buffer = Buffer.alloc(0);
  const b = lua.lua_getfield(L, at, 'body');
  if (b === LUA_TSTRING || b === LUA_TNUMBER) body = Buffer.from(lua_tolstring(L, -1)!);
  else if (b !== LUA_TNIL) raise(L, `${what}: body must be a string`);
  lua_pop(L, 1);
  const f = lua.lua_getfield(L, at, 'file');
  const file = f === LUA_TSTRING ? text(lua_tolstring(L, -1)!) : f === LUA_TNIL ? undefined : raise(L, `${what}: file must be a string`);
  lua_pop(L, 1);
  return file === undefined ? { status, headers, body } : { status, headers, body, file };
}
