/**
 * The Lua C API as the bindings use it: the raw exports of one {@link LuaModule} plus the few
 * helpers every binding needs (strings in and out of wasm memory, errors, registry slots).
 * Strings cross as bytes: a Lua string may hold any byte, so nothing here decodes unless asked.
 */
import { LuaModule, WasmAbort, type Ptr } from './wasm.js';

/** Registry field of the shared modules' weak table of clean proxies (proxy -> real table), set by the sandbox. */
export const VIEWS = 'lodestone.views';

export const LUA_OK = 0;
export const LUA_YIELD = 1;
export const LUA_ERRRUN = 2;
export const LUA_ERRMEM = 4;

export const LUA_TNONE = -1;
export const LUA_TNIL = 0;
export const LUA_TBOOLEAN = 1;
export const LUA_TLIGHTUSERDATA = 2;
export const LUA_TNUMBER = 3;
export const LUA_TSTRING = 4;
export const LUA_TTABLE = 5;
export const LUA_TFUNCTION = 6;

export const LUA_MULTRET = -1;
/** LUAI_MAXSTACK is 1,000,000 in this build (luaconf.h default). */
export const LUA_REGISTRYINDEX = -1_000_000 - 1000;
export const LUA_MASKCOUNT = 1 << 3;

/** Pseudo-index of a C closure's upvalue `i`. */
export function upvalueIndex(i: number): number {
  return LUA_REGISTRYINDEX - i;
}

/**
 * Thrown by a host function to leave through Lua's error path: never caught by the bindings'
 * own error conversion (see {@link LuaApi.guard}).
 */
const LONGJMP = Infinity;

/** Bytes always available for a short string going into Lua (names, messages). */
const RESERVED = 4096;

/** One module's C API with scratch memory for out-parameters and short strings. */
export class LuaApi {
  readonly x: LuaModule['x'];
  /** 16 bytes for out-parameters (a length, an isnum flag). */
  readonly scratch: Ptr;
  /** RESERVED bytes for short strings passed into Lua. */
  private readonly reserved: Ptr;
  /** A reusable buffer for longer strings passed into Lua. */
  private buf: Ptr = 0;
  private bufSize = 0;
  private readonly names = new Map<string, Ptr>();
  /**
   * The continuation a host call that waits yields with (control.ts sets it): see {@link WAIT}.
   * 0 until then, when no host function can wait.
   */
  waitK: Ptr = 0;

  constructor(readonly module: LuaModule) {
    this.x = module.x;
    this.scratch = this.x.malloc(16);
    this.reserved = this.x.malloc(RESERVED);
  }

  /** A C string constant (field names, chunk modes), made once per module. */
  name(s: string): Ptr {
    let p = this.names.get(s);
    if (p === undefined) {
      p = this.module.cstring(s);
      this.names.set(s, p);
    }
    return p;
  }

  /** The string (or number, converted in place) at `idx` as a copy of its bytes; null if neither. */
  bytes(L: Ptr, idx: number): Buffer | null {
    const p = this.x.lua_tolstring(L, idx, this.scratch);
    if (p === 0) return null;
    const heap = this.module.heap;
    const len = heap.readUInt32LE(this.scratch);
    const out = Buffer.allocUnsafe(len);
    heap.copy(out, 0, p, p + len);
    return out;
  }

  /** The string at `idx` decoded as UTF-8 (invalid bytes become U+FFFD); null if not a string/number. */
  text(L: Ptr, idx: number): string | null {
    const p = this.x.lua_tolstring(L, idx, this.scratch);
    if (p === 0) return null;
    const heap = this.module.heap;
    return heap.toString('utf8', p, p + heap.readUInt32LE(this.scratch));
  }

  /** Length of the string at `idx` after lua_tolstring (pointer returned, length in scratch). */
  view(L: Ptr, idx: number): { ptr: Ptr; len: number } | null {
    const p = this.x.lua_tolstring(L, idx, this.scratch);
    if (p === 0) return null;
    return { ptr: p, len: this.module.heap.readUInt32LE(this.scratch) };
  }

  /**
   * Room for `size` bytes in the reusable input buffer. A short string (an error message)
   * always has room, in a block reserved at start, even when the heap is full.
   */
  private room(size: number): Ptr {
    if (size <= RESERVED) return this.reserved;
    if (size > this.bufSize) {
      const p = this.x.malloc(size);
      if (p === 0) throw new Error('not enough memory for a string');
      if (this.buf !== 0) this.x.free(this.buf);
      this.buf = p;
      this.bufSize = size;
    }
    return this.buf;
  }

  /** Pushes a JS string (as UTF-8) or bytes as a Lua string. */
  push(L: Ptr, value: string | Uint8Array): void {
    if (typeof value === 'string') {
      const max = value.length * 3;
      const p = this.room(max);
      const n = this.module.heap.write(value, p, max, 'utf8');
      this.x.lua_pushlstring(L, p, n);
    } else {
      const p = this.room(value.length);
      this.module.heap.set(value, p);
      this.x.lua_pushlstring(L, p, value.length);
    }
  }

  /** t[name] = value at the top of the stack (popped), for a table at `idx`. */
  setField(L: Ptr, idx: number, name: string): void {
    this.x.lua_setfield(L, idx, this.name(name));
  }

  /** Pushes t[name] for the table at `idx`; returns its type. */
  getField(L: Ptr, idx: number, name: string): number {
    return this.x.lua_getfield(L, idx, this.name(name));
  }

  /**
   * Replaces the table at `idx` with the real table a shared module's untouched proxy shows
   * (shared-modules-lua.ts: an untouched proxy is empty), so that lua_next, lua_rawlen and
   * lua_rawgeti read its contents. Any other value is left as it is.
   */
  solid(L: Ptr, idx: number): void {
    const x = this.x;
    if (x.lua_type(L, idx) !== LUA_TTABLE) return;
    const at = x.lua_absindex(L, idx);
    x.lua_getfield(L, LUA_REGISTRYINDEX, this.name(VIEWS));
    x.lua_pushvalue(L, at);
    if (x.lua_rawget(L, -2) === LUA_TTABLE) x.lua_copy(L, -1, at);
    this.pop(L, 2);
  }

  /** Pops `n` values. */
  pop(L: Ptr, n: number): void {
    this.x.lua_settop(L, -n - 1);
  }

  /** Raises a Lua error `message` with the caller's position (luaL_error's "file:line: " prefix). */
  raise(L: Ptr, message: string): never {
    this.x.luaL_where(L, 1);
    this.push(L, message);
    this.x.lua_concat(L, 2);
    this.x.lua_error(L);
    throw new Error('lua_error returned');
  }

  /** Raises the value at the top of the stack as it is. */
  raiseTop(L: Ptr): never {
    this.x.lua_error(L);
    throw new Error('lua_error returned');
  }

  /**
   * Wraps a host function so that a JS exception becomes a Lua error at the call (the message
   * of an Error, as pcall sees it), while Lua's own error and yield paths (longjmps) pass
   * through untouched. An exception left loose would unwind C frames without Lua's cleanup.
   */
  guard(fn: (L: Ptr) => number): (L: Ptr) => number {
    return (L: Ptr): number => {
      let n: number;
      try {
        n = fn(L);
      } catch (err) {
        if (err === LONGJMP || isModuleFault(err)) throw err;
        return this.raise(L, err instanceof Error ? err.message : String(err));
      }
      // A host call that waits yields here, outside the try: the yield is a longjmp, which
      // emscripten makes a JS exception, and a catch on its way would only throw it again.
      return n === WAIT ? this.x.lua_yieldk(L, 0, 0, this.waitK) : n;
    };
  }

  /** Registers a guarded host function in the module's table; returns its C pointer. */
  cfunction(fn: (L: Ptr) => number): Ptr {
    return this.module.addFunction(this.guard(fn), 'ii');
  }

  /** Pushes a registered host function (a C closure with no upvalues). */
  pushFunction(L: Ptr, ptr: Ptr): void {
    this.x.lua_pushcclosure(L, ptr, 0);
  }
}

/**
 * What a guarded host function returns to yield for a host call it waits in (control.ts's
 * `wait` has set up the run): the guard yields with {@link LuaApi.waitK} outside its try.
 */
export const WAIT = -1;

/** True for the exception Lua's longjmp is (an error or a yield in flight). */
export function isLongjmp(err: unknown): boolean {
  return err === LONGJMP;
}

/**
 * An exception that may have unwound C frames without Lua's cleanup: an abort, a trap, a
 * native stack overflow (a RangeError, possibly from deep inside the C code). The module that
 * threw it cannot be trusted again.
 */
export function isModuleFault(err: unknown): boolean {
  return err instanceof WasmAbort || err instanceof RangeError || (err instanceof Error && err.constructor.name === 'RuntimeError');
}
