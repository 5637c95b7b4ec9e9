/**
 * Control flow between a script and the host, on the C API: async host calls (a yield the
 * driver turns into an await) and the script's own ways to catch errors and run coroutines,
 * wrapped so that neither swallows what belongs to the host:
 * - pcall/xpcall call lbaselib's own and re-raise when the run has a fatal error (a limit is
 *   not the script's to catch); xpcall's message handler is skipped for a fatal error, since
 *   an error raised from the count hook runs the handler with hooks off, where a looping
 *   handler could never be stopped;
 * - coroutine.resume/wrap pass a host call's yield made inside the script's coroutine up to
 *   the driver, then resume that coroutine with the host's result, so `sleep()` inside a
 *   coroutine looks synchronous there too;
 * - load compiles text only (never a binary chunk), into the caller's request globals.
 */
import { LUA_MASKCOUNT, LUA_MULTRET, LUA_OK, LUA_TFUNCTION, LUA_TNONE, LUA_TSTRING, LUA_YIELD, WAIT, upvalueIndex, type LuaApi } from './capi.js';
import { active, type Bindings, type PushResult, type Run54 } from './run.js';
import type { Ptr } from './wasm.js';

const noop = (): void => {};

/** The host functions of this file, by the name the sandbox gives them. */
export interface ControlFunctions {
  pcall: Ptr;
  xpcall: Ptr;
  resume: Ptr;
  wrap: Ptr;
  load: Ptr;
}

/** Builds the async-call helper and the control functions of one module. */
export function makeControl(api: LuaApi, hook: Ptr, pushChunk: Bindings['pushChunk'], assignedOf: Bindings['assignedOf']): { b: Bindings; fns: ControlFunctions } {
  const x = api.x;
  const m = api.module;
  const fatal = (): boolean => active.run?.host.fatal != null;

  const current = (L: Ptr): Run54 => active.run ?? api.raise(L, 'no request is running');
  const run = (L: Ptr): Run54 => {
    const r = current(L);
    // A run that has ended (endRun: the script goes on to its next instruction, in a caller
    // or a coroutine's resumer that the count hook has not reached yet) acts on nothing more.
    if (r.host.fatal) return raiseFatal(L);
    if (r.sharing === 0) return r;
    r.shareRefusals++;
    return api.raise(L, 'a module loading to be shared cannot use the request');
  };

  /** Raises the run's fatal error again (its message; the host keeps the error itself). */
  const raiseFatal = (L: Ptr): never => {
    api.push(L, active.run?.host.fatal?.message ?? 'stopped');
    return api.raiseTop(L);
  };

  // ---- async host calls ----------------------------------------------------------------------

  const settleK = m.addFunction((L: Ptr): number => {
    const r = run(L);
    const settled = r.settled;
    const push = r.push;
    r.settled = null;
    r.push = null;
    if (settled === null) return api.raise(L, 'host call resumed without a result');
    if (!settled.ok) {
      const err = settled.error;
      return api.raise(L, err instanceof Error ? err.message : String(err));
    }
    return push ? api.guard((L1) => push(L1, settled.value))(L) : 0;
  }, 'iiii');

  // The count hook raises the run's fatal error; at a count of 1 it does so before the next
  // instruction. Set on the calling thread and the run's main one: a coroutine's tail call
  // ends the coroutine, and its resumer must not run on for up to HOOK_COUNT instructions.
  // Both threads belong to this run alone, so the count dies with them.
  const endRun = (L: Ptr, r: Run54): number => {
    x.lua_sethook(L, hook, LUA_MASKCOUNT, 1);
    if (L !== r.main) x.lua_sethook(r.main, hook, LUA_MASKCOUNT, 1);
    return 0;
  };

  api.waitK = settleK;

  const pushEnv = (L: Ptr, r: Run54): void => {
    x.lua_rawgeti(L, -1001000, BigInt(r.envRef));
  };

  const b: Bindings = {
    api,
    run,
    current,
    endRun,
    pushEnv,
    pushChunk,
    assignedOf,
    wait(L: Ptr, r: Run54, what: string, promise: () => Promise<unknown>, push: PushResult | null): number {
      if (!x.lua_isyieldable(L)) {
        return api.raise(L, `${what} cannot wait here (inside a metamethod, an iterator, a sort or gsub callback)`);
      }
      r.pending = promise();
      r.push = push;
      r.waitThread = L;
      r.host.waitLocator = r;
      // The guard around the host function yields (see WAIT), past its own try/catch.
      return WAIT;
    },
  };

  // ---- pcall / xpcall -------------------------------------------------------------------------
  // As lbaselib's, with a continuation of our own: an error caught after a yield inside the
  // protected call is handed to the continuation, never back to the C function that called
  // lua_pcallk, so the fatal check must live in the continuation.

  function finishPcall(L: Ptr, status: number, extra: number): number {
    if (status !== LUA_OK && status !== LUA_YIELD) {
      if (fatal()) return raiseFatal(L);
      x.lua_pushboolean(L, 0);
      x.lua_pushvalue(L, -2);
      return 2;
    }
    return x.lua_gettop(L) - extra;
  }
  const finishPcallK = m.addFunction((L: Ptr, status: number, extra: number): number => finishPcall(L, status, extra), 'iiii');

  const pcall = api.cfunction((L) => {
    x.luaL_checkany(L, 1);
    x.lua_pushboolean(L, 1);
    x.lua_rotate(L, 1, 1);
    return finishPcall(L, x.lua_pcallk(L, x.lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finishPcallK), 0);
  });

  /**
   * The message handler xpcall installs: the script's handler (upvalue 1) runs for the
   * script's own errors only; a fatal error passes through untouched.
   */
  const handler = api.cfunction((L) => {
    if (fatal()) return 1;
    x.lua_pushvalue(L, upvalueIndex(1));
    x.lua_rotate(L, 1, 1);
    x.lua_callk(L, x.lua_gettop(L) - 1, 1, 0, 0);
    return 1;
  });

  const xpcall = api.cfunction((L) => {
    const n = x.lua_gettop(L);
    x.luaL_checktype(L, 2, LUA_TFUNCTION);
    x.lua_pushvalue(L, 2);
    x.lua_pushcclosure(L, handler, 1);
    x.lua_copy(L, -1, 2);
    x.lua_settop(L, -2);
    x.lua_pushboolean(L, 1);
    x.lua_pushvalue(L, 1);
    x.lua_rotate(L, 3, 2);
    return finishPcall(L, x.lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finishPcallK), 2);
  });

  // ---- coroutines -----------------------------------------------------------------------------

  const nres = x.malloc(4);

  /**
   * Resumes `co` with `narg` values from L's top; returns how many results it moved onto L, or
   * -1 with the error value on L's top. A host call's yield inside `co` makes L yield too (up
   * to the driver); `k` resumes `co` when the host's result is in.
   */
  function resumeCo(L: Ptr, co: Ptr, narg: number, k: Ptr): number {
    if (!x.lua_checkstack(co, narg)) {
      api.push(L, 'too many arguments to resume');
      return -1;
    }
    const status0 = x.lua_status(co);
    if (status0 === LUA_OK && x.lua_gettop(co) === 0) {
      api.push(L, 'cannot resume dead coroutine');
      return -1;
    }
    if (status0 !== LUA_OK && status0 !== LUA_YIELD) {
      api.push(L, 'cannot resume dead coroutine');
      return -1;
    }
    x.lua_xmove(L, co, narg);
    const status = x.lua_resume(co, L, narg, nres);
    const r = active.run;
    if (status === LUA_YIELD && r?.pending) {
      if (!x.lua_isyieldable(L)) {
        r.pending.catch(noop);
        r.pending = null;
        r.push = null;
        return api.raise(L, 'a coroutine waiting for the host cannot be resumed here');
      }
      return x.lua_yieldk(L, 0, co, k);
    }
    if (status === LUA_OK || status === LUA_YIELD) {
      const n = api.module.heap.readInt32LE(nres);
      if (!x.lua_checkstack(L, n + 1)) {
        x.lua_settop(co, -n - 1);
        api.push(L, 'too many results to resume');
        return -1;
      }
      x.lua_xmove(co, L, n);
      return n;
    }
    x.lua_xmove(co, L, 1);
    return -1;
  }

  function finishResume(L: Ptr, r: number): number {
    if (r < 0) {
      if (fatal()) return raiseFatal(L);
      x.lua_pushboolean(L, 0);
      x.lua_rotate(L, -2, 1);
      return 2;
    }
    x.lua_pushboolean(L, 1);
    x.lua_rotate(L, -(r + 1), 1);
    return r + 1;
  }

  // A continuation's context is the coroutine pointer (lua_KContext is intptr_t).
  const resumeK: Ptr = m.addFunction((L: Ptr, _status: number, co: Ptr): number => finishResume(L, resumeCo(L, co, 0, resumeK)), 'iiii');

  const resume = api.cfunction((L) => {
    const co = x.lua_tothread(L, 1);
    if (co === 0) return x.luaL_typeerror(L, 1, api.name('thread'));
    return finishResume(L, resumeCo(L, co, x.lua_gettop(L) - 1, resumeK));
  });

  function finishWrap(L: Ptr, r: number): number {
    if (r >= 0) return r;
    if (fatal()) return raiseFatal(L);
    if (x.lua_type(L, -1) === LUA_TSTRING) {
      x.luaL_where(L, 1);
      x.lua_rotate(L, -2, 1);
      x.lua_concat(L, 2);
    }
    return api.raiseTop(L);
  }

  const wrapK: Ptr = m.addFunction((L: Ptr, _status: number, co: Ptr): number => finishWrap(L, resumeCo(L, co, 0, wrapK)), 'iiii');

  const wrapped = api.cfunction((L) => {
    const co = x.lua_tothread(L, upvalueIndex(1));
    return finishWrap(L, resumeCo(L, co, x.lua_gettop(L), wrapK));
  });

  const wrap = api.cfunction((L) => {
    x.luaL_checktype(L, 1, LUA_TFUNCTION);
    const co = x.lua_newthread(L);
    x.lua_pushvalue(L, 1);
    x.lua_xmove(L, co, 1);
    x.lua_pushcclosure(L, wrapped, 1);
    return 1;
  });

  // ---- load -----------------------------------------------------------------------------------

  const load = api.cfunction((L) => {
    if (x.lua_type(L, 1) !== LUA_TSTRING) {
      x.lua_pushnil(L);
      api.push(L, 'load: only a string chunk can be loaded');
      return 2;
    }
    const chunk = api.view(L, 1)!;
    const name = x.lua_type(L, 2) === LUA_TSTRING ? api.view(L, 2)!.ptr : chunk.ptr;
    // Mode "t": a binary chunk (which PUC Lua would trust) is refused by the loader itself.
    if (x.luaL_loadbufferx(L, chunk.ptr, chunk.len, name, api.name('t')) !== LUA_OK) {
      x.lua_pushnil(L);
      x.lua_rotate(L, -2, 1);
      return 2;
    }
    if (x.lua_type(L, 4) !== LUA_TNONE) x.lua_pushvalue(L, 4);
    else pushEnv(L, run(L));
    if (x.lua_setupvalue(L, -2, 1) === 0) x.lua_settop(L, -2);
    return 1;
  });

  return { b, fns: { pcall, xpcall, resume, wrap, load } };
}

export { LUA_MULTRET };
