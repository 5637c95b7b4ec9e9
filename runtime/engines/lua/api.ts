/**
 * The script API (README, "Script API"): print, write, flush, log, sleep, stat, sendfile, and the `request` and
 * `response` tables, as thin adapters over the run's ScriptHost. `request` is an empty
 * per-request table over a shared metatable whose __index fills in fields on first read, since
 * most scripts read a few fields and decoding every param costs. `response` holds nothing per
 * request, so one read-only table serves every request ({@link pushResponse}).
 */
import { lauxlib, lua, to_luastring, type LuaJsFunction, type LuaProxy, type LuaState, type LuaString } from 'fengari';
import { S, jsfn, keyAt, pushRecord, raise, runOf, setFunction, text } from './core.js';
import type { FileInfo } from '../../files/files.js';
import { checkCanWait, hostWait } from './control.js';
import { readOnlyTables } from './libs.js';

const {
  LUA_TBOOLEAN,
  LUA_TNIL,
  LUA_TNUMBER,
  LUA_TSTRING,
  lua_createtable,
  lua_gettop,
  lua_pop,
  lua_pushboolean,
  lua_pushinteger,
  lua_pushjsfunction,
  lua_pushnil,
  lua_pushstring,
  lua_pushvalue,
  lua_rawset,
  lua_setfield,
  lua_insert,
  lua_rotate,
  lua_setmetatable,
  lua_topointer,
  lua_toproxy,
  lua_tolstring,
  lua_type,
} = lua;

const TAB = 9;
const NEWLINE = 10;

const TRUE = to_luastring('true', true);
const FALSE = to_luastring('false', true);
const NIL = to_luastring('nil', true);

/**
 * Arguments 1..n converted as tostring() would. Strings, numbers, booleans and nil (which have
 * no metatable a script can set) skip luaL_tolstring's metamethod lookup, a few times slower.
 * Numbers are converted in place, in this call's own argument slots.
 */
function strings(L: LuaState): Uint8Array[] {
  const n = lua_gettop(L);
  const out: Uint8Array[] = [];
  for (let i = 1; i <= n; i++) {
    const t = lua_type(L, i);
    if (t === LUA_TSTRING || t === LUA_TNUMBER) out.push(lua_tolstring(L, i)!);
    else if (t === LUA_TNIL) out.push(NIL);
    else if (t === LUA_TBOOLEAN) out.push(lua.lua_toboolean(L, i) ? TRUE : FALSE);
    else {
      out.push(lauxlib.luaL_tolstring(L, i));
      lua_pop(L, 1);
    }
  }
  return out;
}

/** Joins byte strings with an optional separator byte and final byte (-1: none). */
function join(parts: Uint8Array[], sep: number, end: number): Uint8Array {
  let size = end >= 0 ? 1 : 0;
  for (const p of parts) size += p.length;
  if (sep >= 0 && parts.length > 1) size += parts.length - 1;
  const out = new Uint8Array(size);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    if (i > 0 && sep >= 0) out[at++] = sep;
    out.set(parts[i]!, at);
    at += parts[i]!.length;
  }
  if (end >= 0) out[at] = end;
  return out;
}

const print: LuaJsFunction = (L) => {
  const run = runOf(L);
  // Fast path for the common print("one string"): one copy, one write.
  if (lua_gettop(L) === 1 && lua_type(L, 1) === LUA_TSTRING) {
    const s = lua_tolstring(L, 1)!;
    const out = new Uint8Array(s.length + 1);
    out.set(s, 0);
    out[s.length] = NEWLINE;
    run.host.write(out);
    return 0;
  }
  run.host.write(join(strings(L), TAB, NEWLINE));
  return 0;
};

const write: LuaJsFunction = (L) => {
  const run = runOf(L);
  // Lua strings are immutable: the response may keep the bytes without a copy.
  if (lua_gettop(L) === 1 && lua_type(L, 1) === LUA_TSTRING) run.host.write(lua_tolstring(L, 1)!);
  else run.host.write(join(strings(L), -1, -1));
  return 0;
};

const flush: LuaJsFunction = (L) => {
  runOf(L).host.flush();
  return 0;
};

const log: LuaJsFunction = (L) => {
  runOf(L).host.log(text(join(strings(L), TAB, -1)));
  return 0;
};

const sleep: LuaJsFunction = (L) => {
  const ms = lauxlib.luaL_checknumber(L, 1);
  const run = runOf(L);
  checkCanWait(L, 'sleep()');
  return hostWait(L, run, run.host.sleep(ms), null);
};

const pushBody = (L: LuaState, value: unknown): number => {
  const run = runOf(L);
  run.body = value as Buffer;
  lua_pushstring(L, run.body);
  return 1;
};

/** request.body(): the body as a Lua string (bytes kept), read once and cached for the run. */
const body: LuaJsFunction = (L) => {
  const run = runOf(L);
  if (run.body !== null) {
    lua_pushstring(L, run.body);
    return 1;
  }
  checkCanWait(L, 'request.body()');
  return hostWait(L, run, run.host.body(), pushBody);
};

const bodyFunction = jsfn(body);

const pushFileInfo = (L: LuaState, value: unknown): number => {
  const info = value as FileInfo | null;
  if (info === null) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 6);
  lua_pushboolean(L, info.is_file);
  lua_setfield(L, -2, 'is_file');
  lua_pushboolean(L, info.is_dir);
  lua_setfield(L, -2, 'is_dir');
  lua_pushinteger(L, info.size);
  lua_setfield(L, -2, 'size');
  lua_pushinteger(L, info.mtime);
  lua_setfield(L, -2, 'mtime');
  lua_pushstring(L, info.etag);
  lua_setfield(L, -2, 'etag');
  lua_pushstring(L, info.content_type);
  lua_setfield(L, -2, 'content_type');
  return 1;
};

/** stat(path): a table of the file's facts, or nil when it does not exist. */
const stat: LuaJsFunction = (L) => {
  const path = text(lauxlib.luaL_checklstring(L, 1));
  const run = runOf(L);
  checkCanWait(L, 'stat()');
  return hostWait(L, run, run.host.stat(path), pushFileInfo);
};

/** A string field of the options table at `idx`, or undefined. */
function optionField(L: LuaState, idx: number, name: string): string | undefined {
  const t = lua.lua_getfield(L, idx, name);
  const value = t === LUA_TNIL ? undefined : t === LUA_TSTRING ? text(lua_tolstring(L, -1)!) : raise(L, `sendfile(): ${name} must be a string`);
  lua_pop(L, 1);
  return value;
}

/** sendfile(path[, offset, length][, options]): ends the run; the web server sends the file. */
const sendfile: LuaJsFunction = (L) => {
  const path = text(lauxlib.luaL_checklstring(L, 1));
  let offset: number | undefined;
  let length: number | undefined;
  let at = 2;
  if (lua_type(L, 2) !== lua.LUA_TTABLE) {
    offset = lua_type(L, 2) <= LUA_TNIL ? undefined : lauxlib.luaL_checkinteger(L, 2);
    length = lua_type(L, 3) <= LUA_TNIL ? undefined : lauxlib.luaL_checkinteger(L, 3);
    at = 4;
  }
  let contentType: string | undefined;
  let filename: string | undefined;
  const t = lua_type(L, at);
  if (t === lua.LUA_TTABLE) {
    contentType = optionField(L, at, 'content_type');
    filename = optionField(L, at, 'filename');
  } else if (t > LUA_TNIL) {
    // (LUA_TNONE, -1, is an argument not given at all.)
    return raise(L, 'sendfile(path[, offset, length][, options]): options must be a table');
  }
  const run = runOf(L);
  checkCanWait(L, 'sendfile()');
  return hostWait(L, run, run.host.sendfile(path, { offset, length, contentType, filename }), null);
};

/** Pushes request field `key`; false when there is no such field. */
function pushRequestField(L: LuaState, key: string): boolean {
  const host = runOf(L).host;
  switch (key) {
    case 'method': lua_pushstring(L, host.method); break;
    case 'uri': lua_pushstring(L, host.uri); break;
    case 'path': lua_pushstring(L, host.path); break;
    case 'query_string': lua_pushstring(L, host.queryString); break;
    case 'remote_addr': lua_pushstring(L, host.remoteAddr); break;
    case 'script_filename': lua_pushstring(L, host.scriptFilename); break;
    case 'document_root': lua_pushstring(L, host.documentRoot); break;
    case 'query': pushRecord(L, host.query); break;
    case 'headers': pushRecord(L, host.headers); break;
    case 'params': pushRecord(L, host.request.params); break;
    case 'body': lua_pushjsfunction(L, bodyFunction); break;
    default: return false;
  }
  return true;
}

/** request's __index: computes a field once and stores it in the request table. */
const requestIndex: LuaJsFunction = (L) => {
  const key = keyAt(L, 2);
  if (key === null || !pushRequestField(L, key)) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);
  return 1;
};

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

/** The shared metatables, one set per lua_State (proxies are bound to their state). */
export interface ApiMetatables {
  request: LuaProxy;
  headers: LuaProxy;
}

/** Pushes a metatable with the given metamethods and a hidden (__metatable) marker; returns its proxy. */
export function makeMetatable(L: LuaState, index: LuaJsFunction | null, newindex: LuaJsFunction | null): LuaProxy {
  lua_createtable(L, 0, 3);
  if (index) setFunction(L, S.__index, jsfn(index));
  if (newindex) setFunction(L, S.__newindex, jsfn(newindex));
  // Scripts see `false` from getmetatable() and cannot setmetatable(): the table is shared.
  lua_pushboolean(L, false);
  lua_setfield(L, -2, S.__metatable);
  const proxy = lua_toproxy(L, -1);
  lua_pop(L, 1);
  return proxy;
}

/** Pushes a new empty table over a shared metatable. */
export function pushProxyTable(L: LuaState, meta: LuaProxy): void {
  lua_createtable(L, 0, 0);
  meta(L);
  lua_setmetatable(L, -2);
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

/** Builds the API's shared metatables in L. */
export function makeApiMetatables(L: LuaState): ApiMetatables {
  return {
    request: makeMetatable(L, requestIndex, null),
    headers: makeMetatable(L, headerIndex, headerNewindex),
  };
}

/**
 * Pushes the `response` table, one for every request: it holds nothing per request (status and
 * headers live in the run's host), so building it per request, and `response.headers` per
 * read, cost a table and a JS call each for nothing. It is an empty read-only table: reads go
 * to a hidden table whose `headers` field is the shared, read-only headers table (no JS call),
 * and from there to a function for `status`; writes go to a function that allows only `status`.
 */
export function pushResponse(L: LuaState, metas: ApiMetatables): void {
  pushProxyTable(L, metas.headers);
  readOnlyTables.add(lua_topointer(L, -1)!);
  lua_createtable(L, 0, 1);
  lua_insert(L, -2);
  lua_setfield(L, -2, 'headers');
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

/** Adds print, write, flush, log, sleep, stat and sendfile to the table at the top of the stack. */
export function registerFunctions(L: LuaState): void {
  const functions: Record<string, LuaJsFunction> = { print, write, flush, log, sleep, stat, sendfile };
  for (const name in functions) {
    lua_pushjsfunction(L, jsfn(functions[name]!));
    lua_setfield(L, -2, name);
  }
}
