/**
 * The reference Lua 5.4 compiled to WebAssembly: the `glue.wasm` binary that the wasmoon
 * package ships, instantiated here with imports of our own instead of wasmoon's JavaScript.
 *
 * Why not wasmoon's loader: its glue is an assertion build that wraps every export in a
 * checking closure (a few hundred ns per C API call on the hot path), and it gives the C code
 * an in-memory file system, environment variables and `system()`. Scripts never reach those
 * (io, os.execute and package are not in the sandbox), but a loader that answers every file
 * and process syscall with an error makes sure. What the binary needs from its host is small:
 * the clock, heap growth (capped here: the bound of every state in the module together),
 * setjmp/longjmp emulation (Lua's errors and yields are longjmps; emscripten turns them into a
 * thrown `Infinity` caught in `invoke_vii`), and struct tm conversions for os.date/os.time.
 *
 * wasmoon is pinned to one version (package.json): the import and export names below belong to
 * that build, and test/lua54-wasm.test.ts checks them against the binary.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { wasm, type WasmMemory, type WasmModule, type WasmTable } from '../wasm-api.js';

/** Function pointers and `lua_State*`, `char*`... are 32-bit offsets into the module's memory. */
export type Ptr = number;

/** The C API entry points the engine calls, straight from the instance's exports. */
export interface LuaExports {
  memory: WasmMemory;
  __indirect_function_table: WasmTable;
  __wasm_call_ctors(): void;
  emscripten_stack_init(): void;
  emscripten_stack_get_free(): number;
  stackSave(): Ptr;
  stackRestore(sp: Ptr): void;
  setThrew(threw: number, value: number): void;
  malloc(size: number): Ptr;
  free(p: Ptr): void;
  realloc(p: Ptr, size: number): Ptr;

  lua_newstate(alloc: Ptr, ud: Ptr): Ptr;
  lua_close(L: Ptr): void;
  lua_newthread(L: Ptr): Ptr;
  lua_resetthread(L: Ptr): number;
  lua_atpanic(L: Ptr, panic: Ptr): Ptr;
  lua_setwarnf(L: Ptr, f: Ptr, ud: Ptr): void;
  lua_absindex(L: Ptr, idx: number): number;
  lua_gettop(L: Ptr): number;
  lua_settop(L: Ptr, idx: number): void;
  lua_pushvalue(L: Ptr, idx: number): void;
  lua_rotate(L: Ptr, idx: number, n: number): void;
  lua_copy(L: Ptr, from: number, to: number): void;
  lua_checkstack(L: Ptr, n: number): number;
  lua_xmove(from: Ptr, to: Ptr, n: number): void;
  lua_type(L: Ptr, idx: number): number;
  lua_isinteger(L: Ptr, idx: number): number;
  lua_isnumber(L: Ptr, idx: number): number;
  lua_isstring(L: Ptr, idx: number): number;
  lua_tonumberx(L: Ptr, idx: number, isnum: Ptr): number;
  lua_tointegerx(L: Ptr, idx: number, isnum: Ptr): bigint;
  lua_toboolean(L: Ptr, idx: number): number;
  lua_tolstring(L: Ptr, idx: number, len: Ptr): Ptr;
  lua_rawlen(L: Ptr, idx: number): bigint;
  lua_tocfunction(L: Ptr, idx: number): Ptr;
  lua_touserdata(L: Ptr, idx: number): Ptr;
  lua_tothread(L: Ptr, idx: number): Ptr;
  lua_topointer(L: Ptr, idx: number): Ptr;
  lua_rawequal(L: Ptr, a: number, b: number): number;
  lua_pushnil(L: Ptr): void;
  lua_pushnumber(L: Ptr, n: number): void;
  lua_pushinteger(L: Ptr, n: bigint): void;
  lua_pushlstring(L: Ptr, s: Ptr, len: number): Ptr;
  lua_pushstring(L: Ptr, s: Ptr): Ptr;
  lua_pushcclosure(L: Ptr, fn: Ptr, n: number): void;
  lua_pushboolean(L: Ptr, b: number): void;
  lua_pushlightuserdata(L: Ptr, p: Ptr): void;
  lua_pushthread(L: Ptr): number;
  lua_getglobal(L: Ptr, name: Ptr): number;
  lua_gettable(L: Ptr, idx: number): number;
  lua_getfield(L: Ptr, idx: number, k: Ptr): number;
  lua_geti(L: Ptr, idx: number, n: bigint): number;
  lua_rawget(L: Ptr, idx: number): number;
  lua_rawgeti(L: Ptr, idx: number, n: bigint): number;
  lua_rawgetp(L: Ptr, idx: number, p: Ptr): number;
  lua_createtable(L: Ptr, narr: number, nrec: number): void;
  lua_newuserdatauv(L: Ptr, size: number, nuv: number): Ptr;
  lua_getmetatable(L: Ptr, idx: number): number;
  lua_setglobal(L: Ptr, name: Ptr): void;
  lua_settable(L: Ptr, idx: number): void;
  lua_setfield(L: Ptr, idx: number, k: Ptr): void;
  lua_seti(L: Ptr, idx: number, n: bigint): void;
  lua_rawset(L: Ptr, idx: number): void;
  lua_rawseti(L: Ptr, idx: number, n: bigint): void;
  lua_rawsetp(L: Ptr, idx: number, p: Ptr): void;
  lua_setmetatable(L: Ptr, idx: number): number;
  lua_callk(L: Ptr, nargs: number, nresults: number, ctx: number, k: Ptr): void;
  lua_pcallk(L: Ptr, nargs: number, nresults: number, errfunc: number, ctx: number, k: Ptr): number;
  lua_load(L: Ptr, reader: Ptr, data: Ptr, chunkname: Ptr, mode: Ptr): number;
  lua_dump(L: Ptr, writer: Ptr, data: Ptr, strip: number): number;
  lua_yieldk(L: Ptr, nresults: number, ctx: number, k: Ptr): number;
  lua_resume(L: Ptr, from: Ptr, narg: number, nres: Ptr): number;
  lua_status(L: Ptr): number;
  lua_isyieldable(L: Ptr): number;
  lua_error(L: Ptr): number;
  lua_next(L: Ptr, idx: number): number;
  lua_concat(L: Ptr, n: number): void;
  lua_len(L: Ptr, idx: number): void;
  lua_getupvalue(L: Ptr, fn: number, n: number): Ptr;
  lua_setupvalue(L: Ptr, fn: number, n: number): Ptr;
  lua_getstack(L: Ptr, level: number, ar: Ptr): number;
  lua_getinfo(L: Ptr, what: Ptr, ar: Ptr): number;
  lua_sethook(L: Ptr, fn: Ptr, mask: number, count: number): void;
  luaL_traceback(L: Ptr, L1: Ptr, msg: Ptr, level: number): void;
  luaL_where(L: Ptr, level: number): void;
  luaL_tolstring(L: Ptr, idx: number, len: Ptr): Ptr;
  luaL_checklstring(L: Ptr, arg: number, len: Ptr): Ptr;
  luaL_optlstring(L: Ptr, arg: number, def: Ptr, len: Ptr): Ptr;
  luaL_checkinteger(L: Ptr, arg: number): bigint;
  luaL_optinteger(L: Ptr, arg: number, def: bigint): bigint;
  luaL_checknumber(L: Ptr, arg: number): number;
  luaL_optnumber(L: Ptr, arg: number, def: number): number;
  luaL_checktype(L: Ptr, arg: number, t: number): void;
  luaL_checkany(L: Ptr, arg: number): void;
  luaL_argerror(L: Ptr, arg: number, msg: Ptr): number;
  luaL_typeerror(L: Ptr, arg: number, tname: Ptr): number;
  luaL_loadbufferx(L: Ptr, buff: Ptr, size: number, name: Ptr, mode: Ptr): number;
  luaL_ref(L: Ptr, t: number): number;
  luaL_unref(L: Ptr, t: number, ref: number): void;
  luaL_requiref(L: Ptr, name: Ptr, openf: Ptr, glb: number): void;
  luaopen_base(L: Ptr): number;
  luaopen_coroutine(L: Ptr): number;
  luaopen_table(L: Ptr): number;
  luaopen_string(L: Ptr): number;
  luaopen_math(L: Ptr): number;
  luaopen_utf8(L: Ptr): number;
  luaopen_os(L: Ptr): number;
  luaL_openlibs(L: Ptr): void;
}

/** The wasm signatures of the C callbacks the engine supplies (see {@link LuaModule.addFunction}). */
export type Signature = 'ii' | 'iiii' | 'iiiii' | 'vii' | 'viii';

/** Thrown by the imports when the C code aborts or exits: the module is unusable after it. */
export class WasmAbort extends Error {}

/** Emscripten's longjmp: a thrown number, told apart from real errors by `e === e + 0`. */
const LONGJMP = Infinity;

// Emscripten's errno values (musl's numbering differs): what a refused syscall returns.
const EPERM = 63;
const WASI_EBADF = 8;

const require = createRequire(import.meta.url);
let compiled: WasmModule | null = null;

/** The binary, compiled once per process (instances are cheap to make from it). */
export function luaWasmModule(): WasmModule {
  compiled ??= new wasm.Module(readFileSync(require.resolve('wasmoon/dist/glue.wasm')));
  return compiled;
}

/**
 * One instance of the Lua binary: its own memory, C stack and function table. Every lua_State
 * the engine makes lives in one instance; an instance whose C code trapped (an abort, a native
 * stack overflow) is thrown away whole, since its heap may hold half-updated structures.
 */
export class LuaModule {
  readonly x: LuaExports;
  /** A Node Buffer over the whole memory, remade after the memory grows. */
  private view: Buffer;
  private readonly table: WasmTable;
  private readonly thunks = new Map<Signature, WasmModule>();

  constructor(
    /** The most bytes the memory may grow to; heap growth past it fails malloc (NULL). */
    readonly maxBytes: number,
  ) {
    // The imports close over the exports, which exist only once the instance does.
    const exp = {} as { x: LuaExports };
    const self = (): LuaModule => this;
    const heap32 = (): Int32Array => new Int32Array(exp.x.memory.buffer);
    const imports = {
      env: {
        abort: (): never => {
          throw new WasmAbort('the Lua module called abort()');
        },
        exit: (code: number): never => {
          throw new WasmAbort(`the Lua module called exit(${code})`);
        },
        invoke_vii: (index: number, a: number, b: number): void => {
          const sp = exp.x.stackSave();
          try {
            (self().table.get(index) as (a: number, b: number) => void)(a, b);
          } catch (err) {
            exp.x.stackRestore(sp);
            if (err !== LONGJMP) throw err;
            exp.x.setThrew(1, 0);
          }
        },
        _emscripten_throw_longjmp: (): never => {
          // Emscripten's protocol: invoke_* tells a longjmp from an error by a thrown number.
          // eslint-disable-next-line @typescript-eslint/only-throw-error
          throw LONGJMP;
        },
        emscripten_date_now: (): number => Date.now(),
        _emscripten_get_now_is_monotonic: (): number => 1,
        emscripten_resize_heap: (requested: number): number => {
          const memory = exp.x.memory;
          const want = requested >>> 0;
          if (want > this.maxBytes) return 0;
          // Grow by a fifth at least, as emscripten does, so a growing heap is not regrown per call.
          const target = Math.min(this.maxBytes, Math.max(want, memory.buffer.byteLength * 1.2));
          const pages = Math.ceil((target - memory.buffer.byteLength) / 65536);
          try {
            memory.grow(pages);
          } catch {
            return 0;
          }
          return 1;
        },
        system: (): number => -1,
        strftime: (out: number, max: number, format: number, tm: number): number => {
          const heap = this.heap;
          const text = strftime(heap.toString('latin1', format, heap.indexOf(0, format)), new Int32Array(exp.x.memory.buffer), tm);
          const bytes = Buffer.from(text, 'utf8');
          if (bytes.length >= max) return 0;
          this.heap.set(bytes, out);
          this.heap[out + bytes.length] = 0;
          return bytes.length;
        },
        _tzset_js: (): void => {},
        _mktime_js: (tm: number): bigint => BigInt(Math.floor(tmToDate(heap32(), tm, false) / 1000)),
        _localtime_js: (time: bigint, tm: number): void => dateToTm(heap32(), tm, Number(time) * 1000, false),
        _gmtime_js: (time: bigint, tm: number): void => dateToTm(heap32(), tm, Number(time) * 1000, true),
        __syscall_openat: (): number => -EPERM,
        __syscall_fcntl64: (): number => -EPERM,
        __syscall_ioctl: (): number => -EPERM,
        __syscall_dup3: (): number => -EPERM,
        __syscall_unlinkat: (): number => -EPERM,
        __syscall_rmdir: (): number => -EPERM,
        __syscall_renameat: (): number => -EPERM,
        __syscall_readlinkat: (): number => -EPERM,
      },
      wasi_snapshot_preview1: {
        // stdout/stderr writes (lua_writestring) are swallowed: scripts print through the host.
        fd_write: (_fd: number, iov: number, iovcnt: number, pnum: number): number => {
          const h = heap32();
          let n = 0;
          for (let i = 0; i < iovcnt; i++) n += h[(iov >> 2) + i * 2 + 1]!;
          h[pnum >> 2] = n;
          return 0;
        },
        fd_read: (): number => WASI_EBADF,
        fd_close: (): number => WASI_EBADF,
        fd_seek: (): number => WASI_EBADF,
        environ_sizes_get: (count: number, size: number): number => {
          const h = heap32();
          h[count >> 2] = 0;
          h[size >> 2] = 0;
          return 0;
        },
        environ_get: (): number => 0,
      },
    };
    const instance = new wasm.Instance(luaWasmModule(), imports);
    const x = instance.exports as unknown as LuaExports;
    exp.x = x;
    this.x = x;
    this.table = x.__indirect_function_table;
    this.view = Buffer.from(x.memory.buffer);
    x.emscripten_stack_init();
    x.__wasm_call_ctors();
  }

  /** The memory as a Buffer; valid until the next call into C that may grow the heap. */
  get heap(): Buffer {
    if (this.view.buffer !== this.x.memory.buffer) this.view = Buffer.from(this.x.memory.buffer);
    return this.view;
  }

  /** Bytes the memory holds now (it never shrinks). */
  get memoryBytes(): number {
    return this.x.memory.buffer.byteLength;
  }

  /**
   * Puts a JS function in the module's function table so C can call it through a pointer
   * (a lua_CFunction, a hook, the allocator). Plain JS functions cannot go in a wasm table, so
   * each is wrapped in a two-line wasm module that imports it with the C signature.
   */
  addFunction(fn: (...args: never[]) => unknown, sig: Signature): Ptr {
    let thunk = this.thunks.get(sig);
    if (!thunk) {
      thunk = new wasm.Module(thunkBytes(sig));
      this.thunks.set(sig, thunk);
    }
    const wrapped = new wasm.Instance(thunk, { e: { f: fn } }).exports.f;
    const index = this.table.grow(1);
    this.table.set(index, wrapped);
    return index;
  }

  /** Calls a C function of the module (a library function) by its pointer. */
  cfunction(ptr: Ptr): (L: Ptr) => number {
    return this.table.get(ptr) as (L: Ptr) => number;
  }

  /** A NUL-terminated copy of `s` in the heap that lives as long as the module. */
  cstring(s: string): Ptr {
    const bytes = Buffer.from(s + '\0', 'utf8');
    const p = this.x.malloc(bytes.length);
    if (p === 0) throw new WasmAbort('out of memory for a constant string');
    this.heap.set(bytes, p);
    return p;
  }
}

/** A minimal wasm module importing `e.f` with the C signature `sig` and exporting it as `f`. */
function thunkBytes(sig: Signature): Uint8Array {
  const I32 = 0x7f;
  const params = sig.slice(1).split('').map(() => I32);
  const results = sig[0] === 'v' ? [] : [I32];
  const type = [0x60, params.length, ...params, results.length, ...results];
  const section = (id: number, body: number[]): number[] => [id, body.length, ...body];
  const name = (s: string): number[] => [s.length, ...Buffer.from(s)];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, ...type]),
    ...section(2, [1, ...name('e'), ...name('f'), 0x00, 0]),
    ...section(7, [1, ...name('f'), 0x00, 0]),
  ]);
}

// struct tm as musl lays it out: sec, min, hour, mday, mon, year-1900, wday, yday, isdst, gmtoff.
function dateToTm(h: Int32Array, tm: number, ms: number, utc: boolean): void {
  const d = new Date(ms);
  const i = tm >> 2;
  const get = utc
    ? [d.getUTCSeconds(), d.getUTCMinutes(), d.getUTCHours(), d.getUTCDate(), d.getUTCMonth(), d.getUTCFullYear(), d.getUTCDay()]
    : [d.getSeconds(), d.getMinutes(), d.getHours(), d.getDate(), d.getMonth(), d.getFullYear(), d.getDay()];
  const [sec, min, hour, mday, mon, year, wday] = get as [number, number, number, number, number, number, number];
  const start = utc ? Date.UTC(year, 0, 1) : new Date(year, 0, 1).getTime();
  h[i] = sec;
  h[i + 1] = min;
  h[i + 2] = hour;
  h[i + 3] = mday;
  h[i + 4] = mon;
  h[i + 5] = year - 1900;
  h[i + 6] = wday;
  h[i + 7] = Math.floor((ms - start) / 86_400_000);
  h[i + 8] = 0;
  h[i + 9] = utc ? 0 : -d.getTimezoneOffset() * 60;
}

function tmToDate(h: Int32Array, tm: number, utc: boolean): number {
  const i = tm >> 2;
  const args = [h[i + 5]! + 1900, h[i + 4]!, h[i + 3]!, h[i + 2]!, h[i + 1]!, h[i]!] as const;
  const ms = utc ? Date.UTC(...args) : new Date(...args).getTime();
  if (!utc) dateToTm(h, tm, ms, false);
  return ms;
}

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

/**
 * C's strftime in the "C" locale over a struct tm in wasm memory, for os.date (Lua 5.4 checks
 * each conversion against its own list first and calls this once per conversion).
 */
export function strftime(format: string, h: Int32Array, tm: number): string {
  const i = tm >> 2;
  const [sec, min, hour, mday, mon, year, wday, yday] = [h[i]!, h[i + 1]!, h[i + 2]!, h[i + 3]!, h[i + 4]!, h[i + 5]! + 1900, h[i + 6]!, h[i + 7]!];
  const gmtoff = h[i + 9]!;
  const pad = (n: number, w = 2, c = '0'): string => String(n).padStart(w, c);
  // ISO 8601 week-based year and week (Monday first; week 1 holds the year's first Thursday).
  const isoWeek = (): [number, number] => {
    const wdayMon = (wday + 6) % 7;
    let y = year;
    let week = Math.floor((yday - wdayMon + 10) / 7);
    const weeksIn = (yr: number): number => {
      const jan1 = (wdayMon - yday + 7 * 60) % 7; // weekday (Mon=0) of Jan 1 of `year`
      const leap = (n: number): boolean => (n % 4 === 0 && n % 100 !== 0) || n % 400 === 0;
      const first = yr === year ? jan1 : (jan1 - (leap(yr) ? 366 : 365) % 7 + 7) % 7;
      return first === 3 || (first === 2 && leap(yr)) ? 53 : 52;
    };
    if (week < 1) {
      y = year - 1;
      week = weeksIn(y);
    } else if (week > weeksIn(year)) {
      y = year + 1;
      week = 1;
    }
    return [y, week];
  };
  const conv = (c: string): string => {
    switch (c) {
      case 'a': return DAYS[wday]!.slice(0, 3);
      case 'A': return DAYS[wday]!;
      case 'b': case 'h': return MONTHS[mon]!.slice(0, 3);
      case 'B': return MONTHS[mon]!;
      case 'c': return `${conv('a')} ${conv('b')} ${conv('e')} ${conv('T')} ${year}`;
      case 'C': return pad(Math.floor(year / 100));
      case 'd': return pad(mday);
      case 'D': case 'x': return `${pad(mon + 1)}/${pad(mday)}/${pad(year % 100)}`;
      case 'e': return pad(mday, 2, ' ');
      case 'F': return `${year}-${pad(mon + 1)}-${pad(mday)}`;
      case 'g': return pad(isoWeek()[0] % 100);
      case 'G': return String(isoWeek()[0]);
      case 'H': return pad(hour);
      case 'I': return pad(hour % 12 === 0 ? 12 : hour % 12);
      case 'j': return pad(yday + 1, 3);
      case 'm': return pad(mon + 1);
      case 'M': return pad(min);
      case 'n': return '\n';
      case 'p': return hour < 12 ? 'AM' : 'PM';
      case 'r': return `${conv('I')}:${pad(min)}:${pad(sec)} ${conv('p')}`;
      case 'R': return `${pad(hour)}:${pad(min)}`;
      case 'S': return pad(sec);
      case 't': return '\t';
      case 'T': case 'X': return `${pad(hour)}:${pad(min)}:${pad(sec)}`;
      case 'u': return String(wday === 0 ? 7 : wday);
      case 'U': return pad(Math.floor((yday + 7 - wday) / 7));
      case 'V': return pad(isoWeek()[1]);
      case 'w': return String(wday);
      case 'W': return pad(Math.floor((yday + 7 - ((wday + 6) % 7)) / 7));
      case 'y': return pad(year % 100);
      case 'Y': return String(year);
      case 'z': {
        const a = Math.abs(gmtoff) / 60;
        return `${gmtoff < 0 ? '-' : '+'}${pad(Math.floor(a / 60))}${pad(a % 60)}`;
      }
      case 'Z': return gmtoff === 0 ? 'UTC' : '';
      case '%': return '%';
      default: return '';
    }
  };
  return format.replace(/%[EO]?(.)/g, (_m, c: string) => conv(c));
}
