/**
 * The output bindings: print, write, flush, log and emit, over host/output.ts. They are kept
 * apart from the request and response tables because each of these is a global function. Their
 * cost is converting and joining byte strings, and that is bounded here: a big string is
 * reserved against the memory limit before it is copied, and log() cuts a line before joining it.
 */
import { lauxlib, lua, to_luastring, type LuaJsFunction, type LuaState } from 'fengari';
import { runOf, text, type LuaRun } from '../core.js';
import { checkCanWait, hostWait } from '../control.js';
import { BIG_STRING, reserve } from '../limits.js';
import { utf8Boundary } from '../../host.js';
import { toResponse } from './script-response.js';

const {
  LUA_TBOOLEAN,
  LUA_TNIL,
  LUA_TNUMBER,
  LUA_TSTRING,
  lua_gettop,
  lua_pop,
  lua_tolstring,
  lua_type,
} = lua;

const TAB = 9;
const NEWLINE = 10;

const TRUE = to_luastring('true', true);
const FALSE = to_luastring('false', true);
const NIL = to_luastring('nil', true);

/**
 * Arguments 1..n converted as tostring() would. Strings, numbers, booleans and nil (which have
 * no metatable a script can set) skip luaL_tolstring's metamethod lookup, a few times slower.
 * Numbers are converted in place, in this call's own argument slots.
 */
function strings(L: LuaState): Uint8Array[] {
  const n = lua_gettop(L);
  const out: Uint8Array[] = [];
  for (let i = 1; i <= n; i++) {
    const t = lua_type(L, i);
    if (t === LUA_TSTRING || t === LUA_TNUMBER) out.push(lua_tolstring(L, i)!);
    else if (t === LUA_TNIL) out.push(NIL);
    else if (t === LUA_TBOOLEAN) out.push(lua.lua_toboolean(L, i) ? TRUE : FALSE);
    else {
      out.push(lauxlib.luaL_tolstring(L, i));
      lua_pop(L, 1);
    }
  }
  return out;
}

/**
 * Joins byte strings with an optional separator byte and final byte (-1: none), reserving a big
 * result's size first: `write(table.unpack(t))` with 30 references to one 48 MiB string joined
 * 1.4 GB before the output limit could see it (issue 16, item 7).
 */
function join(L: LuaState, run: LuaRun, parts: Uint8Array[], sep: number, end: number): Uint8Array {
  let size = end >= 0 ? 1 : 0;
  for (const p of parts) size += p.length;
  if (sep >= 0 && parts.length > 1) size += parts.length - 1;
  if (size >= BIG_STRING) reserve(L, run, size);
  const out = new Uint8Array(size);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    if (i > 0 && sep >= 0) out[at++] = sep;
    out.set(parts[i]!, at);
    at += parts[i]!.length;
  }
  if (end >= 0) out[at] = end;
  return out;
}

/** print(...): the arguments as tostring() gives them, tab-separated, then a newline. */
export const print: LuaJsFunction = (L) => {
  const run = runOf(L);
  // Fast path for the common print("one string"): one copy, one write.
  if (lua_gettop(L) === 1 && lua_type(L, 1) === LUA_TSTRING) {
    const s = lua_tolstring(L, 1)!;
    if (s.length >= BIG_STRING) reserve(L, run, s.length + 1);
    const out = new Uint8Array(s.length + 1);
    out.set(s, 0);
    out[s.length] = NEWLINE;
    run.host.write(out);
    return 0;
  }
  run.host.write(join(L, run, strings(L), TAB, NEWLINE));
  return 0;
};

/** write(...): the arguments converted as print() converts them, with nothing between or after them. */
export const write: LuaJsFunction = (L) => {
  const run = runOf(L);
  // Lua strings are immutable: the response may keep the bytes without a copy.
  if (lua_gettop(L) === 1 && lua_type(L, 1) === LUA_TSTRING) run.host.write(lua_tolstring(L, 1)!);
  else run.host.write(join(L, run, strings(L), -1, -1));
  return 0;
};

/** flush(): sends the headers and the body so far (streaming); raw CGI mode waits for a whole header block. */
export const flush: LuaJsFunction = (L) => {
  runOf(L).host.flush();
  return 0;
};

/**
 * log(...): one tab-separated line to the web server's error log. The line is cut to the host's
 * log room before it is joined and decoded: log() of a 20 MiB string copies at most that room,
 * not the string (the host adds the marker and the budget).
 */
export const log: LuaJsFunction = (L) => {
  const run = runOf(L);
  const host = run.host;
  const parts = strings(L);
  const room = host.logRoom;
  let size = parts.length > 1 ? parts.length - 1 : 0;
  for (const p of parts) size += p.length;
  if (size <= room) {
    host.log(text(join(L, run, parts, TAB, -1)));
    return 0;
  }
  const kept: Uint8Array[] = [];
  let left = room;
  for (let i = 0; i < parts.length && left > 0; i++) {
    // Up to 3 bytes past the room: a character split at the room's edge must show its
    // continuation bytes, or the cut below cannot see it and keeps half of it.
    const p = parts[i]!.length <= left + 3 ? parts[i]! : parts[i]!.subarray(0, left + 3);
    kept.push(p);
    left -= p.length + 1;
  }
  const joined = join(L, run, kept, TAB, -1);
  // Cut at a character boundary, so valid UTF-8 decodes to exactly the bytes kept and the count
  // of bytes cut is exact.
  const line = joined.subarray(0, utf8Boundary(joined, room));
  host.log(text(line), size - line.length);
  return 0;
};

/** emit(response): a response table (from pass() or the cache) becomes this request's response. */
export const emit: LuaJsFunction = (L) => {
  lauxlib.luaL_checktype(L, 1, lua.LUA_TTABLE);
  const res = toResponse(L, 1, 'emit()');
  const run = runOf(L);
  // A body in a file ends the run with sendfile(), which waits for a stat.
  if (res.file !== undefined) checkCanWait(L, 'emit()');
  const sent = run.host.emit(res);
  return sent ? hostWait(L, run, sent, null) : 0;
};
