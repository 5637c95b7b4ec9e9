/**
 * Control flow between a script and the host: async host calls (a yield the driver turns into
 * an await), and the script's own ways to catch errors and run coroutines, wrapped so that
 * neither swallows what belongs to the host:
 * - pcall/xpcall re-raise when the run has a fatal error (a limit is not the script's to catch);
 * - coroutine.resume/wrap pass a host call's yield made inside the script's coroutine up to the
 *   driver, then resume that coroutine with the host's result, so `sleep()` inside a coroutine
 *   looks synchronous there too instead of surfacing as a `coroutine.yield()`.
 */
import { lauxlib, lua, type LuaKFunction, type LuaState } from 'fengari';
import { raise, raiseFatal, running, runOf, type LuaRun, type PushResult } from './core.js';

const {
  LUA_MULTRET,
  LUA_OK,
  LUA_TFUNCTION,
  LUA_TSTRING,
  LUA_YIELD,
  lua_checkstack,
  lua_concat,
  lua_error,
  lua_gettop,
  lua_insert,
  lua_isyieldable,
  lua_newthread,
  lua_pcallk,
  lua_pop,
  lua_pushboolean,
  lua_pushcclosure,
  lua_pushstring,
  lua_pushvalue,
  lua_resume,
  lua_rotate,
  lua_status,
  lua_tothread,
  lua_type,
  lua_upvalueindex,
  lua_xmove,
  lua_yieldk,
} = lua;

const noop = (): void => {};

/** True when the run must stop: its errors are re-raised past the script's handlers. */
function fatal(): boolean {
  return running.current?.host.fatal != null;
}

// ---- async host calls ------------------------------------------------------------------------

/** Continuation of a host call: the driver settled its promise, hand the result to Lua. */
const settleK: LuaKFunction<null> = (L) => {
  const run = runOf(L);
  const settled = run.settled;
  const push = run.push;
  run.settled = null;
  run.push = null;
  if (settled === null) return raise(L, 'host call resumed without a result');
  if (!settled.ok) {
    const err = settled.error;
    return raise(L, err instanceof Error ? err.message : String(err));
  }
  return push ? push(L, settled.value) : 0;
};

/** Raises when the script cannot wait here (yield impossible), before any promise is made. */
export function checkCanWait(L: LuaState, what: string): void {
  if (!lua_isyieldable(L)) {
    raise(L, `${what} cannot wait here (inside a metamethod, an iterator, a sort or gsub callback)`);
  }
}

/**
 * Suspends the script until `promise` settles: records it on the run and yields to the driver
 * (through any coroutine of the script). Call {@link checkCanWait} before making the promise.
 */
export function hostWait(L: LuaState, run: LuaRun, promise: Promise<unknown>, push: PushResult | null): never {
  run.pending = promise;
  run.push = push;
  // For the slow log: the thread suspended in this call keeps its stack, which says where.
  run.waitThread = L;
  run.host.waitLocator = run;
  return lua_yieldk(L, 0, null, settleK);
}

// ---- pcall / xpcall --------------------------------------------------------------------------

/**
 * fengari 0.1.5 bug: lua_pcallk's yieldable path saves `allowhook` with `&=` where Lua does a
 * set (`ci.callstatus &= ~CIST_OAH | L.allowhook`), so the saved bit is always 0, and when a
 * script's pcall catches an error inside a coroutine (every request runs in one), the recovery
 * restores allowhook = 0: the count hook, hence the CPU limit, is off for the rest of the run.
 * Errors caught here are never inside a hook (hooks do not call pcall): hooks are allowed.
 */
function restoreHooks(L: LuaState): void {
  const state = L as unknown as { allowhook?: number };
  if (state.allowhook === 0) state.allowhook = 1;
}

const finishPcall: LuaKFunction<number> = (L, status, extra) => {
  if (status !== LUA_OK && status !== LUA_YIELD) {
    restoreHooks(L);
    // The error value is on top: raise it again rather than return it to the script.
    if (fatal()) return raiseFatal(L);
    lua_pushboolean(L, false);
    lua_pushvalue(L, -2);
    return 2;
  }
  return lua_gettop(L) - extra;
};

/** pcall as lbaselib's, but a fatal error (limit, abort) goes through. */
export const pcall = (L: LuaState): number => {
  lauxlib.luaL_checkany(L, 1);
  lua_pushboolean(L, true);
  lua_insert(L, 1);
  return finishPcall(L, lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finishPcall), 0);
};

/** xpcall as lbaselib's, but a fatal error (limit, abort) goes through. */
export const xpcall = (L: LuaState): number => {
  const n = lua_gettop(L);
  lauxlib.luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushboolean(L, true);
  lua_pushvalue(L, 1);
  lua_rotate(L, 3, 2);
  return finishPcall(L, lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finishPcall), 2);
};

// ---- coroutines ------------------------------------------------------------------------------

/**
 * Resumes `co` with `narg` values from L's top; returns how many results it moved onto L, or -1
 * with the error value on L's top. A host call's yield inside `co` makes L yield too (to its own
 * resumer, up to the driver); `k` then resumes `co` when the host's result is in.
 */
function resumeCo(L: LuaState, co: LuaState, narg: number, k: LuaKFunction<LuaState>): number {
  if (!lua_checkstack(co, narg)) {
    lua_pushstring(L, 'too many arguments to resume');
    return -1;
  }
  if (lua_status(co) === LUA_OK && lua_gettop(co) === 0) {
    lua_pushstring(L, 'cannot resume dead coroutine');
    return -1;
  }
  lua_xmove(L, co, narg);
  const run = running.current;
  const outer = run?.thread ?? null;
  if (run) run.thread = co;
  let status: number;
  try {
    status = lua_resume(co, L, narg);
  } finally {
    if (run) run.thread = outer;
  }
  if (status === LUA_YIELD) {
    if (run?.pending) {
      if (!lua_isyieldable(L)) {
        // Nobody will await it: drop it without an unhandled rejection.
        run.pending.catch(noop);
        run.pending = null;
        run.push = null;
        return raise(L, 'a coroutine waiting for the host cannot be resumed here');
      }
      return lua_yieldk(L, 0, co, k);
    }
  }
  if (status === LUA_OK || status === LUA_YIELD) {
    const nres = lua_gettop(co);
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushstring(L, 'too many results to resume');
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1);
  return -1;
}

function finishResume(L: LuaState, r: number): number {
  if (r < 0) {
    if (fatal()) return raiseFatal(L);
    lua_pushboolean(L, false);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, true);
  lua_insert(L, -(r + 1));
  return r + 1;
}

const resumeK: LuaKFunction<LuaState> = (L, _status, co) => finishResume(L, resumeCo(L, co, 0, resumeK));

/** coroutine.resume, passing host calls through. */
export const coResume = (L: LuaState): number => {
  const co = lua_tothread(L, 1);
  if (co === null) return lauxlib.luaL_argerror(L, 1, 'thread expected');
  return finishResume(L, resumeCo(L, co, lua_gettop(L) - 1, resumeK));
};

function finishWrap(L: LuaState, r: number): number {
  if (r >= 0) return r;
  if (fatal()) return raiseFatal(L);
  if (lua_type(L, -1) === LUA_TSTRING) {
    lauxlib.luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

const wrapK: LuaKFunction<LuaState> = (L, _status, co) => finishWrap(L, resumeCo(L, co, 0, wrapK));

const wrapped = (L: LuaState): number => {
  const co = lua_tothread(L, lua_upvalueindex(1))!;
  return finishWrap(L, resumeCo(L, co, lua_gettop(L), wrapK));
};

/** coroutine.wrap, passing host calls through. */
export const coWrap = (L: LuaState): number => {
  lauxlib.luaL_checktype(L, 1, LUA_TFUNCTION);
  const co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, wrapped, 1);
  return 1;
};
