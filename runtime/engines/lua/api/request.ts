/**
 * The `request` table's bindings, over host/request.ts. Each request gets an empty table over
 * one shared metatable, and the metatable's __index fills in a field the first time it is read.
 * Most scripts read only a few fields, and decoding every param up front costs. This is the
 * only read-only view of the request, so it is apart from the output and response bindings,
 * which change what the client gets.
 */
import { lua, type LuaJsFunction, type LuaProxy, type LuaState } from 'fengari';
import { jsfn, keyAt, pushRecord, runOf } from '../core.js';
import { checkCanWait, hostWait } from '../control.js';
import { form } from './form.js';
import { makeMetatable } from './metatables.js';

const {
  lua_pushjsfunction,
  lua_pushnil,
  lua_pushstring,
  lua_pushvalue,
  lua_rawset,
} = lua;

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
const formFunction = jsfn(form);

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
    case 'cookies': pushRecord(L, host.cookies); break;
    case 'body': lua_pushjsfunction(L, bodyFunction); break;
    case 'form': lua_pushjsfunction(L, formFunction); break;
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

/** Builds the shared metatable of `request` tables in L. */
export function makeRequestMetatable(L: LuaState): LuaProxy {
  return makeMetatable(L, requestIndex, null);
}
