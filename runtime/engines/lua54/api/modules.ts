/**
 * The host half of require() on Lua 5.4 (the Lua half is lua-require.ts, and the shared
 * modules' shared-modules-lua.ts): the compiled module by name (host/modules.ts), pushed as its
 * chunk loaded in the run's state, and the chain left when its top level ends.
 */
import { LUA_REGISTRYINDEX, LUA_TTABLE, VIEWS } from '../capi.js';
import type { Bindings, Run54 } from '../run.js';
import type { Ptr } from '../wasm.js';

/** The host functions of this capability, by their names in the sandbox. */
export function bindModules(b: Bindings): Record<string, (L: Ptr) => number> {
  const { api } = b;
  const x = api.x;

  // Pushes the run's table of modules required so far, made on its first require (run.ts: loadedRef).
  const pushLoaded = (L: Ptr, run: Run54): void => {
    if (run.loadedRef === 0) {
      x.lua_createtable(L, 0, 4);
      run.loadedRef = x.luaL_ref(L, LUA_REGISTRYINDEX);
    }
    x.lua_rawgeti(L, LUA_REGISTRYINDEX, BigInt(run.loadedRef));
  };

  return {
    module_open(L) {
      const run = b.current(L);
      const name = api.text(L, 1)!;
      const script = run.host.openModule(name);
      try {
        b.pushChunk(L, run, script);
      } catch (err) {
        run.host.closeModule(name);
        throw err;
      }
      return 1;
    },
    module_loaded(L) {
      pushLoaded(L, b.current(L));
      return 1;
    },
    module_close(L) {
      b.current(L).host.closeModule(api.text(L, 1)!);
      return 0;
    },
    // require's one host call (lua-require.ts): the run's serial number, its globals (nil inside
    // a shared module's load, which has its own) and the module's chunk in the run's state, or
    // nil; the chain is not entered (a shared module's top level does not run again).
    module_lookup(L) {
      const run = b.current(L);
      x.lua_pushinteger(L, BigInt(run.serial));
      if (run.sharing === 0) b.pushEnv(L, run);
      else x.lua_pushnil(L);
      const script = run.host.findModule(api.text(L, 1)!);
      if (script === null) return 2;
      try {
        b.pushChunk(L, run, script);
      } catch {
        // Bad bytecode: require's other path reports it.
        return 2;
      }
      return 3;
    },
    // The names of the upvalues module `name`'s functions assign, as a set; nil for "any".
    module_assigned(L) {
      const run = b.current(L);
      const script = run.host.findModule(api.text(L, 1)!);
      if (script === null) return 0;
      const names = b.assignedOf(L, run, script);
      if (names === null) return 0;
      x.lua_createtable(L, 0, names.length);
      for (const name of names) {
        api.push(L, name);
        x.lua_pushboolean(L, 1);
        x.lua_rawset(L, -3);
      }
      return 1;
    },
    // Enters (depth > 0) or leaves a shared module's load; returns the refusals so far.
    module_share(L) {
      const run = b.current(L);
      run.sharing = Number(x.luaL_checkinteger(L, 1));
      x.lua_pushinteger(L, BigInt(run.shareRefusals));
      return 1;
    },
    /** Called once by the sandbox with the shared modules' weak table of clean proxies. */
    views_setup(L) {
      x.luaL_checktype(L, 1, LUA_TTABLE);
      x.lua_settop(L, 1);
      api.setField(L, LUA_REGISTRYINDEX, VIEWS);
      return 0;
    },
  };
}
