/**
 * require() on fengari: the Lua half (lua-require.ts) made once per state, over the host half
 * here: the compiled module by name (host/modules.ts), pushed as its chunk, and the chain left
 * when its top level ends.
 */
import { lauxlib, lua, type LuaJsFunction, type LuaProxy, type LuaState } from 'fengari';
import { REQUIRE_LUA } from '../../lua-require.js';
import { jsfn, pushEnv, runOf, text } from '../core.js';

const { LUA_OK, lua_call, lua_createtable, lua_toproxy, lua_getfield, lua_gettop, lua_pushjsfunction, lua_setfield, lua_tolstring } = lua;

const open: LuaJsFunction = (L) => {
  const run = runOf(L);
  const name = text(lua_tolstring(L, 1)!);
  const script = run.host.openModule(name);
  // A fengari compiled script pushes its function with `fn` (lua.ts, LuaScript).
  const fn = (script as { fn?: LuaProxy | null }).fn;
  if (typeof fn !== 'function') {
    run.host.closeModule(name);
    throw new Error(`${script.path} was not compiled by this Lua engine`);
  }
  fn(L);
  return 1;
};

const close: LuaJsFunction = (L) => {
  runOf(L).host.closeModule(text(lua_tolstring(L, 1)!));
  return 0;
};

const loadedOf: LuaJsFunction = (L) => {
  const run = runOf(L);
  if (run.loaded === null) {
    lua_createtable(L, 0, 4);
    run.loaded = lua_toproxy(L, -1);
    return 1;
  }
  run.loaded(L);
  return 1;
};

const env: LuaJsFunction = (L) => {
  pushEnv(L, runOf(L));
  return 1;
};

/** Sets `require` in the shared globals table at the top of L (its pcall, error... already there). */
export function registerModules(L: LuaState): void {
  const globals = lua_gettop(L);
  const chunk = Buffer.from(REQUIRE_LUA);
  if (lauxlib.luaL_loadbufferx(L, chunk, chunk.length, '=require', 't') !== LUA_OK) {
    throw new Error(`require does not compile: ${text(lua_tolstring(L, -1)!)}`);
  }
  for (const f of [open, close, loadedOf, env]) lua_pushjsfunction(L, jsfn(f));
  for (const name of ['pcall', 'error', 'type']) lua_getfield(L, globals, name);
  lua_call(L, 7, 1);
  lua_setfield(L, -2, 'require');
}
