import { REQUIRE_LUA } from '../lua-require.js';

/**
 * Wrappers of four library functions whose loops the count hook cannot see (the sandbox below
 * installs them): each returns what the library function returns, for the same arguments.
 */
export const LIBRARY_WRAPPERS_LUA = String.raw`local lib, getinfo, tointeger, maxinteger, min, getmetatable, setmetatable, select, type = ...
-- Loaded stripped of line info: an error a library function raises here has no position of
-- this chunk (luaL_where finds no line), and the engine places it at the script's line
-- (stack.ts, wrapperCallerPlace). Each calls the library function as lib.<its name>, so that
-- an argument error names it as stock Lua does.
-- Whether a function is C, by function: getinfo makes a table, and the same callback (or the
-- same library function) comes back call after call. Weak keys: a request's closures go.
local isC = setmetatable({}, { __mode = "k" })
local function counted(f)
  local c = isC[f]
  if c == nil then
    c = getinfo(f, "S").what == "C"
    isC[f] = c
  end
  if c then return function(...) return f(...) end end
  return f
end
local w = {}
-- gsub calls a C replacement (string.upper, a gmatch iterator) or a table's C __index
-- (table.concat) once per match. A string or a plain table, the usual cases, pass as they are.
w.gsub = function(...)
  local s, p, r = ...
  local tr = type(r)
  if tr == "table" then
    if getmetatable(r) ~= nil then
      return lib.gsub(s, p, function(m) return r[m] end, select(4, ...))
    end
  elseif tr == "function" then
    local c = counted(r)
    if c ~= r then return lib.gsub(s, p, c, select(4, ...)) end
  end
  return lib.gsub(...)
end
-- A C comparator (math.ult) is called n log n times.
w.sort = function(...)
  local t, cmp = ...
  if type(cmp) == "function" then
    local c = counted(cmp)
    if c ~= cmp then return lib.sort(t, c) end
  end
  return lib.sort(...)
end
-- lstrlib copies an empty string n times: ("").rep("", 2^40) would loop 2^40 times.
w.rep = function(...)
  local s, n, sep = ...
  if s == "" and (sep == nil or sep == "") and tointeger(n) ~= nil then return "" end
  return lib.rep(...)
end
-- ltablib moves e - f + 1 elements, nils included, in one C loop: move in chunks, back to
-- front where the real move copies back to front (same table, overlapping). Arguments the
-- real move refuses go to it whole, for its own error.
local CHUNK = 4096
w.move = function(...)
  local a1, f, e, t, a2 = ...
  local fi, ei, ti = tointeger(f), tointeger(e), tointeger(t)
  if fi == nil or ei == nil or ti == nil or ei - fi < CHUNK
    or not (fi > 0 or ei < maxinteger + fi) or ti > maxinteger - (ei - fi) then
    return lib.move(...)
  end
  if ti > ei or ti <= fi or (a2 ~= nil and a1 ~= a2) then
    for lo = fi, ei, CHUNK do lib.move(a1, lo, min(lo + CHUNK - 1, ei), ti + (lo - fi), a2) end
  else
    local lo = ei - (ei - fi) % CHUNK
    while lo >= fi do
      lib.move(a1, lo, min(lo + CHUNK - 1, ei), ti + (lo - fi), a2)
      lo = lo - CHUNK
    end
  end
  if a2 == nil then return a1 end
  return a2
end
return w
`;

/**
 * The sandbox, written in Lua: run once per lua_State, with the state's real globals, before any
 * script. It builds the shared globals G every request reads through (read-only copies of the
 * safe libraries, the script API) and the metatables the host hands to each request. Lua is the
 * natural language for it (tables, metatables, closures) and it runs once per state, so it
 * costs nothing per request; the host functions it wires in are passed as the table `H`.
 *
 * What a script can never reach from here: io, os (but time/clock/date), package (require is
 * Lodestone's own, lua-require.ts),
 * debug, dofile/loadfile, collectgarbage, string.dump, bytecode through load, the real
 * library tables (pairs() over a read-only table hands out a closure, not the table), and
 * `readonly`, the set rawset checks.
 */
export const SANDBOX_LUA = String.raw`
local makeRequire = function(...) ${REQUIRE_LUA} end
local H = ...
local next, type, setmetatable, rawset, error, ipairs = next, type, setmetatable, rawset, error, ipairs
local readonly = setmetatable({}, { __mode = "k" })
-- A chunk of the sandbox's own (H.chunks: the library wrappers, the shared modules), compiled
-- by the engine once per wasm module and dumped stripped of line info: an error raised in it
-- has no position of it, and the engine places it at the script's line (stack.ts).
local function stripped(name)
  return load(H.chunks[name], "=" .. name, "b")
end

local function ro(name, t)
  local p = setmetatable({}, {
    __index = t,
    __newindex = function() error("attempt to modify read-only table '" .. name .. "'", 2) end,
    __pairs = function() return function(_, k) return next(t, k) end, nil, nil end,
    __len = function() return #t end,
    __metatable = false,
  })
  readonly[p] = true
  return p
end

local function copy(t, names)
  local c = {}
  for _, k in ipairs(names) do c[k] = t[k] end
  return c
end

local G = {}
for _, k in ipairs({ "assert", "error", "getmetatable", "ipairs", "next", "pairs", "rawequal",
  "rawget", "rawlen", "select", "setmetatable", "tonumber", "tostring", "type", "_VERSION" }) do
  G[k] = _G[k]
end
G.pcall, G.xpcall, G.load = H.pcall, H.xpcall, H.load

-- The count hook sees only Lua instructions, so a library loop in C that calls C, or that does
-- no work per step, would run past the CPU limit until the watchdog kills the worker. The
-- wrappers (LIBRARY_WRAPPERS_LUA) put a Lua instruction in each step, or answer without the loop.
do
  local lib = { gsub = string.gsub, sort = table.sort, rep = string.rep, move = table.move }
  local w = stripped("wrappers")(lib, debug.getinfo, math.tointeger, math.maxinteger, math.min, getmetatable, setmetatable, select, type)
  string.gsub, table.sort, string.rep, table.move = w.gsub, w.sort, w.rep, w.move
end

-- Bytecode is for the engine's cache only: no string.dump, also not as ("").dump.
string.dump = nil

getmetatable("").__metatable = false
G.string = ro("string", string)
G.table = ro("table", table)
G.unpack = table.unpack -- Lua 5.1's global, which mod_magnet-era scripts use
-- One random state per lua_State, shared by the requests it runs: a seed set by one request
-- would make the next one's numbers predictable. The host seeded it from the OS already.
local math2 = {}
for k, v in next, math do math2[k] = v end
math2.randomseed = function() end
G.math = ro("math", math2)
G.utf8 = ro("utf8", utf8)
G.os = ro("os", copy(os, { "time", "clock", "date", "difftime" }))
local co = copy(coroutine, { "create", "isyieldable", "running", "status", "yield", "close" })
co.resume, co.wrap = H.resume, H.wrap
G.coroutine = ro("coroutine", co)

for _, k in ipairs({ "print", "write", "flush", "log", "sleep", "stat", "sendfile", "pass", "fetch", "emit" }) do
  G[k] = H[k]
end
G.cache = ro("cache", { get = H.cache_get, set = H.cache_set, delete = H.cache_delete, incr = H.cache_incr })

-- The data library (api/library.ts). json.array marks a table in a weak set the host reads
-- (not a metatable: the script keeps its own), so a request's tables are never kept alive.
local function lib(prefix, names)
  local t = {}
  for _, k in ipairs(names) do t[k] = H[prefix .. "_" .. k] end
  return t
end
local arrays = setmetatable({}, { __mode = "k" })
H.json_setup(arrays)
-- Shared modules (shared-modules-lua.ts), stripped like the wrappers above; the raw functions
-- see through a module table a run has not written yet.
local shared
do
  local raw = { next = next, rawget = rawget, rawset = rawset, rawlen = rawlen, type = type,
    setmetatable = setmetatable, getmetatable = getmetatable, error = error }
  shared = stripped("shared")(G, H, H.pcall, readonly, arrays, debug.getupvalue,
    debug.setupvalue, debug.upvalueid, debug.upvaluejoin, debug.getmetatable, debug.setmetatable,
    debug.getinfo, raw)
  for _, k in ipairs({ "next", "rawget", "rawlen", "rawset", "getmetatable", "setmetatable" }) do G[k] = shared[k] end
  H.views_setup(shared.views)
end
local writable = shared.writable
local json = lib("json", { "encode", "decode" })
json.null = H.json_null()
json.array = function(t)
  if type(t) ~= "table" then error("bad argument #1 to 'array' (table expected, got " .. type(t) .. ")", 2) end
  arrays[writable(t)] = true
  return t
end
G.json = ro("json", json)
G.base64 = ro("base64", lib("base64", { "encode", "decode", "encode_url", "decode_url" }))
G.url = ro("url", lib("url", { "escape", "unescape" }))
G.crypto = ro("crypto", lib("crypto", { "md5", "sha1", "sha256", "sha512", "hmac", "random_bytes", "timing_safe_equal" }))
G.time = ro("time", lib("time", { "now", "http_date", "parse_http_date" }))

local headers = setmetatable({}, { __index = H.header_get, __newindex = H.header_set, __metatable = false })
readonly[headers] = true
local status_get, response_set, cookie = H.status_get, H.response_set, H.response_cookie
local response = setmetatable({}, {
  __index = function(_, k)
    if k == "headers" then return headers elseif k == "status" then return status_get()
    elseif k == "cookie" then return cookie end
  end,
  __newindex = response_set,
  __metatable = false,
})
readonly[response] = true
G.response = response

local requestMeta = { __index = H.request_index, __metatable = false }
local env = H.env
G.require = makeRequire(H.module_open, H.module_close, H.module_loaded, env, H.pcall, error, type,
  H.module_lookup, shared.share)

-- mod_magnet's lighty table, made on a request's first use of it (api/lighty.ts).
local function readonlyIn(what)
  return function() error(what .. " is read-only in Lodestone", 2) end
end
local reqHeaderMeta = { __index = H.lighty_req_header, __newindex = readonlyIn("lighty.r.req_header"), __metatable = false }
local reqAttrMeta = { __index = H.lighty_req_attr, __newindex = readonlyIn("lighty.r.req_attr"), __metatable = false }
local respHeaderMeta = { __index = H.header_get, __newindex = H.header_set, __metatable = false }
local body_set, body_add, body_get, lighty_stat, keep = H.lighty_body_set, H.lighty_body_add, H.lighty_body_get, H.lighty_stat, H.lighty_keep
local function lighty()
  local rh, ra, rs = setmetatable({}, reqHeaderMeta), setmetatable({}, reqAttrMeta), setmetatable({}, respHeaderMeta)
  local l = {
    request = rh, env = ra, header = rs, stat = lighty_stat,
    r = { req_header = rh, req_attr = ra, resp_header = rs, resp_body = { set = body_set, add = body_add, get = body_get } },
  }
  keep(l)
  return l
end
setmetatable(G, {
  __index = function(_, k)
    local v
    if k == "request" then v = setmetatable({}, requestMeta)
    elseif k == "_G" then v = env()
    elseif k == "lighty" then v = lighty()
    else return nil end
    rawset(env(), k, v)
    return v
  end,
  __metatable = false,
})
local envMeta = { __index = G, __metatable = false }
-- Everything reachable from here is the sandbox's, shared already: a module's freeze leaves it.
shared.roots(envMeta, debug.getmetatable(""))
return envMeta
`;
