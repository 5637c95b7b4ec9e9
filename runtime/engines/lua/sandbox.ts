/**
 * The engine's one lua_State and the sandbox every request runs in.
 *
 * A request's chunk gets a fresh, empty globals table (its `_ENV`) whose metatable reads the
 * shared safe globals G: the base functions that cannot reach outside (no dofile, loadfile,
 * package, collectgarbage, io, debug, package, fengari's `js`), the script API, and the safe
 * libraries as read-only proxies. G itself is out of reach (the env metatable is hidden), so
 * what a request assigns lands in its own table and dies with it. G's own __index makes the
 * per-request `request`, `lighty` and `_G` on first read; `response` is one read-only table
 * for all requests (lua/api/response.ts).
 */
import { lauxlib, lua, lualib, type LuaJsFunction, type LuaProxy, type LuaState } from 'fengari';
import { S, jsfn, keyAt, pushEnv, raise, running, runOf, setFunction } from './core.js';
import { makeApiMetatables, pushProxyTable, pushResponse, registerFunctions } from './api/index.js';
import { pcall, xpcall } from './control.js';
import { Lighty } from './lighty.js';
import { registerModules } from './api/modules.js';
import { HOOK_COUNT, limitHook, reserve } from './limits.js';
import { installGuards } from './guards.js';
import { openLibraries, readOnlyTables } from './libs.js';

const {
  LUA_MASKCOUNT,
  LUA_OK,
  LUA_REGISTRYINDEX,
  LUA_RIDX_GLOBALS,
  LUA_TNIL,
  LUA_TNONE,
  LUA_TSTRING,
  LUA_TTABLE,
  lua_createtable,
  lua_getfield,
  lua_insert,
  lua_pop,
  lua_pushboolean,
  lua_pushnil,
  lua_pushstring,
  lua_pushvalue,
  lua_rawset,
  lua_setfield,
  lua_setmetatable,
  lua_settop,
  lua_tolstring,
  lua_topointer,
  lua_toproxy,
  lua_type,
} = lua;

/** Base functions scripts get unchanged. pcall, xpcall, rawset, setmetatable, load and tostring are replaced below. */
const BASE = [
  'assert', 'error', 'getmetatable', 'ipairs', 'next', 'pairs', 'rawequal', 'rawget', 'rawlen',
  'select', 'tonumber', 'type', '_VERSION',
];

/**
 * tostring, with a fast path for strings. fengari's looks for a __tostring metamethod first,
 * and for a string that means making and hashing the Lua string "__tostring" on every call
 * (strings have a metatable; numbers, booleans and nil have none, so they are cheap already):
 * a third of the cost of a `sort(keys, function(a, b) return tostring(a) < tostring(b) end)`.
 * The answer is the string itself either way: the string metatable is protected
 * (`__metatable`), so no script can give it a __tostring.
 */
const tostring: LuaJsFunction = (L) => {
  lauxlib.luaL_checkany(L, 1);
  if (lua_type(L, 1) === LUA_TSTRING) lua_settop(L, 1);
  else lauxlib.luaL_tolstring(L, 1);
  return 1;
};

/** rawset, refusing the shared read-only library tables. */
const rawset: LuaJsFunction = (L) => {
  lauxlib.luaL_checktype(L, 1, LUA_TTABLE);
  lauxlib.luaL_checkany(L, 2);
  lauxlib.luaL_checkany(L, 3);
  if (readOnlyTables.has(lua_topointer(L, 1)!)) return raise(L, 'attempt to modify a read-only table');
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 1;
};

/**
 * setmetatable, refusing a metatable with __gc as Lua 5.4's sandbox does (a finalizer there
 * runs in whichever request the collector runs in). fengari never calls __gc; refusing it here
 * too keeps scripts portable between the two engines. Otherwise lbaselib's own.
 */
const setmetatable: LuaJsFunction = (L) => {
  const t = lua_type(L, 2);
  lauxlib.luaL_checktype(L, 1, LUA_TTABLE);
  if (t !== LUA_TNIL && t !== LUA_TTABLE) return lauxlib.luaL_argerror(L, 2, 'nil or table expected');
  if (t === LUA_TTABLE) {
    lua_pushstring(L, '__gc');
    const gc = lua.lua_rawget(L, 2);
    lua_pop(L, 1);
    if (gc !== LUA_TNIL) return raise(L, '__gc is not available: a finalizer would run during another request');
  }
  if (lua.lua_getmetatable(L, 1)) {
    lua_pushstring(L, '__metatable');
    if (lua.lua_rawget(L, -2) !== LUA_TNIL) return raise(L, 'cannot change a protected metatable');
    lua_pop(L, 2);
  }
  lua_settop(L, 2);
  lua_setmetatable(L, 1);
  return 1;
};

/** load: source text only (never bytecode), in the caller's request env unless one is given. */
const load: LuaJsFunction = (L) => {
  if (lua_type(L, 1) !== LUA_TSTRING) {
    lua_pushnil(L);
    lua_pushstring(L, 'load: only a string chunk can be loaded');
    return 2;
  }
  const chunk = lua_tolstring(L, 1)!;
  const name = lauxlib.luaL_optlstring(L, 2, chunk)!;
  // Compiling runs in JS, outside the hook, and fengari's compiled form takes about 30x the
  // source in heap (lua.ts, HEAP_PER_SOURCE_BYTE): reserved before the parser starts.
  reserve(L, runOf(L), chunk.length * 30);
  if (lauxlib.luaL_loadbufferx(L, chunk, chunk.length, name, 't') !== LUA_OK) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  if (lua_type(L, 4) !== LUA_TNONE) lua_pushvalue(L, 4);
  else pushEnv(L, runOf(L));
  if (!lua.lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
  return 1;
};

/**
 * A JS exception inside fengari (not from our functions, which convert theirs) becomes a Lua
 * error instead of a broken state; with a fatal error pending, it is that error.
 */
const nativeError: LuaJsFunction = (L) => {
  const err = lua.lua_touserdata(L, -1);
  const fatal = running.current?.host.fatal;
  lua_pushstring(L, fatal ? fatal.message : err instanceof Error ? `${err.name}: ${err.message}` : String(err));
  return 1;
};

/** The engine's Lua state and what each request needs from it. */
export interface Sandbox {
  readonly L: LuaState;
  /** Pushes a new request environment: an empty table over the shared globals. */
  readonly envMeta: LuaProxy;
  readonly lighty: Lighty;
}

/** Copies the selected base functions into G (at the top), over the base globals below it. */
function addBase(L: LuaState): void {
  for (const name of BASE) {
    lua_getfield(L, -2, name);
    lua_setfield(L, -2, name);
  }
  const own: Record<string, LuaJsFunction> = { pcall, xpcall, rawset, setmetatable, load: jsfn(load) };
  for (const name in own) setFunction(L, name, own[name]!);
  // tostring also replaces the base library's own, where Lua finds a function's name for an
  // error raised through pcall ("bad argument #1 to 'tostring'"), so messages stay the same.
  lua.lua_pushjsfunction(L, tostring);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, 'tostring');
  lua_setfield(L, -2, 'tostring');
}

/** Creates the state, the shared globals and the metatables requests use. */
export function createSandbox(): Sandbox {
  installGuards();
  const L = lauxlib.luaL_newstate();
  lua.lua_atnativeerror(L, nativeError);
  // Threads copy the hook of the thread that creates them: every request and coroutine counts.
  lua.lua_sethook(L, limitHook, LUA_MASKCOUNT, HOOK_COUNT);

  lauxlib.luaL_requiref(L, '_G', lualib.luaopen_base, false);
  lua_createtable(L, 0, 32);
  addBase(L);
  registerFunctions(L);
  openLibraries(L);
  registerModules(L);
  const metas = makeApiMetatables(L);
  const lighty = new Lighty(L, metas.headers);
  pushResponse(L, metas.headers);
  lua_setfield(L, -2, 'response');

  const lazyGlobal: LuaJsFunction = (L1) => {
    const key = keyAt(L1, 2);
    const run = running.current;
    if (key === null || run === null) {
      lua_pushnil(L1);
      return 1;
    }
    if (key === '_G') pushEnv(L1, run);
    else if (key === 'request') pushProxyTable(L1, metas.request);
    else if (key === 'lighty') lighty.push(L1, run);
    else {
      lua_pushnil(L1);
      return 1;
    }
    // Keep it in the request's env: later reads are plain table reads.
    pushEnv(L1, run);
    lua_pushvalue(L1, 2);
    lua_pushvalue(L1, -3);
    lua_rawset(L1, -3);
    lua_pop(L1, 1);
    return 1;
  };
  lua_createtable(L, 0, 1);
  setFunction(L, S.__index, jsfn(lazyGlobal));
  lua_setmetatable(L, -2);

  lua_createtable(L, 0, 2);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, S.__index);
  lua_pushboolean(L, false);
  lua_setfield(L, -2, S.__metatable);
  const envMeta = lua_toproxy(L, -1);
  lua_settop(L, 0);

  // The real globals (base library: dofile, load...) are never given to a script; empty them
  // anyway so that a chunk's unused _ENV upvalue holds nothing.
  lua_createtable(L, 0, 0);
  lua.lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  return { L, envMeta, lighty };
}
