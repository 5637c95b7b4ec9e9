/**
 * The lua_States of one wasm module: how one is made (allocator, libraries, sandbox, hook) and
 * the host functions they all share. A run holds a state of its own for its whole life, because
 * the memory limit is the state's allocator budget: exact, and checked before each allocation,
 * where a shared state could only attribute its bytes to runs approximately. Most runs never
 * wait, so one state serves them one after another; runs waiting at the same time each hold one.
 */
import { randomBytes } from 'node:crypto';
import { bindCache } from './api/cache.js';
import { bindCookies } from './api/cookies.js';
import { bindFetch } from './api/fetch.js';
import { bindFiles } from './api/files.js';
import { bindLibrary } from './api/library.js';
import { bindLighty } from './api/lighty.js';
import { bindOutput } from './api/output.js';
import { bindPass } from './api/pass.js';
import { bindRequest } from './api/request.js';
import { bindResponse } from './api/response.js';
import { LUA_MASKCOUNT, LUA_OK, LUA_REGISTRYINDEX, LUA_TFUNCTION, LUA_TNUMBER, LUA_TSTRING, LuaApi } from './capi.js';
import { bindModules } from './api/modules.js';
import { ScriptError } from '../engine.js';
import { locate } from '../lua-chunk.js';
import { makeControl } from './control.js';
import { active, type Bindings, type RunState } from './run.js';
import { LIBRARY_WRAPPERS_LUA, SANDBOX_LUA } from './sandbox-lua.js';
import { SHARED_MODULES_LUA } from './shared-modules-lua.js';
import { LUA_DEBUG_BYTES } from './stack.js';
import { LuaModule, WasmAbort, type Ptr } from './wasm.js';
import { assignedUpvalues } from './bytecode.js';

/** VM instructions between two count-hook calls (a few microseconds of script time). */
export const HOOK_COUNT = 1000;

/**
 * Room a run gets past its budget once it is stopped: raising the limit's error and unwinding
 * allocate a little, and a refusal there would turn the limit into a memory error.
 */
const GRACE_BYTES = 64 * 1024;

/** The real globals table (LUA_RIDX_GLOBALS), emptied once the sandbox is built. */
const RIDX_GLOBALS = 2;

/** What a state loads of a compiled script or module: its chunk (source or bytecode). */
export interface LuaChunk {
  readonly path: string;
  /** The chunk's bytes and how to load them ('t' source, 'b' Lodestone's own bytecode). */
  readonly chunk: Buffer;
  readonly mode: 't' | 'b';
  /** What bytecode.ts read of its bytecode (shared modules); undefined until read. */
  assigned?: readonly string[] | null;
}

function isChunk(script: object): script is LuaChunk {
  return 'chunk' in script && 'mode' in script;
}

/** `path:LINE: message` text of the error value at the top of L. */
export function errorText(api: LuaApi, L: Ptr): string {
  const x = api.x;
  const t = x.lua_type(L, -1);
  if (t === LUA_TSTRING || t === LUA_TNUMBER) return api.text(L, -1)!;
  return `(error object is a ${typeName(t)} value)`;
}

function typeName(t: number): string {
  return ['nil', 'boolean', 'userdata', 'number', 'string', 'table', 'function', 'userdata', 'thread'][t] ?? 'no';
}

/** A lua_State of the module and the sandbox built in it. */
export class LuaState54 implements RunState {
  used = 0;
  limit = Infinity;
  /** Registry slot of the request-globals metatable (a luaL_ref: 5.4 keeps its free list at 3). */
  envMeta = 0;
  /** Registry slots of compiled scripts in this state, by script. */
  readonly scripts = new WeakMap<object, number>();
  constructor(
    readonly id: number,
    public L: Ptr,
  ) {}
}

/** A wasm module instance with the host functions registered and a way to make states. */
export class LuaWorld {
  readonly api: LuaApi;
  readonly b: Bindings;
  private readonly states = new Map<number, LuaState54>();
  private nextId = 1;
  private readonly alloc: Ptr;
  private readonly hook: Ptr;
  private readonly host: Record<string, Ptr> = {};
  /** lua_resume's out-parameter (the number of results). */
  readonly nres: Ptr;
  /** A lua_Debug for the slow log's stack reads. */
  readonly ar: Ptr;
  /** lua_dump's writer (one for the module: a table slot per dump would never be freed). */
  readonly dumpWriter: Ptr;
  /** The dump in progress: {@link dumpWriter} appends to it (ldump.c writes a few bytes a call). */
  private dumping: { buf: Buffer; len: number } | null = null;
  /**
   * The sandbox and its own chunks as bytecode, compiled in the first state and loaded in every
   * later one: parsing them was ~0.7 of a new state's ~1.8 ms (they are Lodestone's own source,
   * so their bytecode is trusted as the cache's is).
   */
  private sandboxBytecode: Buffer | null = null;
  private chunkBytecode: Record<string, Buffer> | null = null;
  /** A fault (trap, abort, native stack overflow) happened: nothing here may run again. */
  dead = false;

  constructor(maxBytes: number, onHook: (L: Ptr, ar: Ptr) => void) {
    const module = new LuaModule(maxBytes);
    const api = new LuaApi(module);
    this.api = api;
    const x = api.x;
    this.nres = x.malloc(4);
    this.ar = x.malloc(LUA_DEBUG_BYTES);
    this.dumpWriter = module.addFunction((_L: Ptr, p: Ptr, size: number): number => {
      const d = this.dumping;
      if (d === null) return 1;
      if (d.len + size > d.buf.length) {
        const bigger = Buffer.allocUnsafe(Math.max(2 * d.buf.length, d.len + size));
        d.buf.copy(bigger, 0, 0, d.len);
        d.buf = bigger;
      }
      module.heap.copy(d.buf, d.len, p, p + size);
      d.len += size;
      return 0;
    }, 'iiiii');
    this.alloc = module.addFunction((ud: number, p: Ptr, osize: number, nsize: number): Ptr => {
      const state = this.states.get(ud);
      const old = p === 0 ? 0 : osize;
      if (nsize === 0) {
        if (p !== 0) {
          x.free(p);
          if (state) state.used -= old;
        }
        return 0;
      }
      if (state && state.used - old + nsize > state.limit) {
        const run = active.run;
        if (run && run.state === state && !run.host.fatal) {
          run.host.abort('limit', `memory over ${run.host.limits.memoryBytes} bytes`);
          state.limit += GRACE_BYTES;
        }
        if (state.used - old + nsize > state.limit) return 0;
      }
      const q = x.realloc(p, nsize);
      if (q !== 0) {
        if (state) state.used += nsize - old;
      } else {
        // The module's heap is full (maxHeapBytes, every state together): a limit for the run
        // that asked, not an error its script could catch.
        const run = active.run;
        if (run && run.state === state && !run.host.fatal) run.host.abort('limit', `memory: the Lua heap is full (${maxBytes} bytes)`);
      }
      return q;
    }, 'iiiii');
    this.hook = module.addFunction(onHook, 'vii');
    const pushChunk: Bindings['pushChunk'] = (L, run, script) => {
      if (!isChunk(script)) throw new TypeError(`${script.path} was not compiled by the Lua engine`);
      x.lua_rawgeti(L, LUA_REGISTRYINDEX, BigInt(this.fnIn(run.state as LuaState54, script)));
    };
    const control = makeControl(api, this.hook, pushChunk, (L, run, script) => {
      if (!isChunk(script)) return null;
      if (script.assigned === undefined) {
        if (script.mode === 'b') {
          script.assigned = assignedUpvalues(script.chunk);
        } else {
          pushChunk(L, run, script);
          script.assigned = assignedUpvalues(this.dumpTop(L));
          api.pop(L, 1);
        }
      }
      return script.assigned;
    });
    this.b = control.b;
    Object.assign(this.host, control.fns);
    for (const bind of [bindOutput, bindRequest, bindResponse, bindCookies, bindFiles, bindCache, bindPass, bindFetch, bindLighty, bindLibrary, bindModules]) {
      const fns = bind(this.b);
      for (const name in fns) this.host[name] = api.cfunction(fns[name]!);
    }
  }

  /** Makes a state with the sandbox built; throws WasmAbort when the module is out of memory. */
  newState(): LuaState54 {
    const { api } = this;
    const x = api.x;
    const state = new LuaState54(this.nextId++, 0);
    this.states.set(state.id, state);
    const L = x.lua_newstate(this.alloc, state.id);
    if (L === 0) {
      this.states.delete(state.id);
      throw new WasmAbort('not enough memory for a new Lua state');
    }
    state.L = L;
    x.luaL_openlibs(L);
    // Seed math.random from the OS: the build's own seed is the time and an address.
    x.lua_getglobal(L, api.name('math'));
    api.getField(L, -1, 'randomseed');
    const seed = randomBytes(8);
    x.lua_pushinteger(L, seed.readBigInt64LE(0) >> 11n);
    if (x.lua_pcallk(L, 1, 0, 0, 0, 0) !== LUA_OK) api.pop(L, 1);
    api.pop(L, 1);

    this.chunkBytecode ??= {
      wrappers: this.compileStripped(L, LIBRARY_WRAPPERS_LUA, '=wrappers'),
      shared: this.compileStripped(L, SHARED_MODULES_LUA, '=shared'),
    };
    const precompiled = this.sandboxBytecode !== null;
    const status = this.loadChunk(L, this.sandboxBytecode ?? Buffer.from(SANDBOX_LUA), '=sandbox', precompiled ? 'b' : 't');
    if (status === null) throw new WasmAbort('not enough memory to load the sandbox');
    if (status !== LUA_OK) throw new Error(`the sandbox does not compile: ${api.text(L, -1)}`);
    if (!precompiled) this.sandboxBytecode = this.dumpTop(L);
    x.lua_createtable(L, 0, 64);
    for (const name in this.host) {
      api.pushFunction(L, this.host[name]!);
      api.setField(L, -2, name);
    }
    x.lua_createtable(L, 0, 2);
    for (const [name, bytes] of Object.entries(this.chunkBytecode)) {
      api.push(L, bytes);
      api.setField(L, -2, name);
    }
    api.setField(L, -2, 'chunks');
    if (x.lua_pcallk(L, 1, 1, 0, 0, 0) !== LUA_OK) throw new Error(`the sandbox failed: ${api.text(L, -1)}`);
    state.envMeta = x.luaL_ref(L, LUA_REGISTRYINDEX);
    // The real globals (io, os, debug, package...) are never given to a script; empty them so
    // that a chunk's unused _ENV upvalue holds nothing.
    x.lua_createtable(L, 0, 0);
    x.lua_rawseti(L, LUA_REGISTRYINDEX, BigInt(RIDX_GLOBALS));
    // Threads copy the hook of the thread that creates them: every request and coroutine counts.
    x.lua_sethook(L, this.hook, LUA_MASKCOUNT, HOOK_COUNT);
    x.lua_settop(L, 0);
    return state;
  }

  /** The registry slot of `script`'s function in `state`, loading it there on first use. */
  fnIn(state: LuaState54, script: LuaChunk): number {
    const found = state.scripts.get(script);
    if (found !== undefined) return found;
    const { api } = this;
    const x = api.x;
    const L = state.L;
    const status = this.loadChunk(L, script.chunk, '@' + script.path, script.mode);
    if (status === null) throw new ScriptError('limit', 'the Lua engine is out of memory', script.path, null);
    if (status !== LUA_OK || x.lua_type(L, -1) !== LUA_TFUNCTION) {
      const raw = x.lua_gettop(L) > 0 ? errorText(api, L) : 'unusable chunk';
      x.lua_settop(L, 0);
      const { message, line } = locate(raw, script.path);
      throw new ScriptError('compile', script.mode === 'b' ? `bad bytecode: ${message}` : message, script.path, line);
    }
    const ref = x.luaL_ref(L, LUA_REGISTRYINDEX);
    state.scripts.set(script, ref);
    return ref;
  }

  /**
   * Loads `bytes` (mode 't' or 'b') as a function on top of L through a copy in the module's
   * heap; returns luaL_loadbufferx's status, or null when the heap has no room for the copy.
   */
  private loadChunk(L: Ptr, bytes: Buffer, name: string, mode: 't' | 'b'): number | null {
    const { api } = this;
    const p = api.x.malloc(bytes.length);
    if (p === 0) return null;
    api.module.heap.set(bytes, p);
    try {
      return api.x.luaL_loadbufferx(L, p, bytes.length, api.name(name), api.name(mode));
    } finally {
      api.x.free(p);
    }
  }

  /** One of the sandbox's own chunks, compiled in L and dumped stripped of line info (sandbox-lua.ts). */
  private compileStripped(L: Ptr, source: string, name: string): Buffer {
    const status = this.loadChunk(L, Buffer.from(source), name, 't');
    if (status === null) throw new WasmAbort('not enough memory to load the sandbox');
    if (status !== LUA_OK) throw new Error(`${name} does not compile: ${this.api.text(L, -1)}`);
    const bytes = this.dumpTop(L, true);
    this.api.pop(L, 1);
    return bytes;
  }

  /**
   * Drops `script`'s function from every state it was loaded in (its registry slot), so an
   * edited or evicted script does not stay loaded until the state closes.
   */
  forget(script: LuaChunk): void {
    if (this.dead) return;
    for (const state of this.states.values()) {
      const ref = state.scripts.get(script);
      if (ref === undefined) continue;
      state.scripts.delete(script);
      this.api.x.luaL_unref(state.L, LUA_REGISTRYINDEX, ref);
    }
  }

  /** lua_dump of the function at the top of L, with its line and upvalue names unless `strip`. */
  dumpTop(L: Ptr, strip = false): Buffer {
    const outer = this.dumping;
    const d = { buf: Buffer.allocUnsafe(16 * 1024), len: 0 };
    this.dumping = d;
    try {
      if (this.api.x.lua_dump(L, this.dumpWriter, 0, strip ? 1 : 0) !== 0) throw new Error('lua_dump failed');
    } finally {
      this.dumping = outer;
    }
    return Buffer.from(d.buf.subarray(0, d.len));
  }

  /** Pushes a new request globals table (empty, over the shared globals of `state`) onto L. */
  pushNewEnv(state: LuaState54, L: Ptr): void {
    const x = this.api.x;
    x.lua_createtable(L, 0, 0);
    x.lua_rawgeti(L, LUA_REGISTRYINDEX, BigInt(state.envMeta));
    x.lua_setmetatable(L, -2);
  }

  /** Closes a state, freeing its memory in the module. */
  close(state: LuaState54): void {
    if (!this.dead) this.api.x.lua_close(state.L);
    this.states.delete(state.id);
  }
}
