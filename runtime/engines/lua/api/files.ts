/**
 * The file bindings: stat() and sendfile(), over host/files.ts. They are apart from the others
 * because these are the only calls that take a path, and the host confines that path to
 * files.roots. sendfile() ends the run, and the web server or the host then sends the file.
 */
import { lauxlib, lua, type LuaJsFunction, type LuaState } from 'fengari';
import type { FileInfo } from '../../../files/files.js';
import { STAT_FIELDS, type FileFields } from '../../lighty-attributes.js';
import { raise, runOf, text } from '../core.js';
import { checkCanWait, hostWait } from '../control.js';

const {
  LUA_TNIL,
  LUA_TSTRING,
  lua_createtable,
  lua_pop,
  lua_pushboolean,
  lua_pushinteger,
  lua_pushnil,
  lua_pushstring,
  lua_setfield,
  lua_tolstring,
  lua_type,
} = lua;

/** Pushes what stat() found as a table (nil when nothing is there), with `names`' field names; returns 1. */
export function pushFileTable(L: LuaState, info: FileInfo | null, names: FileFields): number {
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
  lua_setfield(L, -2, names.size);
  lua_pushinteger(L, info.mtime);
  lua_setfield(L, -2, names.mtime);
  lua_pushstring(L, info.etag);
  lua_setfield(L, -2, 'etag');
  lua_pushstring(L, info.content_type);
  lua_setfield(L, -2, names.contentType);
  return 1;
}

const pushFileInfo = (L: LuaState, value: unknown): number => pushFileTable(L, value as FileInfo | null, STAT_FIELDS);

/** stat(path): a table of the file's facts, or nil when it does not exist. */
export const stat: LuaJsFunction = (L) => {
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
export const sendfile: LuaJsFunction = (L) => {
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
