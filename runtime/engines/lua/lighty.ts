/**
 * The common part of lighttpd mod_magnet's `lighty` table, so mod_magnet scripts run under
 * Lodestone with few changes:
 * - `lighty.r.req_header[name]` (read-only here), `lighty.r.req_attr[key]` (read-only here; the
 *   common keys, listed in {@link attribute}), `lighty.r.resp_header[name]` (read/write),
 *   `lighty.r.resp_body.set(x)`, `.add(x)`, `.get()`: x is a string or a table of strings
 *   ({filename=...} parts are not supported);
 * - the older API: `lighty.env` (= req_attr), `lighty.request` (= req_header), `lighty.header`
 *   (= resp_header) and `lighty.content` (a table of strings, sent at the end).
 * A script returning 200..599 sets the status as in mod_magnet (the engine returns the code).
 * - `lighty.stat(path)`: mod_magnet's field names over stat() (confined to files.roots).
 * Absent: lighty.RESTART_REQUEST and other return constants, lighty.c, and writing
 * request attributes (rewriting uri.path and the like).
 *
 * The body set with resp_body is kept by the engine and written when the script ends, after
 * anything it printed: set() can then replace it, which appending to the response could not.
 */
import { lauxlib, lua, type LuaJsFunction, type LuaProxy, type LuaState } from 'fengari';
import type { FileInfo } from '../../files/files.js';
import { attribute, LIGHTY_FIELDS } from '../lighty-attributes.js';
import { pushFileTable } from './api/files.js';
import { checkCanWait, hostWait } from './control.js';
import { jsfn, keyAt, raise, runOf, text, type LuaRun } from './core.js';
import { makeMetatable, pushProxyTable } from './api/metatables.js';
import { BIG_STRING, reserve } from './limits.js';

const {
  LUA_TNUMBER,
  LUA_TSTRING,
  LUA_TTABLE,
  lua_createtable,
  lua_gettop,
  lua_pushjsfunction,
  lua_pushnil,
  lua_pushstring,
  lua_pushvalue,
  lua_rawget,
  lua_rawgeti,
  lua_rawlen,
  lua_setfield,
  lua_settop,
  lua_tolstring,
  lua_toproxy,
  lua_type,
} = lua;

const readOnly = (what: string): LuaJsFunction => (L) => raise(L, `${what} is read-only in Lodestone`);

const reqHeaderIndex: LuaJsFunction = (L) => {
  const name = keyAt(L, 2);
  const value = name === null ? undefined : runOf(L).host.headers[name.toLowerCase()];
  if (value === undefined) lua_pushnil(L);
  else lua_pushstring(L, value);
  return 1;
};

const reqAttrIndex: LuaJsFunction = (L) => {
  const key = keyAt(L, 2);
  const value = key === null ? undefined : attribute(runOf(L).host, key);
  if (value === undefined) lua_pushnil(L);
  else if (typeof value === 'number') lua.lua_pushinteger(L, value);
  else lua_pushstring(L, value);
  return 1;
};

/** Appends the string, number or table of strings at `idx` to `out`. */
function collect(L: LuaState, idx: number, out: Uint8Array[]): void {
  const t = lua_type(L, idx);
  if (t === LUA_TSTRING || t === LUA_TNUMBER) {
    out.push(lua_tolstring(L, idx)!);
    return;
  }
  if (t !== LUA_TTABLE) raise(L, 'resp_body expects a string or a table of strings');
  const n = lua_rawlen(L, idx);
  for (let i = 1; i <= n; i++) {
    const e = lua_rawgeti(L, idx, i);
    if (e !== LUA_TSTRING && e !== LUA_TNUMBER) raise(L, `resp_body part ${i}: only strings are supported`);
    out.push(lua_tolstring(L, -1)!);
    lua.lua_pop(L, 1);
  }
}

const bodyAdd: LuaJsFunction = jsfn((L) => {
  const run = runOf(L);
  collect(L, 1, (run.lightyBody ??= []));
  return 0;
});

const bodySet: LuaJsFunction = jsfn((L) => {
  const run = runOf(L);
  run.lightyBody = [];
  if (lua_type(L, 1) > 0) collect(L, 1, run.lightyBody);
  return 0;
});

/**
 * resp_body.get(): the parts joined, their size reserved first (add() keeps references, so a
 * body of many references to one big string is small until joined here; issue 16, item 7).
 */
const bodyGet: LuaJsFunction = jsfn((L) => {
  const run = runOf(L);
  const parts = run.lightyBody ?? [];
  let size = 0;
  for (const part of parts) size += part.length;
  if (size >= BIG_STRING) reserve(L, run, size);
  lua_pushstring(L, Buffer.concat(parts, size));
  return 1;
});

/**
 * lighty.stat(path): mod_magnet's names for the facts stat() gives (st_size, st_mtime, etag,
 * content-type, is_file, is_dir), confined to files.roots like stat().
 */
const lightyStat: LuaJsFunction = jsfn((L) => {
  const path = text(lauxlib.luaL_checklstring(L, 1));
  const run = runOf(L);
  checkCanWait(L, 'lighty.stat()');
  return hostWait(L, run, run.host.stat(path), (L1, value) => pushFileTable(L1, value as FileInfo | null, LIGHTY_FIELDS));
});

/** Builds `lighty` tables for one lua_State. */
export class Lighty {
  private readonly reqHeader: LuaProxy;
  private readonly reqAttr: LuaProxy;

  constructor(
    L: LuaState,
    /** The response headers metatable of the script API, shared with resp_header. */
    private readonly respHeader: LuaProxy,
  ) {
    this.reqHeader = makeMetatable(L, reqHeaderIndex, readOnly('lighty.r.req_header'));
    this.reqAttr = makeMetatable(L, reqAttrIndex, readOnly('lighty.r.req_attr'));
  }

  /** Pushes a new `lighty` table for `run` (made on the script's first use of `lighty`). */
  push(L: LuaState, run: LuaRun): void {
    lua_createtable(L, 0, 5);
    const lighty = lua_gettop(L);
    lua_createtable(L, 0, 4);
    const r = lighty + 1;
    const fields: Array<[LuaProxy, string, string]> = [
      [this.reqHeader, 'req_header', 'request'],
      [this.reqAttr, 'req_attr', 'env'],
      [this.respHeader, 'resp_header', 'header'],
    ];
    for (const [meta, name, old] of fields) {
      pushProxyTable(L, meta);
      lua_pushvalue(L, -1);
      lua_setfield(L, lighty, old);
      lua_setfield(L, r, name);
    }
    lua_createtable(L, 0, 3);
    for (const [name, f] of [['set', bodySet], ['add', bodyAdd], ['get', bodyGet]] as const) {
      lua_pushjsfunction(L, f);
      lua_setfield(L, -2, name);
    }
    lua_setfield(L, r, 'resp_body');
    lua_setfield(L, lighty, 'r');
    lua_pushjsfunction(L, lightyStat);
    lua_setfield(L, lighty, 'stat');
    run.lighty = lua_toproxy(L, lighty);
  }

  /** After a successful run: writes resp_body, then the old API's lighty.content. */
  finish(L: LuaState, run: LuaRun): void {
    if (run.lighty === null) return;
    const parts = run.lightyBody ?? [];
    const top = lua_gettop(L);
    try {
      run.lighty(L);
      lua_pushstring(L, 'content');
      if (lua_rawget(L, -2) === LUA_TTABLE) {
        const n = lua_rawlen(L, -1);
        for (let i = 1; i <= n; i++) {
          const t = lua_rawgeti(L, -1, i);
          if (t === LUA_TSTRING || t === LUA_TNUMBER) parts.push(lua_tolstring(L, -1)!);
          lua.lua_pop(L, 1);
        }
      }
    } finally {
      lua_settop(L, top);
    }
    for (const part of parts) run.host.write(part);
  }
}
