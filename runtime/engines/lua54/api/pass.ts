/** Backend bindings: pass(backend[, options]) and emit(response). */
import type { PassOptions } from '../../host.js';
import { LUA_TBOOLEAN, LUA_TNIL, LUA_TNUMBER, LUA_TSTRING, LUA_TTABLE } from '../capi.js';
import type { Bindings } from '../run.js';
import type { Ptr } from '../wasm.js';
import { responseTables } from './response-table.js';

/** The host functions of this capability, by their names in the sandbox. */
export function bindPass(b: Bindings): Record<string, (L: Ptr) => number> {
  const { api } = b;
  const x = api.x;
  const { pushResult, toResponse } = responseTables(api);

  /** The options table of pass() at `idx`: params (false removes one), body, emit. */
  function passOptions(L: Ptr, idx: number): { options: PassOptions; emit: boolean } {
    const t = x.lua_type(L, idx);
    if (t <= LUA_TNIL) return { options: {}, emit: false };
    if (t !== LUA_TTABLE) return api.raise(L, 'pass(backend[, options]): options must be a table');
    let params: Record<string, string | null> | undefined;
    if (api.getField(L, idx, 'params') === LUA_TTABLE) {
      params = {};
      api.solid(L, -1);
      x.lua_pushnil(L);
      while (x.lua_next(L, -2) !== 0) {
        if (x.lua_type(L, -2) !== LUA_TSTRING) api.raise(L, 'pass(): params must map names to strings or false');
        const name = api.text(L, -2)!;
        const vt = x.lua_type(L, -1);
        if (vt === LUA_TBOOLEAN && !x.lua_toboolean(L, -1)) params[name] = null;
        else if (vt === LUA_TSTRING || vt === LUA_TNUMBER) {
          x.lua_pushvalue(L, -1);
          params[name] = api.text(L, -1)!;
          api.pop(L, 1);
        } else api.raise(L, 'pass(): params must map names to strings or false');
        api.pop(L, 1);
      }
    }
    api.pop(L, 1);
    let body: Buffer | undefined;
    const bt = api.getField(L, idx, 'body');
    if (bt === LUA_TSTRING) body = api.bytes(L, -1)!;
    else if (bt !== LUA_TNIL) api.raise(L, 'pass(): body must be a string');
    api.pop(L, 1);
    api.getField(L, idx, 'emit');
    const emit = x.lua_toboolean(L, -1) !== 0;
    api.pop(L, 1);
    return { options: { ...(params ? { params } : {}), ...(body ? { body } : {}) }, emit };
  }

  return {
    pass(L) {
      x.luaL_checklstring(L, 1, 0);
      const name = api.text(L, 1)!;
      const { options, emit: direct } = passOptions(L, 2);
      const run = b.run(L);
      // Ends the run here (the relay waits for the backend, not the script), without an error:
      // `return pass(...)` is a tail call, over before any next instruction (b.endRun).
      if (direct) {
        run.host.relayExit(name, options);
        return b.endRun(L, run);
      }
      return b.wait(L, run, 'pass()', () => run.host.pass(name, options), pushResult);
    },
    emit(L) {
      x.luaL_checktype(L, 1, LUA_TTABLE);
      const res = toResponse(L, 1, 'emit()');
      const run = b.run(L);
      // A body in a file ends the run with sendfile(), which waits for a stat.
      if (res.file !== undefined) return b.wait(L, run, 'emit()', () => run.host.emit(res) as Promise<never>, null);
      const sent = run.host.emit(res);
      return sent ? b.wait(L, run, 'emit()', () => sent, null) : 0;
    },
  };
}
