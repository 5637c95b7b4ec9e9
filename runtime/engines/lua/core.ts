/**
 * What the Lua engine's modules share: the per-run state ({@link LuaRun}), the pointer to the
 * run whose Lua code is executing ({@link running}), and small helpers that move values and
 * errors between JS and fengari without letting a JS exception loose inside the VM.
 */
import { lauxlib, lua, to_luastring, type LuaJsFunction, type LuaProxy, type LuaState, type LuaString } from 'fengari';
import type { ScriptHost } from '../host.js';
import { MAX_FRAMES, type Frame, type WaitLocator } from '../slow-log.js';
import type { Settled } from '../settle.js';

/** Pushes the result of an async host call; returns how many values it pushed. */
export type PushResult = (L: LuaState, value: unknown) => number;

/** One script run for one request: what the driver and the Lua-called functions share. */
export class LuaRun implements WaitLocator {
  /** The async host call the script is waiting for (set just before the yield). */
  pending: Promise<unknown> | null = null;
  /** How to push {@link pending}'s value once it settles. */
  push: PushResult | null = null;
  /** The settled result, consumed by the continuation of the call that yielded. */
  settled: Settled | null = null;
  /** CPU time (ms) spent in the slices that ended; the hook adds the running one. */
  cpu = 0;
  /** performance.now() when the running slice started. */
  sliceStart = 0;
  /** Worker heap when the run's first sample was taken; -1 before. */
  heapBase = -1;
  /** Heap at the last sample. */
  heapLast = 0;
  /** Exact heap (live array buffers) at the run's first sample. */
  exactBase = -1;
  /** Exact heap right after the last GC the memory guard forced; -1 before. */
  exactAfterGc = -1;
  /** Bytes allocated by guarded library calls since the last sample. */
  charged = 0;
  /**
   * The thread executing the run's Lua code now: the run's own, or a coroutine of it while
   * coroutine.resume runs it. The `..` guard (lua/guards.ts) reads the operands on its stack.
   */
  thread: LuaState | null = null;
  /** The run's own thread (the request's coroutine), set when the run starts. */
  main: LuaState | null = null;
  /** The run's table of required modules (api/modules.ts), held by this object: it dies with the run. */
  loaded: LuaProxy | null = null;
  /**
   * The thread that made the host call the run waits for (a coroutine of the script's, or
   * {@link main}): suspended in that call, its stack is still there for the slow log to read.
   */
  waitThread: LuaState | null = null;
  /** The request body, cached: the request stream can be read once only. */
  body: Buffer | null = null;
  /**
   * Registry key of the per-request globals table (for `_G` and `load`), set when the run
   * starts; {@link pushEnv} pushes it. A registry slot, not a `lua_toproxy`: fengari records
   * every proxy in a WeakMap, and one WeakMap entry per request cost the scavenger measurably.
   */
  envRef = 0;
  /** The `lighty` table when the script touched it (its `content` is read at the end). */
  lighty: LuaProxy | null = null;
  /** lighty.r.resp_body: written after the script ends (set() must be able to replace it). */
  lightyBody: Uint8Array[] | null = null;

  constructor(
    readonly host: ScriptHost,
    /** The script's path, as in its chunk name: errors elsewhere (load()) carry no line. */
    readonly path: string,
  ) {}

  /** Where the waiting script called the host: its frames below the host function itself. */
  waitFrames(): Frame[] {
    return this.waitThread === null ? [] : stackOf(this, this.waitThread, 1);
  }
}

const frameInfo = to_luastring('Sln', true);

/**
 * The script's frames on thread `L` from stack level `from` (0: the running function), innermost
 * first, then, when `L` is a coroutine of the script, those of the run's own thread (which
 * starts at the coroutine.resume that runs it; coroutines between the two are not shown):
 * at most {@link MAX_FRAMES} + 1, so the slow log knows when there were more. For the slow log,
 * once per slow run; reads the stack without changing it, on a running or a suspended thread.
 */
export function stackOf(run: LuaRun, L: LuaState, from: number): Frame[] {
  const frames: Frame[] = [];
  framesOf(run.path, L, from, frames);
  if (run.main !== null && L !== run.main) framesOf(run.path, run.main, 0, frames);
  return frames;
}

function framesOf(path: string, L: LuaState, from: number, frames: Frame[]): void {
  const ar = new lua.lua_Debug();
  const chunk = '@' + path;
  for (let level = from; frames.length <= MAX_FRAMES && lua.lua_getstack(L, level, ar); level++) {
    if (!lua.lua_getinfo(L, frameInfo, ar)) continue;
    // The script's chunk is '@' + its path; a library (JS) function is '=[JS]'; a load()ed
    // string keeps its text, which short_src shortens to [string "..."].
    const source = ar.source === null ? null : text(ar.source);
    const file = source === chunk ? path : ar.short_src === null ? '?' : text(ar.short_src);
    frames.push({ name: ar.name === null ? null : text(ar.name), file, line: ar.currentline > 0 ? ar.currentline : null });
  }
}

/**
 * The run whose Lua code is executing right now, set by the driver around each slice. One for
 * the whole process, not one per engine: Lua code runs synchronously inside lua_resume, so at
 * most one slice of one engine executes at any moment, and the concat guard (guards.ts), which
 * sits inside fengari itself, can find the run without knowing the engine.
 */
export const running: { current: LuaRun | null } = { current: null };

/** Pushes the run's globals table (its `_ENV`) onto L. */
export function pushEnv(L: LuaState, run: LuaRun): void {
  lua.lua_rawgeti(L, lua.LUA_REGISTRYINDEX, run.envRef);
}

/** Lua strings made once: converting a JS string to bytes costs a loop per call. */
export const S = {
  __index: to_luastring('__index', true),
  __newindex: to_luastring('__newindex', true),
  __metatable: to_luastring('__metatable', true),
  __pairs: to_luastring('__pairs', true),
};

const { lua_concat, lua_error, lua_pushstring, lua_tolstring, lua_type, LUA_TSTRING } = lua;

/** Raises a Lua error with the caller's position, like luaL_error (never returns). */
export function raise(L: LuaState, message: string): never {
  lauxlib.luaL_where(L, 1);
  lua_pushstring(L, message);
  lua_concat(L, 2);
  return lua_error(L);
}

/**
 * Raises the value at the top of L past the script's message handlers: an error that ends the
 * run (a limit, an abort) must not run an xpcall handler. Lua calls the handler from inside
 * lua_error, and when the error comes from the count hook, hooks are off (allowhook 0) for the
 * whole handler: a handler that loops then runs forever (issue 16, item 5). Clearing the
 * thread's errfunc skips the handler; every pcall restores its caller's errfunc when it ends.
 */
export function raiseFatal(L: LuaState): never {
  const state = L as unknown as { errfunc?: unknown };
  if (typeof state.errfunc === 'number') state.errfunc = 0;
  return lua_error(L);
}

/**
 * Wraps a function Lua calls so a JS exception (a host TypeError, an output limit) becomes a Lua
 * error instead of unwinding through fengari. fengari's own error and yield jumps are plain
 * objects, not Errors: those pass through untouched.
 */
export function jsfn(f: LuaJsFunction): LuaJsFunction {
  return (L) => {
    try {
      return f(L);
    } catch (err) {
      if (!(err instanceof Error)) throw err;
      return raise(L, err.message);
    }
  };
}

/** The run executing now; a Lua error if none (cannot happen while a script runs). */
export function runOf(L: LuaState): LuaRun {
  const run = running.current;
  if (run === null) return raise(L, 'no request is running');
  return run;
}

// Decodes without making a Buffer per call (about twice as fast on the short names and values
// scripts pass); the same output as Buffer's toString, a leading BOM kept (ignoreBOM).
const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });

/** Lua bytes as a JS string (UTF-8, invalid sequences replaced). */
export function text(s: LuaString): string {
  return utf8.decode(s);
}

/** A string key at `idx` as a JS string (bytes as Latin-1), or null when the key is not a string. */
export function keyAt(L: LuaState, idx: number): string | null {
  if (lua_type(L, idx) !== LUA_TSTRING) return null;
  const s = lua_tolstring(L, idx)!;
  // Keys are short names: a char per byte is Latin-1 and beats making a Buffer to decode one.
  if (s.length > 32) return Buffer.from(s.buffer, s.byteOffset, s.length).toString('latin1');
  let key = '';
  for (let i = 0; i < s.length; i++) key += String.fromCharCode(s[i]!);
  return key;
}

/** Pushes a new table holding a JS record of strings. */
export function pushRecord(L: LuaState, record: Readonly<Record<string, string>>): void {
  lua.lua_createtable(L, 0, 0);
  for (const name in record) {
    lua_pushstring(L, name);
    lua_pushstring(L, record[name]!);
    lua.lua_rawset(L, -3);
  }
}

/** Removes the value at `idx`, shifting the ones above down (lua_remove). */
export function remove(L: LuaState, idx: number): void {
  lua.lua_rotate(L, idx, -1);
  lua.lua_pop(L, 1);
}

/** Sets a metatable field on the table at the top of the stack to a JS function. */
export function setFunction(L: LuaState, name: LuaString | string, f: LuaJsFunction): void {
  lua.lua_pushjsfunction(L, f);
  lua.lua_setfield(L, -2, name);
}
