/**
 * The data library's bindings (README, "Script library"): the `json`, `base64`, `url`, `crypto`
 * and `time` tables, over host/codecs.ts (Node does the work) and lua-json.ts (the cjson rules).
 * Lua strings are bytes: they reach the host as the bytes fengari keeps (Uint8Array), never
 * decoded, and bytes come back as bytes. Apart from the request and response bindings because
 * none of these needs the request: they are pure functions of their arguments.
 */
import { lauxlib, lua, type LuaJsFunction, type LuaState } from 'fengari';
import {
  base64Decode,
  base64Encode,
  digest,
  hmac,
  httpDate,
  parseHttpDate,
  randomBytes,
  timingSafeEqual,
  uriEscape,
  uriUnescape,
  utf8OrNull,
  type Digest,
} from '../../host/codecs.js';
import { jsonToLua, luaToJson, STACK_SLACK, type LuaStack } from '../../lua-json.js';
import { jsfn, runOf, text } from '../core.js';
import { readOnly } from '../libs.js';
import { BIG_STRING, charge, reserve, spend } from '../limits.js';

const { luaL_checklstring, luaL_checknumber, luaL_checkinteger } = lauxlib;
const {
  LUA_TTABLE,
  lua_createtable,
  lua_pushboolean,
  lua_pushjsfunction,
  lua_pushlightuserdata,
  lua_pushnil,
  lua_pushstring,
  lua_setfield,
  lua_topointer,
  lua_type,
} = lua;

/** json.null: a light userdata, as cjson.null is; the same value in every request. */
const JSON_NULL = Object.freeze({ lodestone: 'json.null' });

/** Tables json.array() marked (and json.decode's arrays): weak, so a request's tables are not kept. */
const arrays = new WeakSet<object>();

/** Bytes of a result as a Lua string, a large one charged to the run's memory budget first. */
function pushBytes(L: LuaState, bytes: Uint8Array | string): number {
  if (bytes.length >= BIG_STRING) reserve(L, runOf(L), bytes.length);
  lua_pushstring(L, bytes);
  return 1;
}

function latin1(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1');
}

/** fengari's stack for the JSON walk (lua-json.ts). */
function stackOf(L: LuaState): LuaStack {
  const run = runOf(L);
  return {
    top: () => lua.lua_gettop(L),
    type: (i) => lua_type(L, i),
    toBoolean: (i) => lua.lua_toboolean(L, i),
    toNumber: (i) => lua.lua_tonumberx(L, i) as number,
    text: (i) => utf8OrNull(lua.lua_tolstring(L, i)!),
    isNull: (i) => lua.lua_touserdata(L, i) === JSON_NULL,
    identity: (i) => lua_topointer(L, i),
    isMarked: (i) => arrays.has(lua_topointer(L, i)!),
    rawlen: (i) => lua.lua_rawlen(L, i),
    next: (i) => lua.lua_next(L, i) !== 0,
    rawgeti: (i, n) => lua.lua_rawgeti(L, i, n),
    pop: (n) => lua.lua_pop(L, n),
    checkStack: (n) => {
      if (!lua.lua_checkstack(L, n + STACK_SLACK)) throw new Error('json: Lua stack overflow');
    },
    pushNil: () => lua_pushnil(L),
    pushNull: () => lua_pushlightuserdata(L, JSON_NULL),
    pushBoolean: (b) => lua_pushboolean(L, b),
    // fengari's integers are 32-bit: a whole number past them stays a float.
    pushNumber: (n) => (Number.isInteger(n) && n >= -0x80000000 && n <= 0x7fffffff ? lua.lua_pushinteger(L, n) : lua.lua_pushnumber(L, n)),
    pushString: (s) => {
      if (s.length >= BIG_STRING) reserve(L, run, s.length * 3);
      lua_pushstring(L, s);
    },
    pushTable: (narr, nrec, array) => {
      lua_createtable(L, narr, nrec);
      if (array) arrays.add(lua_topointer(L, -1)!);
    },
    rawset: (i) => lua.lua_rawset(L, i),
    rawseti: (i, n) => lua.lua_rawseti(L, i, n),
    // The walk is JS, which the count hook never interrupts: count it as work, and its values
    // (Lua's on decode, JS's on encode) as memory, ~48 bytes each.
    tick: (units) => {
      spend(L, units);
      charge(L, run, units * 48);
    },
  };
}

const json: Record<string, LuaJsFunction> = {
  encode: (L) => {
    lauxlib.luaL_checkany(L, 1);
    lua.lua_settop(L, 1);
    return pushBytes(L, luaToJson(stackOf(L), 1));
  },
  decode: (L) => {
    jsonToLua(stackOf(L), luaL_checklstring(L, 1));
    return 1;
  },
  array: (L) => {
    lauxlib.luaL_checktype(L, 1, LUA_TTABLE);
    arrays.add(lua_topointer(L, 1)!);
    lua.lua_settop(L, 1);
    return 1;
  },
};

const decoded = (L: LuaState, bytes: Buffer | null): number => {
  if (bytes === null) {
    lua_pushnil(L);
    return 1;
  }
  return pushBytes(L, bytes);
};

const base64: Record<string, LuaJsFunction> = {
  encode: (L) => pushBytes(L, base64Encode(luaL_checklstring(L, 1), false)),
  decode: (L) => decoded(L, base64Decode(latin1(luaL_checklstring(L, 1)), false)),
  encode_url: (L) => pushBytes(L, base64Encode(luaL_checklstring(L, 1), true)),
  decode_url: (L) => decoded(L, base64Decode(latin1(luaL_checklstring(L, 1)), true)),
};

const url: Record<string, LuaJsFunction> = {
  escape: (L) => pushBytes(L, uriEscape(luaL_checklstring(L, 1))),
  unescape: (L) => pushBytes(L, uriUnescape(luaL_checklstring(L, 1))),
};

const hashOf =
  (alg: Digest): LuaJsFunction =>
  (L) =>
    pushBytes(L, digest(alg, luaL_checklstring(L, 1)));

const crypto: Record<string, LuaJsFunction> = {
  md5: hashOf('md5'),
  sha1: hashOf('sha1'),
  sha256: hashOf('sha256'),
  sha512: hashOf('sha512'),
  hmac: (L) => pushBytes(L, hmac(text(luaL_checklstring(L, 1)), luaL_checklstring(L, 2), luaL_checklstring(L, 3))),
  random_bytes: (L) => pushBytes(L, randomBytes(luaL_checkinteger(L, 1))),
  timing_safe_equal: (L) => {
    lua_pushboolean(L, timingSafeEqual(luaL_checklstring(L, 1), luaL_checklstring(L, 2)));
    return 1;
  },
};

const time: Record<string, LuaJsFunction> = {
  // A float, as ngx.now() is (and fengari's 32-bit integers could not hold it).
  now: (L) => {
    lua.lua_pushnumber(L, Date.now());
    return 1;
  },
  http_date: (L) => pushBytes(L, httpDate(luaL_checknumber(L, 1))),
  parse_http_date: (L) => {
    const seconds = parseHttpDate(text(luaL_checklstring(L, 1)));
    if (seconds === null) lua_pushnil(L);
    else if (seconds >= -0x80000000 && seconds <= 0x7fffffff) lua.lua_pushinteger(L, seconds);
    else lua.lua_pushnumber(L, seconds);
    return 1;
  },
};

/** Adds the read-only `json`, `base64`, `url`, `crypto` and `time` tables to the table at the top of the stack. */
export function registerLibrary(L: LuaState): void {
  const tables: Record<string, Record<string, LuaJsFunction>> = { json, base64, url, crypto, time };
  for (const name in tables) {
    const fns = tables[name]!;
    lua_createtable(L, 0, 8);
    for (const fn in fns) {
      lua_pushjsfunction(L, jsfn(fns[fn]!));
      lua_setfield(L, -2, fn);
    }
    if (name === 'json') {
      lua_pushlightuserdata(L, JSON_NULL);
      lua_setfield(L, -2, 'null');
    }
    readOnly(L, name);
    lua_setfield(L, -2, name);
  }
}

