/**
 * The standard libraries a script sees, opened once per engine and shared by every request, so
 * they are read-only (a request must not change what the next one runs) and their amplifying
 * functions are capped (one call must not build gigabytes before the hook looks): string.rep
 * and string.pack reserve their result's size first; results built in a luaL_Buffer (format,
 * gsub, table.concat, char...) reserve each growth, and pattern steps and sort comparisons count
 * towards the CPU limit (lua/guards.ts); table.insert/remove/move count their element moves.
 */
import { lauxlib, lua, lualib, type LuaJsFunction, type LuaState } from 'fengari';
import { S, raise, remove, runOf, setFunction } from './core.js';
import { coResume, coWrap } from './control.js';
import { failLimit, reserve, spend } from './limits.js';
import { guardPatterns, guardSort } from './guards.js';

const {
  lua_createtable,
  lua_getfield,
  lua_next,
  lua_pushboolean,
  lua_pushcclosure,
  lua_pushjsfunction,
  lua_pushnil,
  lua_pushstring,
  lua_pushvalue,
  lua_setfield,
  lua_setmetatable,
  lua_settop,
  lua_tocfunction,
  lua_topointer,
  lua_type,
  lua_upvalueindex,
} = lua;
const { luaL_checkinteger, luaL_checklstring, luaL_optlstring } = lauxlib;

/** Elements one table.move may touch: it loops in JS, where the CPU hook cannot stop it. */
export const MAX_MOVE = 1 << 20;

/** Tables a script must not change even with rawset (the read-only library proxies). */
export const readOnlyTables = new WeakSet<object>();

/** The JS function stored at `name` in the table at the top of the stack. */
function original(L: LuaState, name: string): LuaJsFunction {
  lua_getfield(L, -1, name);
  const f = lua_tocfunction(L, -1);
  lua.lua_pop(L, 1);
  if (f === null) throw new Error(`fengari library function ${name} missing`);
  return f;
}

/** string.rep that reserves its result first and builds it by doubling, not n small copies. */
const rep: LuaJsFunction = (L) => {
  const s = luaL_checklstring(L, 1);
  const n = luaL_checkinteger(L, 2);
  const sep = luaL_optlstring(L, 3, '')!;
  const unit = s.length + sep.length;
  if (n <= 0 || unit === 0) {
    lua_pushstring(L, '');
    return 1;
  }
  const total = n * unit - sep.length;
  reserve(L, runOf(L), total);
  const out = new Uint8Array(total);
  out.set(s, 0);
  if (total > s.length) out.set(sep, s.length);
  for (let filled = Math.min(unit, total); filled < total; filled *= 2) {
    out.copyWithin(filled, 0, Math.min(filled, total - filled));
  }
  lua_pushstring(L, out);
  return 1;
};

/** string.pack, refusing sizes (the `c<n>` padding loop) that add up past the memory budget. */
function guardPack(pack: LuaJsFunction): LuaJsFunction {
  return (L) => {
    const fmt = luaL_checklstring(L, 1);
    let sum = 0;
    let n = 0;
    for (const c of fmt) {
      if (c >= 48 && c <= 57) n = n * 10 + (c - 48);
      else {
        sum += n;
        n = 0;
      }
    }
    reserve(L, runOf(L), sum + n);
    return pack(L);
  };
}

/**
 * table.insert / table.remove: shifting the elements after the position is a loop in JS, one
 * VM instruction, so the elements it may move count as work (a 600k-element table shifted
 * 1000 times between two hook calls would otherwise run for seconds unchecked).
 */
function guardShift(shift: LuaJsFunction): LuaJsFunction {
  return (L) => {
    if (lua_type(L, 1) === lua.LUA_TTABLE) spend(L, lua.lua_rawlen(L, 1));
    return shift(L);
  };
}

/** table.move: bounded, since a huge range of nils costs CPU the hook cannot interrupt. */
function guardMove(move: LuaJsFunction): LuaJsFunction {
  return (L) => {
    const f = luaL_checkinteger(L, 2);
    const e = luaL_checkinteger(L, 3);
    if (e - f >= MAX_MOVE) failLimit(L, runOf(L), `table.move of more than ${MAX_MOVE} elements`);
    if (e >= f) spend(L, e - f + 1);
    return move(L);
  };
}

/** Opens a fengari library; leaves its table on the stack. */
function open(L: LuaState, name: string, openf: LuaJsFunction): void {
  lauxlib.luaL_requiref(L, name, openf, false);
}

/** Opens `string`, caps it, and hides the string metatable (its __index is the real table). */
function openString(L: LuaState): void {
  open(L, 'string', lualib.luaopen_string);
  setFunction(L, 'rep', rep);
  setFunction(L, 'pack', guardPack(original(L, 'pack')));
  lua_getfield(L, -1, 'gmatch');
  guardPatterns(L);
  // Bytecode is for the engine's cache only; scripts cannot load it anyway.
  lua_pushnil(L);
  lua_setfield(L, -2, 'dump');
  lua_pushstring(L, '');
  lua.lua_getmetatable(L, -1);
  lua_pushboolean(L, false);
  lua_setfield(L, -2, S.__metatable);
  lua_settop(L, -3);
}

function openTable(L: LuaState): void {
  open(L, 'table', lualib.luaopen_table);
  setFunction(L, 'sort', guardSort(original(L, 'sort')));
  setFunction(L, 'insert', guardShift(original(L, 'insert')));
  setFunction(L, 'remove', guardShift(original(L, 'remove')));
  setFunction(L, 'move', guardMove(original(L, 'move')));
}

function openMath(L: LuaState): void {
  open(L, 'math', lualib.luaopen_math);
  // fengari keeps one random state for the whole process: a seed set by one request would make
  // the next request's numbers predictable. Unseeded, math.random uses Math.random.
  setFunction(L, 'randomseed', () => 0);
}

/** os with only the clock functions; nothing that touches files, processes or the environment. */
function openOs(L: LuaState): void {
  open(L, 'os', lualib.luaopen_os);
  lua_createtable(L, 0, 3);
  for (const name of ['time', 'clock', 'date']) {
    lua_getfield(L, -2, name);
    lua_setfield(L, -2, name);
  }
  remove(L, -2);
}

function openCoroutine(L: LuaState): void {
  open(L, 'coroutine', lualib.luaopen_coroutine);
  setFunction(L, 'resume', coResume);
  setFunction(L, 'wrap', coWrap);
}

/** Iterates the real table behind a read-only proxy, without handing the table out. */
const proxyNext: LuaJsFunction = (L) => {
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 2);
  if (lua_next(L, 3) !== 0) return 2;
  lua_pushnil(L);
  return 1;
};

const proxyPairs: LuaJsFunction = (L) => {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, proxyNext, 1);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
};

/**
 * Replaces the table at the top of the stack with an empty read-only proxy: reads go to the
 * table (__index), writes raise (__newindex), pairs() iterates it, and the metatable is hidden.
 */
export function readOnly(L: LuaState, name: string): void {
  lua_createtable(L, 0, 0);
  readOnlyTables.add(lua_topointer(L, -1)!);
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, S.__index);
  lua_pushjsfunction(L, (L1) => raise(L1, `attempt to modify read-only table '${name}'`));
  lua_setfield(L, -2, S.__newindex);
  lua_pushvalue(L, -3);
  lua_pushcclosure(L, proxyPairs, 1);
  lua_setfield(L, -2, S.__pairs);
  lua_pushboolean(L, false);
  lua_setfield(L, -2, S.__metatable);
  lua_setmetatable(L, -2);
  remove(L, -2);
}

/** Opens the safe libraries into the table at the top of the stack, each as a read-only proxy. */
export function openLibraries(L: LuaState): void {
  const libs: Array<[string, (L: LuaState) => void]> = [
    ['string', openString],
    ['table', openTable],
    ['math', openMath],
    ['utf8', (L1) => open(L1, 'utf8', lualib.luaopen_utf8)],
    ['os', openOs],
    ['coroutine', openCoroutine],
  ];
  for (const [name, openLib] of libs) {
    openLib(L);
    if (name === 'table') {
      // Lua 5.1's global unpack, which mod_magnet-era scripts use.
      lua_getfield(L, -1, 'unpack');
      lua_setfield(L, -3, 'unpack');
    }
    readOnly(L, name);
    lua_setfield(L, -2, name);
  }
}
