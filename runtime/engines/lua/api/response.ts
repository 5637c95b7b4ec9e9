/**
 * The `response` table's bindings: `response.status` and `response.headers[name]`, over the
 * status and header half of host/output.ts, and where `response.cookie` (cookies.ts) sits. These are tables and not functions, so they are
 * apart from output.ts. One read-only `response` table serves every request, because it holds
 * nothing of its own ({@link pushResponse}). lighty.ts uses the same headers metatable for
 * `lighty.r.resp_header`.
 */
import { lua, type LuaJsFunction, type LuaProxy, type LuaState, type LuaString } from 'fengari';
import { S, jsfn, keyAt, raise, runOf, setFunction, text } from '../core.js';
import { readOnlyTables } from '../libs.js';
import { cookie } from './cookies.js';
import { makeMetatable, pushProxyTable } from './metatables.js';

const {
  LUA_TNIL,
  LUA_TNUMBER,
  LUA_TSTRING,
  lua_createtable,
  lua_insert,
  lua_pushboolean,
  lua_pushinteger,
  lua_pushnil,
  lua_pushstring,
  lua_rotate,
  lua_setfield,
  lua_setmetatable,
  lua_tolstring,
  lua_topointer,
  lua_type,
} = lua;

/** A header name argument: a string (numbers converted, as Lua does). */
function headerName(L: LuaState, idx: number): string {
  const s: LuaString | null = lua_tolstring(L, idx);
  if (s === null) return raise(L, 'header name must be a string');
  return text(s);
}

/** Response headers' __index: the header value or nil. */
const headerIndex: LuaJsFunction = (L) => {
  const value = runOf(L).host.getHeader(headerName(L, 2));
  if (value === undefined) lua_pushnil(L);
  else lua_pushstring(L, value);
  return 1;
};

/** Response headers' __newindex: sets (string, number) or removes (nil) a header. */
const headerNewindex: LuaJsFunction = (L) => {
  const host = runOf(L).host;
  const name = headerName(L, 2);
  const t = lua_type(L, 3);
  if (t === LUA_TNIL) host.setHeader(name, null);
  else if (t === LUA_TSTRING) host.setHeader(name, text(lua_tolstring(L, 3)!));
  else if (t === LUA_TNUMBER) host.setHeader(name, lua.lua_tonumberx(L, 3) as number);
  else return raise(L, `header ${name} must be a string, a number or nil`);
  return 0;
};

/** Builds the shared metatable of response header tables (`response.headers`, lighty's resp_header) in L. */
export function makeHeadersMetatable(L: LuaState): LuaProxy {
  return makeMetatable(L, headerIndex, headerNewindex);
}

/** response's fields other than `headers`: `status` (read), anything else nil. */
const responseIndex: LuaJsFunction = (L) => {
  if (keyAt(L, 2) === 'status') lua_pushinteger(L, runOf(L).host.status);
  else lua_pushnil(L);
  return 1;
};

/** response's __newindex: only `status` can be set. */
const responseNewindex: LuaJsFunction = (L) => {
  const key = keyAt(L, 2);
  if (key !== 'status') return raise(L, `response.${key ?? '?'} cannot be set (only response.status and response.headers[name])`);
  const code = lua.lua_tonumberx(L, 3);
  if (code === false) return raise(L, 'response.status must be a number');
  runOf(L).host.status = code;
  return 0;
};

/**
 * Pushes the `response` table, one for every request: it holds nothing per request (status and
 * headers live in the run's host), so building it per request, and `response.headers` per
 * read, cost a table and a JS call each for nothing. It is an empty read-only table: reads go
 * to a hidden table whose `headers` field is the shared, read-only headers table (no JS call)
 * and whose `cookie` field is response.cookie (cookies.ts), and from there to a function for `status`; writes go to a function that allows only `status`.
 * `headers` is the metatable from {@link makeHeadersMetatable}.
 */
export function pushResponse(L: LuaState, headers: LuaProxy): void {
  pushProxyTable(L, headers);
  readOnlyTables.add(lua_topointer(L, -1)!);
  lua_createtable(L, 0, 2);
  lua_insert(L, -2);
  lua_setfield(L, -2, 'headers');
  setFunction(L, 'cookie', jsfn(cookie));
  makeMetatable(L, responseIndex, null)(L);
  lua_setmetatable(L, -2);
  lua_createtable(L, 0, 0);
  readOnlyTables.add(lua_topointer(L, -1)!);
  lua_createtable(L, 0, 3);
  lua_rotate(L, -3, -1);
  lua_setfield(L, -2, S.__index);
  setFunction(L, S.__newindex, jsfn(responseNewindex));
  lua_pushboolean(L, false);
  lua_setfield(L, -2, S.__metatable);
  lua_setmetatable(L, -2);
}
