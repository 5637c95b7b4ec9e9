/**
 * The host half of require() on Lua 5.4 (the Lua half is lua-require.ts): the compiled module
 * by name (host/modules.ts), pushed as its chunk loaded in the run's state, and the chain left
 * when its top level ends.
 */
import { LUA_REGISTRYINDEX } from '../capi.js';
import type { Bindings } from '../run.js';
import type { Ptr } from '../wasm.js';

/** The host functions of this capability, by their names in the sandbox. */
export function bindModules(b: Bindings): Record<string, (L: Ptr) => number> {
  const { api } = b;
  return {
    module_open(L) {
      const run = b.run(L);
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
    // The run's table of modules required so far, made on its first require (run.ts: loadedRef).
    module_loaded(L) {
      const run = b.run(L);
      const x = api.x;
      if (run.loadedRef === 0) {
        x.lua_createtable(L, 0, 4);
        run.loadedRef = x.luaL_ref(L, LUA_REGISTRYINDEX);
      }
      x.lua_rawgeti(L, LUA_REGISTRYINDEX, BigInt(run.loadedRef));
      return 1;
    },
    module_close(L) {
      b.run(L).host.closeModule(api.text(L, 1)!);
      return 0;
    },
  };
}
