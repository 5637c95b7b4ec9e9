/**
 * The data library's bindings (README, "Script library"): the host functions behind the `json`,
 * `base64`, `url`, `crypto` and `time` tables the sandbox builds (sandbox-lua.ts), over
 * host/codecs.ts (Node does the work) and lua-json.ts (the cjson rules). Lua strings are bytes:
 * they are read out of wasm memory as bytes, never decoded, and bytes go back as bytes.
 */
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
import { LUA_REGISTRYINDEX, LUA_TTABLE } from '../capi.js';
import type { Bindings } from '../run.js';
import type { Ptr } from '../wasm.js';

/** Registry field of the weak set of tables json.array() marked (made by the sandbox). */
const ARRAYS = 'lodestone.json.arrays';

/** The host functions of this capability, by their names in the sandbox. */
export function bindLibrary(b: Bindings): Record<string, (L: Ptr) => number> {
  const { api } = b;
  const x = api.x;

  const bytesArg = (L: Ptr, idx: number): Buffer => {
    x.luaL_checklstring(L, idx, 0);
    return api.bytes(L, idx)!;
  };
  // Long results go in as bytes: api.push reserves 3 bytes a character for a JS string.
  const pushResult = (L: Ptr, value: string | Buffer | null): number => {
    if (value === null) x.lua_pushnil(L);
    else api.push(L, typeof value === 'string' && value.length > 4096 ? Buffer.from(value) : value);
    return 1;
  };

  /** lua54's stack for the JSON walk (lua-json.ts); `arrays` is the index of the marked set. */
  const stackOf = (L: Ptr, arrays: number): LuaStack => ({
    top: () => x.lua_gettop(L),
    type: (i) => x.lua_type(L, i),
    toBoolean: (i) => x.lua_toboolean(L, i) !== 0,
    toNumber: (i) => x.lua_tonumberx(L, i, 0),
    text: (i) => {
      const v = api.view(L, i)!;
      return utf8OrNull(api.module.heap.subarray(v.ptr, v.ptr + v.len));
    },
    isNull: (i) => x.lua_touserdata(L, i) === 0,
    identity: (i) => x.lua_topointer(L, i),
    solid: (i) => api.solid(L, i),
    isMarked: (i) => {
      x.lua_pushvalue(L, i);
      x.lua_rawget(L, arrays);
      const marked = x.lua_toboolean(L, -1) !== 0;
      api.pop(L, 1);
      return marked;
    },
    rawlen: (i) => Number(x.lua_rawlen(L, i)),
    next: (i) => x.lua_next(L, i) !== 0,
    rawgeti: (i, n) => void x.lua_rawgeti(L, i, BigInt(n)),
    pop: (n) => api.pop(L, n),
    checkStack: (n) => {
      if (x.lua_checkstack(L, n + STACK_SLACK) === 0) throw new Error('json: Lua stack overflow');
    },
    pushNil: () => x.lua_pushnil(L),
    pushNull: () => x.lua_pushlightuserdata(L, 0),
    pushBoolean: (v) => x.lua_pushboolean(L, v ? 1 : 0),
    pushNumber: (n) => (Number.isSafeInteger(n) ? x.lua_pushinteger(L, BigInt(n)) : x.lua_pushnumber(L, n)),
    pushString: (s) => api.push(L, s.length > 4096 ? Buffer.from(s) : s),
    pushTable: (narr, nrec, array) => {
      x.lua_createtable(L, narr, nrec);
      if (array) {
        x.lua_pushvalue(L, -1);
        x.lua_pushboolean(L, 1);
        x.lua_rawset(L, arrays);
      }
    },
    rawset: (i) => x.lua_rawset(L, i),
    rawseti: (i, n) => x.lua_rawseti(L, i, BigInt(n)),
    // The walk is JS, which the count hook never interrupts: check the CPU limit as it would
    // (memory needs no check here: the state's allocator refuses past the budget).
    tick: () => {
      const run = b.current(L);
      const host = run.host;
      if (!host.fatal && run.cpu + performance.now() - run.sliceStart > host.limits.cpuMs) host.abort('limit', `CPU time over ${host.limits.cpuMs} ms`);
      if (host.fatal) {
        api.push(L, host.fatal.message);
        api.raiseTop(L);
      }
    },
  });

  /** Pushes the marked set; returns its index. */
  const pushArrays = (L: Ptr): number => {
    api.getField(L, LUA_REGISTRYINDEX, ARRAYS);
    return x.lua_gettop(L);
  };

  const hashOf =
    (alg: Digest) =>
    (L: Ptr): number =>
      pushResult(L, digest(alg, bytesArg(L, 1)));

  return {
    /** Called once by the sandbox with the weak table json.array() fills. */
    json_setup(L) {
      x.luaL_checktype(L, 1, LUA_TTABLE);
      x.lua_settop(L, 1);
      api.setField(L, LUA_REGISTRYINDEX, ARRAYS);
      return 0;
    },
    /** json.null: a NULL light userdata, as cjson.null is. */
    json_null(L) {
      x.lua_pushlightuserdata(L, 0);
      return 1;
    },
    json_encode(L) {
      x.luaL_checkany(L, 1);
      x.lua_settop(L, 1);
      return pushResult(L, luaToJson(stackOf(L, pushArrays(L)), 1));
    },
    json_decode(L) {
      const text = bytesArg(L, 1);
      x.lua_settop(L, 1);
      jsonToLua(stackOf(L, pushArrays(L)), text);
      return 1;
    },
    base64_encode: (L) => pushResult(L, base64Encode(bytesArg(L, 1), false)),
    base64_decode: (L) => pushResult(L, base64Decode(bytesArg(L, 1).toString('latin1'), false)),
    base64_encode_url: (L) => pushResult(L, base64Encode(bytesArg(L, 1), true)),
    base64_decode_url: (L) => pushResult(L, base64Decode(bytesArg(L, 1).toString('latin1'), true)),
    url_escape: (L) => pushResult(L, uriEscape(bytesArg(L, 1))),
    url_unescape: (L) => pushResult(L, uriUnescape(bytesArg(L, 1))),
    crypto_md5: hashOf('md5'),
    crypto_sha1: hashOf('sha1'),
    crypto_sha256: hashOf('sha256'),
    crypto_sha512: hashOf('sha512'),
    crypto_hmac(L) {
      x.luaL_checklstring(L, 1, 0);
      return pushResult(L, hmac(api.text(L, 1)!, bytesArg(L, 2), bytesArg(L, 3)));
    },
    crypto_random_bytes: (L) => pushResult(L, randomBytes(Number(x.luaL_checkinteger(L, 1)))),
    crypto_timing_safe_equal(L) {
      x.lua_pushboolean(L, timingSafeEqual(bytesArg(L, 1), bytesArg(L, 2)) ? 1 : 0);
      return 1;
    },
    // A float, as ngx.now() is (and as fengari must: its integers are 32-bit).
    time_now(L) {
      x.lua_pushnumber(L, Date.now());
      return 1;
    },
    time_http_date: (L) => pushResult(L, httpDate(x.luaL_checknumber(L, 1))),
    time_parse_http_date(L) {
      x.luaL_checklstring(L, 1, 0);
      const seconds = parseHttpDate(api.text(L, 1)!);
      if (seconds === null) x.lua_pushnil(L);
      else x.lua_pushinteger(L, BigInt(seconds));
      return 1;
    },
  };
}
