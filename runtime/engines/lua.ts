/**
 * The Lua engine: Lua 5.3 scripts on fengari (pure JS), one lua_State per engine (per worker).
 *
 * A script is compiled once as `local _ENV = ...; <source>` (on the source's first line, so
 * line numbers stay right) and runs per request in a new coroutine with a fresh globals table
 * over read-only shared globals (lua/sandbox.ts). The coroutine is what makes host calls async: `sleep()` and `request.body()` start a promise and yield; the
 * driver ({@link LuaEngine.run}) then awaits it and resumes the script with the result. A
 * script that never waits runs and ends synchronously, with no promise at all. Limits
 * (lua/limits.ts) are checked by a count hook and by guards on the few operations that
 * allocate a lot at once.
 *
 * Library calls that build a big result or do much work in one VM instruction are checked
 * inside fengari (lua/guards.ts): sizes before the allocation, work (pattern steps, sort
 * comparisons) against the CPU clock. The memory limit is the worker's heap growth during the
 * run, approximate (lua/limits.ts); the master's watchdog stays for a call no guard counts.
 */
import { createHash } from 'node:crypto';
import { FENGARI_RELEASE, lauxlib, lua, type LuaProxy, type LuaState } from 'fengari';
import { returnedStatus, ScriptError, type CompiledScript, type ScriptEngine, type SourceKind } from './engine.js';
import type { ScriptHost } from './host.js';
import { locate, luaChunk } from './lua-chunk.js';
import { settle } from './settle.js';
import { LuaRun, running, text } from './lua/core.js';
import { markIdle, markRunning } from './running.js';
import { createSandbox, type Sandbox } from './lua/sandbox.js';

const {
  LUA_OK,
  LUA_TFUNCTION,
  LUA_TNUMBER,
  LUA_TSTRING,
  LUA_YIELD,
  LUA_REGISTRYINDEX,
  lua_createtable,
  lua_gettop,
  lua_newthread,
  lua_pop,
  lua_pushboolean,
  lua_pushvalue,
  lua_rawseti,
  lua_resume,
  lua_setmetatable,
  lua_settop,
  lua_tointegerx,
  lua_tolstring,
  lua_toproxy,
  lua_type,
} = lua;

/** Bumped when the chunk prefix (lua-chunk.ts) or the sandbox changes compiled output. */
const SANDBOX_REVISION = 2;

/**
 * Heap a compiled function holds per byte of its source or bytecode, for the store's byte
 * bound. fengari keeps every instruction and constant as a JS object: measured on a 9 KB
 * script, about 270 KB (30x the source, 22x the 16.5 KB bytecode).
 */
const HEAP_PER_SOURCE_BYTE = 30;
const HEAP_PER_BYTECODE_BYTE = 22;

/** fengari reads FENGARICONF (stack size, id size...) at load: compiled output may depend on it. */
function confTag(): string {
  const conf = process.env.FENGARICONF;
  return conf ? ` conf:${createHash('sha256').update(conf).digest('hex').slice(0, 8)}` : '';
}

/** A chunk compiled in one engine's state; `fn` pushes the function onto a thread of it. */
class LuaScript implements CompiledScript {
  readonly engine = 'lua' as const;
  constructor(
    readonly path: string,
    readonly size: number,
    readonly sandbox: Sandbox,
    public fn: LuaProxy | null,
  ) {}

  dispose(): void {
    // The function is a JS object held by the proxy only: dropping it lets V8 collect it.
    this.fn = null;
  }
}

/** The error value at the top of `L` as text (non-string values described, not converted). */
function errorText(L: LuaState): string {
  const t = lua_type(L, -1);
  if (t === LUA_TSTRING || t === LUA_TNUMBER) return text(lua_tolstring(L, -1)!);
  return `(error object is a ${text(lua.lua_typename(L, t))} value)`;
}

/** Rejects the run with its fatal error (a limit, an abort), which wins over any Lua error. */
function checkFatal(host: ScriptHost): void {
  if (host.fatal) throw host.fatal;
}

/** What {@link LuaEngine.afterSlice} returns while the run waits for the host. */
const WAITING = Symbol('waiting');

/**
 * Lua 5.3 on fengari.
 *
 * @example
 * const engine = new LuaEngine();
 * const script = engine.compile('print("hello")', '/srv/www/hello.lua');
 * host.start();
 * try { await engine.run(script, host); } finally { host.finish(); }
 */
export class LuaEngine implements ScriptEngine {
  readonly name = 'lua' as const;
  readonly extension = '.lua';
  readonly version = `${FENGARI_RELEASE} ${lua.LUA_RELEASE} sandbox:${SANDBOX_REVISION}${confTag()}`;
  private compileCount = 0;
  private readonly box: Sandbox = createSandbox();
  /** Registry keys for request envs: negative, since luaL_ref only hands out positive ones. */
  private readonly freeRefs: number[] = [];
  private lastRef = 0;

  get compiles(): number {
    return this.compileCount;
  }

  compile(source: string, path: string, kind: SourceKind = 'script'): CompiledScript {
    this.compileCount++;
    const bytes = luaChunk(source, kind);
    return this.loadChunk(bytes, path, 't', bytes.length * HEAP_PER_SOURCE_BYTE);
  }

  dump(script: CompiledScript): Uint8Array {
    const fn = this.own(script);
    const L = this.box.L;
    const parts: Uint8Array[] = [];
    fn(L);
    // Not stripped: the line info is what makes runtime errors name file:line.
    const status = lua.lua_dump(L, (_L, bytes, size) => (parts.push(bytes.slice(0, size)), 0), null, false);
    lua_pop(L, 1);
    if (status !== 0) throw new Error(`lua_dump failed for ${script.path}`);
    return Buffer.concat(parts);
  }

  load(bytecode: Uint8Array, path: string): CompiledScript {
    return this.loadChunk(bytecode, path, 'b', bytecode.length * HEAP_PER_BYTECODE_BYTE);
  }

  /**
   * Runs `script` for one request: without a promise for a script that ends without waiting
   * (most requests), so the pipeline answers in the same tick; a script that waits gets a promise.
   */
  run(script: CompiledScript, host: ScriptHost): number | undefined | Promise<number | undefined> {
    const fn = this.own(script);
    const run = new LuaRun(host, script.path);
    const L = this.box.L;
    const T = lua_newthread(L);
    lua_pop(L, 1);
    run.main = T;
    run.envRef = this.freeRefs.pop() ?? --this.lastRef;
    fn(T);
    lua_createtable(T, 0, 0);
    this.box.envMeta(T);
    lua_setmetatable(T, -2);
    lua_pushvalue(T, -1);
    lua_rawseti(T, LUA_REGISTRYINDEX, run.envRef);
    let result: number | undefined | typeof WAITING;
    try {
      // Before a slice too: the run may be stopped already (the request was aborted).
      checkFatal(host);
      result = this.afterSlice(run, T, this.slice(run, T, 1));
    } catch (err) {
      this.release(run);
      throw err;
    }
    if (result === WAITING) return this.resumeAfterWaits(run, T);
    this.release(run);
    return result;
  }

  /** The rest of a run that waits for the host: await, resume, until it ends. */
  private async resumeAfterWaits(run: LuaRun, T: LuaState): Promise<number | undefined> {
    try {
      for (;;) {
        await settle(run);
        // A wait can end with a fatal error (wall time, abort): the run must not go on.
        checkFatal(run.host);
        const result = this.afterSlice(run, T, this.slice(run, T, 0));
        if (result !== WAITING) return result;
      }
    } finally {
      this.release(run);
    }
  }

  /** After a slice: the run's result, or WAITING when it waits for the host; throws its error. */
  private afterSlice(run: LuaRun, T: LuaState, status: number): number | undefined | typeof WAITING {
    checkFatal(run.host);
    if (status === LUA_OK) return this.finish(run, T);
    if (status !== LUA_YIELD) {
      const { message, line } = locate(errorText(T), run.path);
      throw new ScriptError('runtime', message, run.path, line);
    }
    if (run.pending === null) {
      throw new ScriptError('runtime', 'attempt to yield from outside a coroutine', run.path, null);
    }
    return WAITING;
  }

  /** Frees the run's registry slot for the next run. */
  private release(run: LuaRun): void {
    const L = this.box.L;
    // `false`, not nil: removing a key costs fengari about 1 us (its tables keep dead entries
    // for `next`), replacing a value almost nothing. The slot holds nothing of the request.
    lua_pushboolean(L, false);
    lua_rawseti(L, LUA_REGISTRYINDEX, run.envRef);
    this.freeRefs.push(run.envRef);
  }

  /** Runs the script until it ends, fails or waits; its time counts towards the CPU limit. */
  private slice(run: LuaRun, T: LuaState, nargs: number): number {
    const previous = running.current;
    running.current = run;
    markRunning(run.host.scriptFilename);
    run.sliceStart = performance.now();
    run.thread = T;
    try {
      return lua_resume(T, null, nargs);
    } catch (err) {
      // fengari catches everything inside lua_resume; this would be a bug of its own.
      run.host.abort('runtime', `Lua engine failure: ${err instanceof Error ? err.message : String(err)}`);
      return lua.LUA_ERRRUN;
    } finally {
      run.cpu += performance.now() - run.sliceStart;
      running.current = previous;
      if (previous) markRunning(previous.host.scriptFilename);
      else markIdle();
    }
  }

  /** After the chunk returned: lighty's buffered body, and the status code it returned. */
  private finish(run: LuaRun, T: LuaState): number | undefined {
    let result: number | undefined;
    if (lua_gettop(T) > 0 && lua_type(T, 1) === LUA_TNUMBER) {
      const code = lua_tointegerx(T, 1);
      if (code !== false) result = returnedStatus(code);
    }
    this.box.lighty.finish(this.box.L, run);
    return result;
  }

  private loadChunk(bytes: Uint8Array, path: string, mode: 't' | 'b', size: number): CompiledScript {
    const L = this.box.L;
    let status: number;
    try {
      status = lauxlib.luaL_loadbufferx(L, bytes, bytes.length, '@' + path, mode);
    } catch (err) {
      lua_settop(L, 0);
      throw new ScriptError('compile', `unusable chunk: ${err instanceof Error ? err.message : String(err)}`, path, null);
    }
    if (status !== LUA_OK || lua_type(L, -1) !== LUA_TFUNCTION) {
      const raw = lua_gettop(L) > 0 ? errorText(L) : 'unusable chunk';
      lua_settop(L, 0);
      const { message, line } = locate(raw, path);
      throw new ScriptError('compile', mode === 'b' ? `bad bytecode: ${message}` : message, path, line);
    }
    const fn = lua_toproxy(L, -1);
    lua_pop(L, 1);
    return new LuaScript(path, size, this.box, fn);
  }

  private own(script: CompiledScript): LuaProxy {
    if (!(script instanceof LuaScript) || script.sandbox !== this.box) {
      throw new TypeError(`${script.path} was not compiled by this Lua engine`);
    }
    if (script.fn === null) throw new TypeError(`${script.path} was disposed`);
    return script.fn;
  }
}
