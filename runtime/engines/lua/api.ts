/**
 * The script API (README, "Script API"): print, write, flush, log, sleep, stat, sendfile, pass, emit, cache, and the `request` and
 * `response` tables, as thin adapters over the run's ScriptHost. `request` is an empty
 * per-request table over a shared metatable whose __index fills in fields on first read, since
 * most scripts read a few fields and decoding every param costs. `response` holds nothing per
 * request, so one read-only table serves every request ({@link pushResponse}).
 */
import { lauxlib, lua, to_luastring, type LuaJsFunction, type LuaProxy, type LuaState, type LuaString } from 'fengari';
import { S, jsfn, keyAt, pushRecord, raise, runOf, setFunction, text, type LuaRun, type PushResult } from './core.js';
import type { FileInfo } from '../../files/files.js';
import { checkCanWait, hostWait } from './control.js';
import { readOnly, readOnlyTables } from './libs.js';
import { BIG_STRING, reserve } from './limits.js';
import type { CacheValue } from '../../content-cache/content-cache.js';
import { bodyFile, utf8Boundary, type PassOptions, type ScriptResponse } from '../host.js';

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

/**
 * Joins byte strings with an optional separator byte and final byte (-1: none), reserving a big
 * result's size first: `write(table.unpack(t))` with 30 references to one 48 MiB string joined
 * 1.4 GB before the output limit could see it (issue 16, item 7).
 */
function join(L: LuaState, run: LuaRun, parts: Uint8Array[], sep: number, end: number): Uint8Array {
  let size = end >= 0 ? 1 : 0;
  for (const p of parts) size += p.length;
  if (sep >= 0 && parts.length > 1) size += parts.length - 1;
  if (size >= BIG_STRING) reserve(L, run, size);
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
    if (s.length >= BIG_STRING) reserve(L, run, s.length + 1);
    const out = new Uint8Array(s.length + 1);
    out.set(s, 0);
    out[s.length] = NEWLINE;
    run.host.write(out);
    return 0;
  }
  run.host.write(join(L, run, strings(L), TAB, NEWLINE));
  return 0;
};

const write: LuaJsFunction = (L) => {
  const run = runOf(L);
  // Lua strings are immutable: the response may keep the bytes without a copy.
  if (lua_gettop(L) === 1 && lua_type(L, 1) === LUA_TSTRING) run.host.write(lua_tolstring(L, 1)!);
  else run.host.write(join(L, run, strings(L), -1, -1));
  return 0;
};

const flush: LuaJsFunction = (L) => {
  runOf(L).host.flush();
  return 0;
};

// The line is cut to the host's log room before it is joined and decoded: log() of a 20 MiB
// string copies at most that room, not the string (the host adds the marker and the budget).
const log: LuaJsFunction = (L) => {
  const run = runOf(L);
  const host = run.host;
  const parts = strings(L);
  const room = host.logRoom;
  let size = parts.length > 1 ? parts.length - 1 : 0;
  for (const p of parts) size += p.length;
  if (size <= room) {
    host.log(text(join(L, run, parts, TAB, -1)));
    return 0;
  }
  const kept: Uint8Array[] = [];
  let left = room;
  for (let i = 0; i < parts.length && left > 0; i++) {
    // Up to 3 bytes past the room: a character split at the room's edge must show its
    // continuation bytes, or the cut below cannot see it and keeps half of it.
    const p = parts[i]!.length <= left + 3 ? parts[i]! : parts[i]!.subarray(0, left + 3);
    kept.push(p);
    left -= p.length + 1;
  }
  const joined = join(L, run, kept, TAB, -1);
  // Cut at a character boundary, so valid UTF-8 decodes to exactly the bytes kept and the count
  // of bytes cut is exact.
  const line = joined.subarray(0, utf8Boundary(joined, room));
  host.log(text(line), size - line.length);
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

// ---- cache, pass, emit -------------------------------------------------------------------

/**
 * Pushes a response as a table: status, headers (lower-case names; a header sent several
 * times has its values joined by "\n", which emit() splits again), body, and `age` in seconds
 * for a cached one.
 */
function pushResponseTable(L: LuaState, r: ScriptResponse, storedAt: number | null): void {
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
function toResponse(L: LuaState, idx: number, what: string): ScriptResponse {
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

const pushResponseResult = (L: LuaState, value: unknown): number => {
  pushResponseTable(L, value as ScriptResponse, null);
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
const cacheGet: LuaJsFunction = (L) => {
  const key = keyArg(L);
  const run = runOf(L);
  checkCanWait(L, 'cache.get()');
  return answer(L, run, run.host.cacheGet(key), pushCacheValue);
};

/** cache.set(key, value[, ttl]): value a string (or number) or a response table; true when stored. */
const cacheSet: LuaJsFunction = (L) => {
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
const cacheDelete: LuaJsFunction = (L) => {
  const key = keyArg(L);
  const run = runOf(L);
  checkCanWait(L, 'cache.delete()');
  return answer(L, run, run.host.cacheDelete(key), pushBoolean);
};

/** cache.incr(key[, n[, ttl]]): the new value (a missing key counts from 0), nil when the cache is down. */
const cacheIncr: LuaJsFunction = (L) => {
  const key = keyArg(L);
  const by = lua_type(L, 2) <= LUA_TNIL ? 1 : lauxlib.luaL_checkinteger(L, 2);
  const ttl = lua_type(L, 3) <= LUA_TNIL ? undefined : lauxlib.luaL_checknumber(L, 3);
  const run = runOf(L);
  checkCanWait(L, 'cache.incr()');
  return answer(L, run, run.host.cacheIncr(key, by, ttl), pushCount);
};

/** The options table of pass() at `idx`: params (false removes one), body, emit. */
function passOptions(L: LuaState, idx: number): { options: PassOptions; emit: boolean } {
  const t = lua_type(L, idx);
  if (t <= LUA_TNIL) return { options: {}, emit: false };
  if (t !== lua.LUA_TTABLE) return raise(L, 'pass(backend[, options]): options must be a table');
  let params: Record<string, string | null> | undefined;
  if (lua.lua_getfield(L, idx, 'params') === lua.LUA_TTABLE) {
    params = {};
    lua_pushnil(L);
    while (lua.lua_next(L, -2) !== 0) {
      if (lua_type(L, -2) !== LUA_TSTRING) raise(L, 'pass(): params must map names to strings or false');
      const name = text(lua_tolstring(L, -2)!);
      const vt = lua_type(L, -1);
      if (vt === LUA_TBOOLEAN && !lua.lua_toboolean(L, -1)) params[name] = null;
      else if (vt === LUA_TSTRING || vt === LUA_TNUMBER) {
        lua_pushvalue(L, -1);
        params[name] = text(lua_tolstring(L, -1)!);
        lua_pop(L, 1);
      } else raise(L, 'pass(): params must map names to strings or false');
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  let body: Buffer | undefined;
  const bt = lua.lua_getfield(L, idx, 'body');
  if (bt === LUA_TSTRING) body = Buffer.from(lua_tolstring(L, -1)!);
  else if (bt !== LUA_TNIL) raise(L, 'pass(): body must be a string');
  lua_pop(L, 1);
  lua.lua_getfield(L, idx, 'emit');
  const emit = lua.lua_toboolean(L, -1);
  lua_pop(L, 1);
  return { options: { ...(params ? { params } : {}), ...(body ? { body } : {}) }, emit };
}

/**
 * pass(backend[, options]): the backend's response as a table; with `emit = true` the response
 * goes to the client as it arrives and the run ends.
 */
const pass: LuaJsFunction = (L) => {
  const name = text(lauxlib.luaL_checklstring(L, 1));
  const { options, emit: direct } = passOptions(L, 2);
  const run = runOf(L);
  checkCanWait(L, 'pass()');
  if (direct) return hostWait(L, run, run.host.passThrough(name, options), null);
  return hostWait(L, run, run.host.pass(name, options), pushResponseResult);
};

/** emit(response): a response table (from pass() or the cache) becomes this request's response. */
const emit: LuaJsFunction = (L) => {
  lauxlib.luaL_checktype(L, 1, lua.LUA_TTABLE);
  const res = toResponse(L, 1, 'emit()');
  const run = runOf(L);
  // A body in a file ends the run with sendfile(), which waits for a stat.
  if (res.file !== undefined) checkCanWait(L, 'emit()');
  const sent = run.host.emit(res);
  return sent ? hostWait(L, run, sent, null) : 0;
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

/** Adds print, write, flush, log, sleep, stat, sendfile, pass, emit and the `cache` table to the table at the top of the stack. */
export function registerFunctions(L: LuaState): void {
  const functions: Record<string, LuaJsFunction> = { print, write, flush, log, sleep, stat, sendfile, pass, emit };
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
}
