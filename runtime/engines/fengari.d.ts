/**
 * Minimal types for fengari 0.1.5 (Lua 5.3 in pure JS), only the parts the Lua engine uses.
 * fengari ships no types; these follow its src/*.js. Lua strings are byte arrays (Uint8Array)
 * and most API functions also accept a JS string, which they encode as UTF-8 on every call.
 * fengari integers are 32-bit (LUA_MAXINTEGER is 2^31 - 1).
 */
declare module 'fengari' {
  /** A Lua string: bytes, not UTF-16. */
  export type LuaString = Uint8Array;
  /** A Lua thread (lua_State); opaque to the engine. */
  export interface LuaState {
    readonly __luaState: never;
  }
  /** A JS function callable from Lua: reads its arguments from the stack, returns how many results it pushed. */
  export type LuaJsFunction = (L: LuaState) => number;
  /** A continuation for lua_pcallk / lua_yieldk. */
  export type LuaKFunction<C = unknown> = (L: LuaState, status: number, ctx: C) => number;
  export type LuaHook = (L: LuaState, ar: LuaDebug) => void;
  export type LuaWriter = (L: LuaState, bytes: Uint8Array, size: number, ud: unknown) => number;
  /** Pushes the value it was made from onto a thread of the same state (lua_toproxy). */
  export type LuaProxy = (L: LuaState) => void;

  export interface LuaDebug {
    event: number;
    currentline: number;
    short_src: LuaString | null;
    source: LuaString | null;
    /** With 'n': the function's name as its caller knows it, or null. */
    name: LuaString | null;
  }

  export const FENGARI_VERSION: string;
  /** "Fengari 0.1.5". */
  export const FENGARI_RELEASE: string;
  export function to_luastring(s: string, cache?: boolean): LuaString;
  export function to_jsstring(s: LuaString, from?: number, to?: number, replacement?: boolean): string;

  export namespace lua {
    const LUA_VERSION: string;
    const LUA_RELEASE: string;
    const LUA_OK: number;
    const LUA_YIELD: number;
    const LUA_ERRRUN: number;
    const LUA_ERRSYNTAX: number;
    const LUA_MULTRET: number;
    const LUA_REGISTRYINDEX: number;
    const LUA_RIDX_GLOBALS: number;
    const LUA_MASKCOUNT: number;
    const LUA_TNONE: number;
    const LUA_TNIL: number;
    const LUA_TBOOLEAN: number;
    const LUA_TNUMBER: number;
    const LUA_TSTRING: number;
    const LUA_TTABLE: number;
    const LUA_TFUNCTION: number;
    const LUA_TTHREAD: number;

    class lua_Debug implements LuaDebug {
      event: number;
      currentline: number;
      short_src: LuaString | null;
      source: LuaString | null;
      name: LuaString | null;
    }

    function lua_atnativeerror(L: LuaState, f: LuaJsFunction | null): LuaJsFunction | null;
    function lua_call(L: LuaState, nargs: number, nresults: number): void;
    function lua_checkstack(L: LuaState, n: number): boolean;
    function lua_concat(L: LuaState, n: number): void;
    function lua_createtable(L: LuaState, narr: number, nrec: number): void;
    function lua_dump(L: LuaState, writer: LuaWriter, data: unknown, strip: boolean): number;
    function lua_error(L: LuaState): never;
    function lua_getfield(L: LuaState, idx: number, k: LuaString | string): number;
    function lua_getmetatable(L: LuaState, idx: number): boolean;
    function lua_getinfo(L: LuaState, what: LuaString | string, ar: LuaDebug): boolean;
    function lua_getstack(L: LuaState, level: number, ar: LuaDebug): boolean;
    function lua_gettop(L: LuaState): number;
    function lua_absindex(L: LuaState, idx: number): number;
    function lua_insert(L: LuaState, idx: number): void;
    function lua_iscfunction(L: LuaState, idx: number): boolean;
    function lua_isinteger(L: LuaState, idx: number): boolean;
    function lua_isproxy(p: unknown, L: LuaState | null): boolean;
    function lua_isyieldable(L: LuaState): boolean;
    function lua_newthread(L: LuaState): LuaState;
    function lua_next(L: LuaState, idx: number): number;
    function lua_pcallk<C>(L: LuaState, nargs: number, nresults: number, errfunc: number, ctx: C, k: LuaKFunction<C> | null): number;
    function lua_pop(L: LuaState, n: number): void;
    function lua_pushboolean(L: LuaState, b: boolean): void;
    function lua_pushcclosure(L: LuaState, f: LuaJsFunction, n: number): void;
    function lua_pushinteger(L: LuaState, n: number): void;
    function lua_pushjsfunction(L: LuaState, f: LuaJsFunction): void;
    function lua_pushliteral(L: LuaState, s: string): LuaString;
    function lua_pushnil(L: LuaState): void;
    function lua_pushnumber(L: LuaState, n: number): void;
    function lua_pushlightuserdata(L: LuaState, p: unknown): void;
    function lua_pushstring(L: LuaState, s: LuaString | string): LuaString;
    function lua_pushvalue(L: LuaState, idx: number): void;
    function lua_rawequal(L: LuaState, a: number, b: number): boolean;
    function lua_rawget(L: LuaState, idx: number): number;
    function lua_rawset(L: LuaState, idx: number): void;
    function lua_rawgeti(L: LuaState, idx: number, n: number): number;
    function lua_rawlen(L: LuaState, idx: number): number;
    function lua_rawseti(L: LuaState, idx: number, n: number): void;
    function lua_resume(L: LuaState, from: LuaState | null, nargs: number): number;
    function lua_rotate(L: LuaState, idx: number, n: number): void;
    function lua_setfield(L: LuaState, idx: number, k: LuaString | string): void;
    function lua_sethook(L: LuaState, f: LuaHook | null, mask: number, count: number): void;
    function lua_setmetatable(L: LuaState, idx: number): void;
    function lua_settop(L: LuaState, idx: number): void;
    function lua_setupvalue(L: LuaState, funcidx: number, n: number): LuaString | null;
    function lua_status(L: LuaState): number;
    function lua_tocfunction(L: LuaState, idx: number): LuaJsFunction | null;
    function lua_toboolean(L: LuaState, idx: number): boolean;
    function lua_tointegerx(L: LuaState, idx: number): number | false;
    function lua_tointeger(L: LuaState, idx: number): number;
    function lua_tojsstring(L: LuaState, idx: number): string | null;
    function lua_tolstring(L: LuaState, idx: number): LuaString | null;
    function lua_tonumberx(L: LuaState, idx: number): number | false;
    function lua_topointer(L: LuaState, idx: number): object | null;
    function lua_toproxy(L: LuaState, idx: number): LuaProxy;
    function lua_tothread(L: LuaState, idx: number): LuaState | null;
    function lua_replace(L: LuaState, idx: number): void;
    function lua_touserdata(L: LuaState, idx: number): unknown;
    function lua_getupvalue(L: LuaState, funcindex: number, n: number): LuaString | null;
    function lua_type(L: LuaState, idx: number): number;
    function lua_typename(L: LuaState, t: number): LuaString;
    function lua_upvalueindex(i: number): number;
    function lua_xmove(from: LuaState, to: LuaState, n: number): void;
    function lua_yieldk<C>(L: LuaState, n: number, ctx: C, k: LuaKFunction<C> | null): never;
  }

  export namespace lauxlib {
    function luaL_argerror(L: LuaState, arg: number, msg: LuaString | string): never;
    function luaL_checkany(L: LuaState, arg: number): void;
    function luaL_checkinteger(L: LuaState, arg: number): number;
    function luaL_checklstring(L: LuaState, arg: number): LuaString;
    function luaL_checknumber(L: LuaState, arg: number): number;
    function luaL_checktype(L: LuaState, arg: number, t: number): void;
    function luaL_len(L: LuaState, idx: number): number;
    function luaL_loadbufferx(L: LuaState, buf: LuaString, size: number, name: LuaString | string, mode: LuaString | string | null): number;
    function luaL_newstate(): LuaState;
    function luaL_optinteger(L: LuaState, arg: number, def: number): number;
    function luaL_optlstring(L: LuaState, arg: number, def: LuaString | string | null): LuaString | null;
    function luaL_requiref(L: LuaState, name: LuaString | string, openf: LuaJsFunction, glb: boolean): void;
    function luaL_tolstring(L: LuaState, idx: number): LuaString;
    function luaL_typename(L: LuaState, idx: number): LuaString;
    function luaL_where(L: LuaState, level: number): void;
  }

  export namespace lualib {
    const luaopen_base: LuaJsFunction;
    const luaopen_coroutine: LuaJsFunction;
    const luaopen_math: LuaJsFunction;
    const luaopen_os: LuaJsFunction;
    const luaopen_string: LuaJsFunction;
    const luaopen_table: LuaJsFunction;
    const luaopen_utf8: LuaJsFunction;
  }
}

/** fengari's object module: the concat guard (lua/guards.ts) wraps one of its exports. */
declare module 'fengari/src/lobject.js' {
  const lobject: Record<string, unknown>;
  export default lobject;
}

/** fengari's VM module: lua/guards.ts wraps its exported comparison and concatenation. */
declare module 'fengari/src/lvm.js' {
  const lvm: Record<string, unknown>;
  export default lvm;
}

/** fengari's auxiliary library module: lua/guards.ts watches its string buffer class. */
declare module 'fengari/src/lauxlib.js' {
  const lauxlib: Record<string, unknown>;
  export default lauxlib;
}
