/**
 * Limits inside fengari itself, for the work a single VM instruction or library call can do
 * without the count hook looking (issue 16, items 6-8): the `..` operator, every result a
 * library function builds in a luaL_Buffer (string.format, gsub, table.concat, string.char,
 * utf8.char, string.pack...), comparisons made by table.sort without a Lua comparator, and the
 * steps of the pattern matcher (find, match, gmatch, gsub).
 *
 * fengari offers no allocator or work hooks, so each guard wraps something fengari reaches
 * through an object at run time (a module export, a class prototype), never its source. Each
 * checks the shape it expects first: if a fengari upgrade changes it, that guard is skipped (the
 * hook's sampling and the process watchdog remain) and {@link guardsInstalled} says which.
 */
import { lua, type LuaJsFunction, type LuaState } from 'fengari';
import lobject from 'fengari/src/lobject.js';
import lvm from 'fengari/src/lvm.js';
import fengariAux from 'fengari/src/lauxlib.js';
import { running } from './core.js';
import { BIG_STRING, charge, reserve, spend } from './limits.js';

/** fengari's OP_CONCAT opcode (lopcodes.js OpCodesI) and "running a Lua function" call bit. */
const OP_CONCAT = 29;
const CIST_LUA = 1 << 1;

/** The parts of fengari's objects the guards read (lobject.js, lstate.js, lopcodes.js). */
interface TValue {
  ttisstring(): boolean;
  vslen(): number;
}
interface CallInfo {
  callstatus: number;
  l_base: number;
  l_savedpc: number;
  l_code: Array<{ opcode: number; B: number }> | null;
}
interface State {
  top: number;
  stack: Array<TValue | undefined>;
  ci: CallInfo;
}
type Lessthan = (L: LuaState, l: TValue, r: TValue) => number;
type Concat = (L: LuaState, total: number) => void;

/** Which guards are in place (false: fengari's shape was not the one expected). */
export const guardsInstalled = { results: false, operands: false, apiConcat: false, buffers: false, compare: false, patterns: false };

let installed = false;

/** Installs the guards on fengari's modules, once per process (they find the run through `running`). */
export function installGuards(): void {
  if (installed) return;
  installed = true;
  guardConcatResults();
  guardConcatOperands();
  guardApiConcat();
  guardBuffers();
  guardCompare();
}

/** Sum of the lengths of the strings in L's stack slots [from, to); other values count 0. */
function stringBytes(L: State, from: number, to: number, vslen: () => number): number {
  let total = 0;
  for (let k = from; k < to; k++) {
    const o = L.stack[k];
    if (o !== undefined && o.ttisstring()) total += vslen.call(o);
  }
  return total;
}

/**
 * Charges big results of `..` after they are built. fengari's VM stores every concatenation
 * result through `lobject.setsvalue2s`, which it calls through the module object. This stays
 * as the backstop for results the operand check below cannot see (a yield resumed inside a
 * `__concat`).
 */
function guardConcatResults(): void {
  const target = lobject as { setsvalue2s?: unknown };
  const original = target.setsvalue2s;
  if (typeof original !== 'function') return;
  const store = original as (L: LuaState, idx: number, ts: { tsslen(): number }) => void;
  target.setsvalue2s = (L: LuaState, idx: number, ts: { tsslen(): number }): void => {
    store(L, idx, ts);
    checkedTop = null;
    const run = running.current;
    if (run !== null) {
      const size = ts.tsslen();
      if (size >= BIG_STRING) charge(L, run, size);
    }
  };
  guardsInstalled.results = true;
}

/** The top operand whose concatenation was checked last (luaV_concat reads it twice a pass). */
let checkedTop: TValue | null = null;

/**
 * Checks a `..` BEFORE it allocates. One OP_CONCAT joins all its operands at once: `s..s..s`
 * with 20 operands of 48 MiB allocated and filled 960 MiB before any check (issue 16, item 7).
 * The VM's concatenation is internal to lvm.js, but it reads each operand's length through
 * the TValue method `vslen`, before allocating: wrapped, it sees a big operand at the top of the
 * stack of the run's current thread while that thread executes OP_CONCAT, sums the strings
 * among the instruction's operands, and reserves that much first. Other callers of vslen (`#s`,
 * lua_rawlen) pay one comparison.
 */
function guardConcatOperands(): void {
  const proto = (lobject as { TValue?: { prototype?: { vslen?: unknown } } }).TValue?.prototype;
  if (proto === undefined || typeof proto.vslen !== 'function') return;
  const vslen = proto.vslen as () => number;
  proto.vslen = function (this: TValue): number {
    const n = vslen.call(this);
    if (n >= BIG_STRING) checkConcat(this, vslen);
    return n;
  };
  guardsInstalled.operands = true;
}

function checkConcat(tv: TValue, vslen: () => number): void {
  const run = running.current;
  const L = run?.thread as State | null | undefined;
  if (!run || !L || tv === checkedTop || L.stack[L.top - 1] !== tv) return;
  const ci = L.ci;
  if (!(ci.callstatus & CIST_LUA) || ci.l_code === null) return;
  const inst = ci.l_code[ci.l_savedpc - 1];
  if (inst === undefined || inst.opcode !== OP_CONCAT) return;
  checkedTop = tv;
  // Operands are registers B..C; luaV_concat works down from the top, so the ones left are
  // those from B up to the current top (each pass pops what it joined).
  const total = stringBytes(L, ci.l_base + inst.B, L.top, vslen);
  if (total >= BIG_STRING) reserve(L as unknown as LuaState, run, total);
}

/** lua_concat and lua_pushfstring call the exported luaV_concat: check their operands too. */
function guardApiConcat(): void {
  const target = lvm as { luaV_concat?: unknown };
  const original = target.luaV_concat;
  const vslen = (lobject as { TValue?: { prototype?: { vslen?: unknown } } }).TValue?.prototype?.vslen;
  if (typeof original !== 'function' || typeof vslen !== 'function') return;
  const concat = original as Concat;
  target.luaV_concat = (L: LuaState, total: number): void => {
    const run = running.current;
    if (run !== null) {
      const S = L as unknown as State;
      const bytes = stringBytes(S, S.top - total, S.top, vslen as () => number);
      if (bytes >= BIG_STRING) reserve(L, run, bytes);
    }
    concat(L, total);
  };
  guardsInstalled.apiConcat = true;
}

/**
 * Every string a library function builds piece by piece goes through a luaL_Buffer, whose
 * storage grows by doubling (`B.b = newbuff` in luaL_prepbuffsize): gsub's result, format's,
 * table.concat's, string.char's, pack's. An accessor on the class's `b` sees each new storage
 * before anything is written to it past the old size, and reserves the growth: a gsub building
 * 2 GB (issue 16, item 6) stops at the budget instead, and reads of a big buffer count as work
 * for the CPU limit. Big sizes only (>= 64 KiB): the hot path (short format results) pays an
 * accessor V8 inlines and a length comparison.
 */
function guardBuffers(): void {
  const Buffer = (fengariAux as { luaL_Buffer?: unknown }).luaL_Buffer;
  if (typeof Buffer !== 'function') return;
  const proto = (Buffer as { prototype: object }).prototype;
  const sample = new (Buffer as new () => Record<string, unknown>)();
  if (Object.getOwnPropertyDescriptor(proto, 'b') || !(sample.b instanceof Uint8Array) || !('L' in sample)) return;
  Object.defineProperty(proto, 'b', {
    configurable: true,
    get(this: { storage: Uint8Array; L: LuaState | null }): Uint8Array {
      const storage = this.storage;
      // Filling a big buffer is work too: gsub adds its replacement a byte at a time (1 MiB
      // replacements: about 1 s per 8 MiB of result, between two growths).
      if (storage.length >= BIG_STRING && this.L) spend(this.L, 1);
      return storage;
    },
    set(this: { storage: Uint8Array | undefined; L: LuaState | null }, next: Uint8Array) {
      const old = this.storage?.length ?? 0;
      if (next.length >= BIG_STRING && next.length > old && this.L) {
        const run = running.current;
        if (run !== null) reserve(this.L, run, next.length - old);
      }
      this.storage = next;
    },
  });
  guardsInstalled.buffers = true;
}

/**
 * table.sort without a comparator compares through lua_compare, which calls the exported
 * `lvm.luaV_lessthan` (the VM's own `<` uses its local copy, so scripts' comparisons are not
 * slowed): counted, a sort of a big table stops at the CPU limit. It ran 2.3-2.6 s with a
 * 1 s limit and answered 200 (issue 16, item 8).
 */
function guardCompare(): void {
  const target = lvm as { luaV_lessthan?: unknown };
  const original = target.luaV_lessthan;
  if (typeof original !== 'function') return;
  const lessthan = original as Lessthan;
  target.luaV_lessthan = (L: LuaState, l: TValue, r: TValue): number => {
    spend(L, 1);
    return lessthan(L, l, r);
  };
  guardsInstalled.compare = true;
}

/**
 * The pattern matcher (lstrlib.js) counts its recursion in `ms.matchdepth` on every step of
 * every match: an accessor on its class makes each step a unit of {@link spend}, so find,
 * match, gmatch and gsub stop at the CPU limit, even on a pathological pattern. The class is
 * not exported: its prototype is found through a gmatch iterator, whose third upvalue is its
 * state. Takes the string library's `gmatch` from the top of L's stack.
 */
export function guardPatterns(L: LuaState): void {
  const top = lua.lua_gettop(L);
  try {
    lua.lua_pushstring(L, '');
    lua.lua_pushstring(L, '');
    lua.lua_call(L, 2, 1);
    if (lua.lua_getupvalue(L, -1, 3) === null) return;
    const state = lua.lua_touserdata(L, -1) as { ms?: Record<string, unknown> } | null;
    const ms = state?.ms;
    if (!ms || typeof ms.matchdepth !== 'number' || !('L' in ms)) return;
    const proto = Object.getPrototypeOf(ms) as object;
    if (Object.getOwnPropertyDescriptor(proto, 'matchdepth')) return;
    Object.defineProperty(proto, 'matchdepth', {
      configurable: true,
      get(this: { depth: number }): number {
        return this.depth;
      },
      set(this: { depth: number; L: LuaState | null | undefined }, depth: number) {
        this.depth = depth;
        if (this.L) spend(this.L, 1);
      },
    });
    guardsInstalled.patterns = true;
  } finally {
    lua.lua_settop(L, top - 1);
  }
}

/** A JS function called as a comparator (or in any library loop) counts as work per call. */
export function countedCall(L: LuaState): number {
  spend(L, 1);
  lua.lua_pushvalue(L, lua.lua_upvalueindex(1));
  lua.lua_insert(L, 1);
  lua.lua_call(L, lua.lua_gettop(L) - 1, lua.LUA_MULTRET);
  return lua.lua_gettop(L);
}

/** table.sort, with a comparator that is a JS function counted per call (Lua ones are hooked). */
export function guardSort(sort: LuaJsFunction): LuaJsFunction {
  return (L) => {
    if (lua.lua_type(L, 2) === lua.LUA_TFUNCTION && lua.lua_iscfunction(L, 2)) {
      lua.lua_pushvalue(L, 2);
      lua.lua_pushcclosure(L, countedCall, 1);
      lua.lua_replace(L, 2);
    }
    return sort(L);
  };
}
