/**
 * The Lua 5.4 engine: the reference Lua, compiled to WebAssembly (wasm.ts), driven through its
 * C API. Several times faster than fengari on script work (a 200-row table render through the
 * engine: ~630 us against ~5,100 us; the bare Lua function ~280 us), because the VM is C, not
 * an interpreter written in JavaScript.
 *
 * A script is compiled as `local _ENV = ...; <source>` (on its first line, so line numbers
 * stay right) and runs per request in a new thread of a state with a fresh globals table over
 * the read-only shared globals (sandbox-lua.ts). Each run in flight holds a state of its own
 * (states.ts): the state's allocator is the run's exact memory limit. A host call that waits
 * yields the thread; the driver awaits the promise and resumes it. A script that never waits
 * runs and ends synchronously. The CPU limit is a count hook that raises; the wrappers of
 * pcall, xpcall and coroutine.resume (control.ts) re-raise it, so a script cannot swallow it.
 *
 * A fault in the wasm code (an abort, a trap, a native stack overflow) leaves the module's heap
 * untrustworthy: the module is replaced whole, the runs on it fail, and scripts recompile into
 * the new one on their next run.
 */
import { returnedStatus, ScriptError, type CompiledScript, type ScriptEngine, type SourceKind } from '../engine.js';
import type { ScriptHost } from '../host.js';
import { locate, luaChunk } from '../lua-chunk.js';
import { settle } from '../settle.js';
import { markIdle, markRunning } from '../running.js';
import { isModuleFault, LUA_OK, LUA_REGISTRYINDEX, LUA_TNUMBER, LUA_YIELD } from './capi.js';
import { finishLighty } from './api/lighty.js';
import { active, Run54 } from './run.js';
import { assignedUpvalues } from './bytecode.js';
import { stackOf, wrapperCallerPlace } from './stack.js';
import { errorText, LuaState54, LuaWorld, type LuaChunk } from './states.js';
import type { Ptr } from './wasm.js';

/** Bumped when the chunk prefix (lua-chunk.ts) or the sandbox changes compiled output. */
const SANDBOX_REVISION = 2;

/** The wasm binary's Lua release (checked against the binary by a test). */
export const LUA54_RELEASE = 'Lua 5.4';

/** A little of most syntax, compiled once at startup (see the constructor). */
const WARM_UP = `local t = { 1, "b", x = { y = 2.5 } }
for i, v in ipairs(t) do if type(v) == "string" and #v > 0 then t.x[i] = v .. i else t[i] = v // 1 end end
local function f(...) local n <const> = select("#", ...) return n, ("%d"):format(n) end
while false do break end repeat local z = f(1, 2) until z
return t.x.y > 1 and 200 or nil`;

/**
 * Idle states kept for the next runs; more are closed when their runs end. Each run that waits
 * (pass, fetch, sleep) holds a state, and making one costs ~2 ms of CPU (the sandbox is built
 * in it) against ~110 KB kept: with 8, sixteen relays in flight made a state for about every
 * other request (pass scenario, issue 23). 32 covers the bench's 16 connections twice over and
 * costs at most ~3.5 MB, only after that many runs waited at once.
 */
const MAX_IDLE_STATES = 32;

/** Heap a compiled function holds per byte of source, for the script store's byte bound. */
const HEAP_PER_SOURCE_BYTE = 6;

/** Options of {@link Lua54Engine}. */
export interface Lua54Options {
  /** The most bytes the wasm memory may grow to, every state together (default 512 MiB). */
  readonly maxHeapBytes?: number;
}

/** A compiled script: its chunk (source or bytecode) and the function loaded in each state. */
class Lua54Script implements CompiledScript, LuaChunk {
  readonly engine = 'lua' as const;
  constructor(
    readonly path: string,
    readonly size: number,
    /** The chunk's bytes and how to load them ('t' source, 'b' Lodestone's own bytecode). */
    public chunk: Buffer,
    public mode: 't' | 'b',
    readonly owner: Lua54Engine,
  ) {}

  /** The upvalues its functions assign (bytecode.ts), read from its bytecode once. */
  assigned?: readonly string[] | null;

  dispose(): void {
    // The store replaced or evicted it: each state lets its function go (a run still in it
    // keeps it on its stack until it ends), and with it a shared module's record (a weak key).
    this.owner.forget(this);
  }
}

/**
 * PUC Lua 5.4 in WebAssembly.
 *
 * @example
 * const engine = new Lua54Engine();
 * const script = engine.compile('print("hello")', '/srv/www/hello.lua');
 */
export class Lua54Engine implements ScriptEngine {
  readonly name = 'lua' as const;
  readonly extension = '.lua';
  readonly version = `${LUA54_RELEASE} wasm sandbox:${SANDBOX_REVISION}`;
  private compileCount = 0;
  private world: LuaWorld;
  private readonly idle: LuaState54[] = [];
  private readonly maxHeapBytes: number;

  /** Lets every state of the current module drop `script`'s function (Lua54Script.dispose). */
  forget(script: LuaChunk): void {
    this.world.forget(script);
  }

  constructor(options: Lua54Options = {}) {
    this.maxHeapBytes = options.maxHeapBytes ?? 512 * 1024 * 1024;
    this.world = this.newWorld();
    // V8 compiles wasm functions on first call: parsing a little of most syntax now, and making
    // the first state, keeps ~15 ms of that off the worker's first request.
    this.compile(WARM_UP, '<warm-up>').dispose();
    this.compileCount = 0;
  }

  get compiles(): number {
    return this.compileCount;
  }

  private newWorld(): LuaWorld {
    return new LuaWorld(this.maxHeapBytes, (L, ar) => this.hook(L, ar));
  }

  /** The count hook: stops the run on a fatal error or when its CPU time is over. */
  private hook(L: Ptr, ar: Ptr): void {
    const run = active.run;
    if (run === null) return;
    const host = run.host;
    const api = this.world.api;
    if (!host.fatal) {
      const now = performance.now();
      if (run.cpu + now - run.sliceStart > host.limits.cpuMs) {
        host.abort('limit', `CPU time over ${host.limits.cpuMs} ms`, this.lineAt(L, ar, run.path));
      } else {
        if (now >= host.slowAt) host.slowWhileRunning(now, stackOf(api, this.world.ar, run.path, L, 0, run.main));
        return;
      }
    }
    api.push(L, host.fatal!.message);
    api.raiseTop(L);
  }

  /** The script line the hook stopped at (lua_Debug on wasm32: source at 16, currentline at 24), when it is in the script's own chunk. */
  private lineAt(L: Ptr, ar: Ptr, path: string): number | null {
    const { api } = this.world;
    if (api.x.lua_getinfo(L, api.name('Sl'), ar) === 0) return null;
    const heap = api.module.heap;
    const src = heap.readUInt32LE(ar + 16);
    const line = heap.readInt32LE(ar + 24);
    if (src === 0 || line <= 0) return null;
    const end = heap.indexOf(0, src);
    return heap.toString('utf8', src, end) === '@' + path ? line : null;
  }

  compile(source: string, path: string, kind: SourceKind = 'script'): CompiledScript {
    this.compileCount++;
    const chunk = luaChunk(source, kind);
    return this.loaded(new Lua54Script(path, chunk.length * HEAP_PER_SOURCE_BYTE, chunk, 't', this));
  }

  dump(script: CompiledScript): Uint8Array {
    const s = this.own(script);
    if (s.mode === 'b') return s.chunk;
    const state = this.take();
    const world = this.world;
    try {
      world.api.x.lua_rawgeti(state.L, LUA_REGISTRYINDEX, BigInt(this.fnIn(state, s)));
      // Not stripped: the line info is what makes runtime errors name file:line.
      const bytes = world.dumpTop(state.L);
      // Read now, while the bytes are here: a shared module needs it (api/modules.ts).
      s.assigned ??= assignedUpvalues(bytes);
      return bytes;
    } finally {
      world.api.x.lua_settop(state.L, 0);
      this.giveBack(state);
    }
  }

  load(bytecode: Uint8Array, path: string): CompiledScript {
    const chunk = Buffer.from(bytecode);
    return this.loaded(new Lua54Script(path, chunk.length * HEAP_PER_SOURCE_BYTE, chunk, 'b', this));
  }

  /** `script`, loaded once in a state: a compile error or bad bytecode throws here, not at its first run. */
  private loaded(script: Lua54Script): Lua54Script {
    const state = this.take();
    try {
      this.fnIn(state, script);
    } finally {
      this.giveBack(state);
    }
    return script;
  }

  /** The registry slot of `script`'s function in `state`, loading it there on first use. */
  private fnIn(state: LuaState54, script: Lua54Script): number {
    return this.world.fnIn(state, script);
  }

  private take(): LuaState54 {
    return this.idle.pop() ?? this.world.newState();
  }

  private giveBack(state: LuaState54): void {
    state.limit = Infinity;
    if (this.world.dead) return;
    if (this.idle.length < MAX_IDLE_STATES) this.idle.push(state);
    else this.world.close(state);
  }

  /**
   * Runs `script` for one request: without a promise for a script that ends without waiting,
   * so the pipeline answers in the same tick; a script that waits gets a promise.
   */
  run(script: CompiledScript, host: ScriptHost): number | undefined | Promise<number | undefined> {
    const s = this.own(script);
    if (host.fatal) throw host.fatal;
    const world = this.world;
    const x = world.api.x;
    const state = this.take();
    let run: Run54;
    try {
      const fn = this.fnIn(state, s);
      const L = state.L;
      run = new Run54(host, script.path, state);
      run.frames = (thread, from) => stackOf(world.api, world.ar, script.path, thread, from, run.main);
      const T = x.lua_newthread(L);
      run.threadRef = x.luaL_ref(L, LUA_REGISTRYINDEX);
      run.main = T;
      x.lua_rawgeti(T, LUA_REGISTRYINDEX, BigInt(fn));
      world.pushNewEnv(state, T);
      x.lua_pushvalue(T, -1);
      run.envRef = x.luaL_ref(T, LUA_REGISTRYINDEX);
    } catch (err) {
      this.giveBack(state);
      throw err;
    }
    state.limit = state.used + host.limits.memoryBytes;
    let result: number | undefined | typeof WAITING;
    try {
      result = this.afterSlice(run, this.slice(world, run, 1));
    } catch (err) {
      this.release(world, run);
      throw err;
    }
    if (result === WAITING) return this.resumeAfterWaits(world, run);
    this.release(world, run);
    return result;
  }

  /** The rest of a run that waits for the host: await, resume, until it ends. */
  private async resumeAfterWaits(world: LuaWorld, run: Run54): Promise<number | undefined> {
    try {
      for (;;) {
        await settle(run);
        if (run.host.fatal) throw run.host.fatal;
        if (world.dead) throw new ScriptError('limit', 'the Lua engine was restarted', run.path, null);
        const result = this.afterSlice(run, this.slice(world, run, 0));
        if (result !== WAITING) return result;
      }
    } finally {
      this.release(world, run);
    }
  }

  /** Runs the thread until it ends, fails or waits; its time counts towards the CPU limit. */
  private slice(world: LuaWorld, run: Run54, nargs: number): number {
    const previous = active.run;
    active.run = run;
    markRunning(run.host.scriptFilename);
    run.sliceStart = performance.now();
    try {
      return world.api.x.lua_resume(run.main, 0, nargs, world.nres);
    } catch (err) {
      if (!isModuleFault(err)) throw err;
      this.replaceWorld(world);
      run.host.abort('limit', 'stack overflow (the Lua engine was restarted)');
      return -1;
    } finally {
      run.cpu += performance.now() - run.sliceStart;
      active.run = previous;
      if (previous) markRunning(previous.host.scriptFilename);
      else markIdle();
    }
  }

  /** After a slice: the run's result, or WAITING; throws its error. */
  private afterSlice(run: Run54, status: number): number | undefined | typeof WAITING {
    const fatal = run.host.fatal;
    if (fatal) {
      // An exit is the run's own end (pass() with emit, sendfile()): returned, not thrown, since
      // a JS exception here and its rethrows cost microseconds a relayed request; runScript
      // reads host.fatal (ScriptEngine.run).
      if (fatal.kind === 'exit') return undefined;
      throw fatal;
    }
    const world = this.world;
    const x = world.api.x;
    const T = run.main;
    if (status === LUA_OK) {
      finishLighty(world.b, T, run);
      const n = world.api.module.heap.readInt32LE(world.nres);
      if (n === 0 || x.lua_type(T, -n) !== LUA_TNUMBER) return undefined;
      // An integral float (302.0) is a status too, as lua_tointegerx converts it.
      const isnum = world.api.scratch;
      const code = Number(x.lua_tointegerx(T, -n, isnum));
      return world.api.module.heap.readInt32LE(isnum) !== 0 ? returnedStatus(code) : undefined;
    }
    if (status !== LUA_YIELD) {
      const raw = errorText(world.api, T);
      let { message, line } = locate(raw, run.path);
      if (line === null) {
        const place = wrapperCallerPlace(world.api, world.ar, T);
        if (place !== null) ({ message, line } = locate(place + raw, run.path));
      }
      throw new ScriptError('runtime', message, run.path, line);
    }
    if (run.pending === null) {
      throw new ScriptError('runtime', 'attempt to yield from outside a coroutine', run.path, null);
    }
    return WAITING;
  }

  /** Frees the run's registry slots and gives its state back. */
  private release(world: LuaWorld, run: Run54): void {
    run.pending?.catch(() => {});
    if (world !== this.world || world.dead) return;
    const x = world.api.x;
    const L = run.state.L;
    const state = run.state as LuaState54;
    if (run.host.fatal?.kind === 'limit') {
      // A run stopped by a limit may leave its state holding up to memoryBytes of garbage (or
      // a coroutine stuck mid-way): closing it returns that to the module at once.
      world.close(state);
      return;
    }
    x.luaL_unref(L, LUA_REGISTRYINDEX, run.envRef);
    x.luaL_unref(L, LUA_REGISTRYINDEX, run.threadRef);
    if (run.loadedRef !== 0) x.luaL_unref(L, LUA_REGISTRYINDEX, run.loadedRef);
    this.giveBack(state);
  }

  /** Drops a faulted module: its states, and every run on it, are gone. */
  private replaceWorld(world: LuaWorld): void {
    world.dead = true;
    if (this.world !== world) return;
    this.idle.length = 0;
    this.world = this.newWorld();
  }

  private own(script: CompiledScript): Lua54Script {
    if (!(script instanceof Lua54Script) || script.owner !== this) {
      throw new TypeError(`${script.path} was not compiled by this Lua engine`);
    }
    return script;
  }
}

/** What {@link Lua54Engine.afterSlice} returns while the run waits for the host. */
const WAITING = Symbol('waiting');
