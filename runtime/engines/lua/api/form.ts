/**
 * request.form(), over host/form.ts: waits for the parsed form (the run's coroutine yields, so
 * the call looks synchronous) and pushes it as the table README describes: `fields` and
 * `files` by name (a repeated name keeps its last value) and `parts`, every part in body order
 * (a file part is the same table in `files` and in `parts`). Its own file, as its host side is.
 */
import { lua, type LuaJsFunction, type LuaState } from 'fengari';
import { isFile, type FormPart } from '../../host.js';
import { runOf } from '../core.js';
import { checkCanWait, hostWait } from '../control.js';

const {
  lua_createtable,
  lua_gettop,
  lua_pushinteger,
  lua_pushstring,
  lua_pushvalue,
  lua_rawset,
  lua_rawseti,
  lua_setfield,
} = lua;

/** Pushes one part's table: {name, value} or {name, filename, content_type, data, size}. */
function pushPart(L: LuaState, part: FormPart): void {
  if (isFile(part)) {
    lua_createtable(L, 0, 5);
    lua_pushstring(L, part.filename);
    lua_setfield(L, -2, 'filename');
    lua_pushstring(L, part.contentType);
    lua_setfield(L, -2, 'content_type');
    lua_pushstring(L, part.data);
    lua_setfield(L, -2, 'data');
    lua_pushinteger(L, part.data.length);
    lua_setfield(L, -2, 'size');
  } else {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, part.value);
    lua_setfield(L, -2, 'value');
  }
  lua_pushstring(L, part.name);
  lua_setfield(L, -2, 'name');
}

/** Pushes the form table of `parts`. */
const pushForm = (L: LuaState, value: unknown): number => {
  const parts = value as readonly FormPart[];
  lua_createtable(L, 0, 3);
  const form = lua_gettop(L);
  lua_createtable(L, 0, 0);
  const fields = lua_gettop(L);
  lua_createtable(L, 0, 0);
  const files = lua_gettop(L);
  lua_createtable(L, parts.length, 0);
  const list = lua_gettop(L);
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    pushPart(L, part);
    lua_pushstring(L, part.name);
    if (isFile(part)) lua_pushvalue(L, -2);
    else lua_pushstring(L, part.value);
    lua_rawset(L, isFile(part) ? files : fields);
    lua_rawseti(L, list, i + 1);
  }
  lua_setfield(L, form, 'parts');
  lua_setfield(L, form, 'files');
  lua_setfield(L, form, 'fields');
  return 1;
};

/** request.form(): the body parsed as a form (an empty one for another Content-Type). */
export const form: LuaJsFunction = (L) => {
  const run = runOf(L);
  checkCanWait(L, 'request.form()');
  return hostWait(L, run, run.host.form(), pushForm);
};
