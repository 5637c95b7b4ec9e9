/**
 * The common part of mod_magnet's `lighty` table (README, "lighty compatibility"; the same
 * surface as the fengari engine's lua/lighty.ts): the tables themselves are built in Lua by the
 * sandbox (sandbox-lua.ts), these are the host functions behind them, and {@link finishLighty}
 * writes resp_body and the old API's `lighty.content` after a run that succeeded.
 */
import type { FileInfo } from '../../../files/files.js';
import { attribute, LIGHTY_FIELDS } from '../../lighty-attributes.js';
import { LUA_REGISTRYINDEX, LUA_TNUMBER, LUA_TSTRING, LUA_TTABLE } from '../capi.js';
import type { Bindings, Run54 } from '../run.js';
import { pushFileTable } from './files.js';
import type { Ptr } from '../wasm.js';

/** The host functions of this capability, by their names in the sandbox. */
export function bindLighty(b: Bindings): Record<string, (L: Ptr) => number> {
  const { api } = b;
  const x = api.x;

  /** Appends the string, number or table of strings at `idx` to `out`. */
  function collect(L: Ptr, idx: number, out: Uint8Array[]): void {
    const t = x.lua_type(L, idx);
    if (t === LUA_TSTRING || t === LUA_TNUMBER) {
      out.push(api.bytes(L, idx)!);
      return;
    }
    if (t !== LUA_TTABLE) api.raise(L, 'resp_body expects a string or a table of strings');
    api.solid(L, idx);
    const n = x.lua_rawlen(L, idx);
    for (let i = 1; i <= n; i++) {
      const e = x.lua_rawgeti(L, idx, BigInt(i));
      if (e !== LUA_TSTRING && e !== LUA_TNUMBER) api.raise(L, `resp_body part ${i}: only strings are supported`);
      out.push(api.bytes(L, -1)!);
      api.pop(L, 1);
    }
  }

  const pushStat = (L: Ptr, value: unknown): number => pushFileTable(b, L, value as FileInfo | null, LIGHTY_FIELDS);

  return {
    lighty_req_header(L) {
      const name = x.lua_type(L, 2) === LUA_TSTRING ? api.text(L, 2) : null;
      const value = name === null ? undefined : b.run(L).host.headers[name.toLowerCase()];
      if (value === undefined) x.lua_pushnil(L);
      else api.push(L, value);
      return 1;
    },
    lighty_req_attr(L) {
      const key = x.lua_type(L, 2) === LUA_TSTRING ? api.text(L, 2) : null;
      const value = key === null ? undefined : attribute(b.run(L).host, key);
      if (value === undefined) x.lua_pushnil(L);
      else if (typeof value === 'number') x.lua_pushinteger(L, BigInt(value));
      else api.push(L, value);
      return 1;
    },
    lighty_body_add(L) {
      const run = b.run(L);
      collect(L, 1, (run.lightyBody ??= []));
      return 0;
    },
    lighty_body_set(L) {
      const run = b.run(L);
      run.lightyBody = [];
      if (x.lua_type(L, 1) > 0) collect(L, 1, run.lightyBody);
      return 0;
    },
    lighty_body_get(L) {
      const parts = b.run(L).lightyBody ?? [];
      api.push(L, Buffer.concat(parts));
      return 1;
    },
    lighty_stat(L) {
      x.luaL_checklstring(L, 1, 0);
      const path = api.text(L, 1)!;
      const run = b.run(L);
      return b.wait(L, run, 'lighty.stat()', () => run.host.stat(path), pushStat);
    },
    /** Keeps the run's `lighty` table (argument 1) for {@link finishLighty}. */
    lighty_keep(L) {
      const run = b.run(L);
      x.lua_pushvalue(L, 1);
      run.lightyRef = x.luaL_ref(L, LUA_REGISTRYINDEX);
      return 0;
    },
  };
}

/** After a successful run: writes resp_body, then the old API's lighty.content. */
export function finishLighty(b: Bindings, L: Ptr, run: Run54): void {
  if (run.lightyRef === 0) return;
  const { api } = b;
  const x = api.x;
  const parts = run.lightyBody ?? [];
  const top = x.lua_gettop(L);
  x.lua_rawgeti(L, LUA_REGISTRYINDEX, BigInt(run.lightyRef));
  api.push(L, 'content');
  if (x.lua_rawget(L, -2) === LUA_TTABLE) {
    api.solid(L, -1);
    const n = x.lua_rawlen(L, -1);
    for (let i = 1; i <= n; i++) {
      const t = x.lua_rawgeti(L, -1, BigInt(i));
      if (t === LUA_TSTRING || t === LUA_TNUMBER) parts.push(api.bytes(L, -1)!);
      api.pop(L, 1);
    }
  }
  x.lua_settop(L, top);
  x.luaL_unref(L, LUA_REGISTRYINDEX, run.lightyRef);
  run.lightyRef = 0;
  for (const part of parts) run.host.write(part);
}
