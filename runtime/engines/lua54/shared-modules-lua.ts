/**
 * Shared modules on Lua 5.4 (README, "Modules"): a module's top level runs once per lua_State,
 * not once per request, and each run sees the module exactly as it was when it loaded. Written
 * in Lua, installed by the sandbox (sandbox-lua.ts), loaded stripped of line info like the
 * library wrappers, so an error raised in here is placed at the script's line.
 *
 * Why this is isolation, not OpenResty's shared state: a state runs one request at a time
 * (engine.ts: a state per run in flight), and nothing a run does to a shared module outlives it.
 * - Tables: the load is followed by a freeze. Every table the module's value reaches (through
 *   table values, metatables, and the upvalues of its functions) is replaced by an empty proxy
 *   whose metatable reads the real table. The first write to a proxy in a run copies the real
 *   table's contents into the proxy (copy on write); from then on it is a plain table for that
 *   run. The real tables are reachable from nowhere a script can get to.
 * - Upvalues: a module function may assign the module's locals (a counter). The freeze records
 *   every distinct upvalue with its value; each is set back before the next run that uses the
 *   module, with the proxies a run wrote emptied again.
 * - Globals: the module's functions see the requiring run's globals (their `_ENV` upvalue is
 *   bound at each require), as a module run per request would; the globals its top level set
 *   are copied into each requiring run's globals.
 * - The load itself must not see a request: host functions refuse while a module loads to be
 *   shared (control.ts), so does reading a global that is not a shared one. Any refusal, error,
 *   coroutine or userdata of its own makes the module one that runs per request, as before.
 *
 * The raw functions (next, rawget, rawlen, rawset, getmetatable, setmetatable) see through a
 * proxy that is still clean (and setmetatable refuses a metatable with __gc, for every table:
 * a finalizer would run in whichever request the collector happens to run in), and the host reads a table through `views` (api: solid) for the
 * same reason: an untouched proxy is empty.
 */
export const SHARED_MODULES_LUA = String.raw`local G, H, pcall, readonly, arrays, dgetup, dsetup, upid, upjoin, dgetmeta, dsetmeta, getinfo, lib = ...
local next, rawget, rawset, rawlen, type, setmetatable, error = lib.next, lib.rawget, lib.rawset, lib.rawlen, lib.type, lib.setmetatable, lib.error

local function weak() return setmetatable({}, { __mode = "k" }) end
local builtin = weak()    -- the sandbox's own objects: shared already, never frozen
local views = weak()      -- clean proxy -> the real table it shows
local realOf = weak()     -- proxy -> real table (clean or dirty)
local proxyOf = weak()    -- real table -> its proxy
local cleanMeta = weak()  -- proxy -> its metatable while clean
local frozenFn = weak()   -- Lua functions already frozen (their upvalues recorded)
local records = weak()    -- module chunk function -> record, false (runs per request), or LOADING
local LOADING = {}
local NOSHARE = {}
local dirty, nDirty = {}, 0       -- proxies written by the run that last used shared modules
local touched, nTouched = {}, 0   -- records bound in that run
local lastSerial = 0               -- that run's serial number (run.ts)
local depth, refused = 0, false
local loadingEnv, loadingDeps = nil, nil
-- Every shared module function's _ENV is joined to this closure's one upvalue, set to the
-- running request's globals (or to a load's own) once per run, for all modules at once.
local holder
do
  local env
  holder = function() return env end
end
-- This file's own tables, and the holder (whose upvalue is a run's globals), are never walked.
for _, t in next, { builtin, views, realOf, proxyOf, cleanMeta, frozenFn, records, LOADING, NOSHARE, dirty, touched, holder } do
  builtin[t] = true
end

local function noshare() error(NOSHARE, 0) end

-- Copy on write: the proxy takes the real table's contents, and its metatable's (a dirty copy
-- of the metatable's own proxy), and is a plain table until the run ends.
local function makeDirty(p)
  local real = views[p]
  views[p] = nil
  for k, v in next, real do rawset(p, k, v) end
  local mt = dgetmeta(real)
  local pm = nil
  if mt ~= nil then
    pm = proxyOf[mt]
    if views[pm] ~= nil then makeDirty(pm) end
  end
  dsetmeta(p, pm)
  nDirty = nDirty + 1
  dirty[nDirty] = p
end

-- What the last run did to shared modules, undone: proxies emptied, upvalues set back.
local function cleanAll()
  for i = 1, nDirty do
    local p = dirty[i]
    dirty[i] = nil
    dsetmeta(p, nil)
    for k in next, p do rawset(p, k, nil) end
    dsetmeta(p, cleanMeta[p])
    views[p] = realOf[p]
    arrays[p] = nil
  end
  nDirty = 0
  for i = 1, nTouched do
    local rec = touched[i]
    touched[i] = nil
    rec.run = nil
    local ups = rec.ups
    for j = 1, #ups, 3 do dsetup(ups[j], ups[j + 1], ups[j + 2]) end
  end
  nTouched = 0
end

-- True when no proxy is dirty and every upvalue holds its frozen value: a load now sees the
-- modules as any run would.
local function pristine()
  if nDirty > 0 then return false end
  for i = 1, nTouched do
    local ups = touched[i].ups
    for j = 1, #ups, 3 do
      local _, v = dgetup(ups[j], ups[j + 1])
      if v ~= ups[j + 2] then return false end
    end
  end
  return true
end

-- A clean proxy's iteration: the real table's keys, read through the proxy once it is dirty.
local function walker(p, t)
  return function(_, k)
    local nk, v = next(t, k)
    if views[p] ~= nil then return nk, v end
    while nk ~= nil do
      v = rawget(p, nk)
      if v ~= nil then return nk, v end
      nk = next(t, nk)
    end
    return nil
  end
end

local KEPT = { __index = true, __newindex = true, __len = true, __pairs = true, __metatable = true, __mode = true, __gc = true }
-- The first write: copy, then assign as Lua would (a key the real table had is set; a new
-- one goes through the module's own __newindex, by a tail call, so that its error(msg, 2)
-- names the script's line).
local function newindex(p, k, v)
  makeDirty(p)
  if rawget(p, k) ~= nil then return rawset(p, k, v) end
  local mt = dgetmeta(p)
  local h = mt and rawget(mt, "__newindex")
  if h == nil then return rawset(p, k, v) end
  if type(h) == "function" then return h(p, k, v) end
  h[k] = v
end

-- The metatable of a clean proxy of t: reads go to t, the first write copies.
local function metaFor(t, mt)
  local cm = {}
  if mt ~= nil then
    for k, v in next, mt do
      if not KEPT[k] then cm[k] = v end
    end
  end
  local index = mt and rawget(mt, "__index")
  if type(index) == "function" then
    cm.__index = function(p, k)
      local v = rawget(t, k)
      if v ~= nil then return v end
      return index(p, k)
    end
  else
    cm.__index = t
  end
  cm.__newindex = newindex
  cm.__len = mt and rawget(mt, "__len") or function() return rawlen(t) end
  local pairsOf = mt and rawget(mt, "__pairs")
  cm.__pairs = pairsOf or function(p)
    if views[p] == nil then return next, p, nil end
    return walker(p, t), p, nil
  end
  cm.__metatable = false
  return cm
end

local freeze
local function freezeTable(rec, t)
  local p = {}
  proxyOf[t] = p
  realOf[p] = t
  for k, v in next, t do
    local tk = type(k)
    if tk == "table" or tk == "userdata" or tk == "thread" then
      if not builtin[k] and realOf[k] == nil then noshare() end
    elseif tk == "function" then
      freeze(rec, k)
    end
    local fv = freeze(rec, v)
    if fv ~= v then rawset(t, k, fv) end
  end
  local mt = dgetmeta(t)
  if mt ~= nil then
    if builtin[mt] then noshare() end
    -- A metatable that is another shared module's proxy (setmetatable(obj, other.Class) in
    -- the load): the object keeps that proxy's real table, which no run can write.
    local real = realOf[mt]
    if real ~= nil then
      mt = real
      dsetmeta(t, mt)
    else
      freeze(rec, mt)
    end
  end
  local cm = metaFor(t, mt)
  cleanMeta[p] = cm
  dsetmeta(p, cm)
  views[p] = t
  return p
end

local function freezeFunction(rec, f)
  frozenFn[f] = true
  local i = 1
  while true do
    local name, v = dgetup(f, i)
    if name == nil then break end
    if v == rec.env then
      upjoin(f, i, holder, 1)
    else
      local id = upid(f, i)
      if not rec.seen[id] then
        rec.seen[id] = true
        local fv = freeze(rec, v)
        if fv ~= v then dsetup(f, i, fv) end
        -- Only a local some function assigns needs setting back (all of them when the
        -- bytecode could not be read: module_assigned, bytecode.ts).
        local assigned = rec.assigned
        if assigned == nil or assigned[name] then
          local ups = rec.ups
          ups[#ups + 1] = f
          ups[#ups + 1] = i
          ups[#ups + 1] = fv
        end
      end
    end
    i = i + 1
  end
  return f
end

freeze = function(rec, v)
  local tv = type(v)
  if tv == "table" then
    if builtin[v] or realOf[v] ~= nil then return v end
    local p = proxyOf[v]
    if p ~= nil then return p end
    if v == rec.env then noshare() end
    return freezeTable(rec, v)
  elseif tv == "function" then
    if builtin[v] or frozenFn[v] then return v end
    if getinfo(v, "S").what == "C" then
      if dgetup(v, 1) ~= nil then noshare() end
      return v
    end
    return freezeFunction(rec, v)
  elseif tv == "userdata" or tv == "thread" then
    if not builtin[v] then noshare() end
  end
  return v
end

-- Binds a record to the run: its top level's globals are copied into the run's (env; nil
-- inside a load, which copies them into its own), as a module run per request would leave
-- them, and its assigned locals are set back before the next run.
local function bind(rec, serial, env)
  rec.run = serial
  nTouched = nTouched + 1
  touched[nTouched] = rec
  local globals = rec.globals
  if globals ~= nil and env ~= nil then
    for k, v in next, globals do rawset(env, k, v) end
  end
  local deps = rec.deps
  for j = 1, #deps do
    local d = deps[j]
    if not d.plain and d.run ~= serial then bind(d, serial, env) end
  end
end

-- The load's globals: the shared ones only. Anything else (request, _G, a global a script
-- set) would make the module depend on one request.
local loadMeta = {
  __index = function(_, k)
    local v = rawget(G, k)
    if v == nil then refused = true end
    return v
  end,
}

local function runTop(chunk, env, name) return chunk()(env, name) end

local adopt, roots
local function loadShared(chunk, name)
  -- The sandbox's objects are noted at the first load in this state (~0.6 ms), not when the
  -- state is made: most states never load a shared module.
  if roots ~= nil then
    for i = 1, #roots do adopt(roots[i]) end
    roots = nil
  end
  records[chunk] = LOADING
  local E = setmetatable({}, loadMeta)
  local outerEnv, outerDeps, outerRefused = loadingEnv, loadingDeps, refused
  local _, holderEnv = dgetup(holder, 1)
  local deps = {}
  loadingEnv, loadingDeps, refused = E, deps, false
  -- The shared modules this load requires see the load's globals while it runs.
  dsetup(holder, 1, E)
  depth = depth + 1
  local before = H.module_share(depth)
  local ok, value = pcall(runTop, chunk, E, name)
  depth = depth - 1
  local after = H.module_share(depth)
  local rec = false
  if ok and not refused and after == before then
    if value == nil then value = true end
    rec = { env = E, ups = {}, seen = {}, globals = {}, deps = deps, run = nil, value = nil }
    ok = pcall(function()
      rec.assigned = H.module_assigned(name)
      for k, v in next, E do
        local tk = type(k)
        if tk ~= "string" then noshare() end
        rec.globals[k] = freeze(rec, v)
      end
      rec.value = freeze(rec, value)
    end)
    if not ok then
      rec = false
    else
      rec.seen = nil
      if next(rec.globals) == nil then rec.globals = nil end
      local plain = rec.globals == nil and #rec.ups == 0
      for j = 1, #deps do plain = plain and deps[j].plain end
      rec.plain = plain
    end
  end
  dsetup(holder, 1, holderEnv)
  loadingEnv, loadingDeps, refused = outerEnv, outerDeps, outerRefused or not rec
  records[chunk] = rec
  return rec
end

-- require's shared path (lua-require.ts): the module's value for this run, or nil when it
-- runs per request (then, inside a load, the load is refused: it would capture a per-request
-- value).
local function share(chunk, name, serial, env)
  if serial ~= lastSerial then
    lastSerial = serial
    if nDirty > 0 or nTouched > 0 then cleanAll() end
    dsetup(holder, 1, env)
  end
  local rec = records[chunk]
  if rec then
    -- The common case: nothing to copy or set back (no globals, no assigned locals).
    if rec.plain and loadingDeps == nil then return rec.value end
  elseif rec == nil and (depth > 0 or pristine()) then
    rec = loadShared(chunk, name)
  end
  if rec == nil or rec == false or rec == LOADING then
    if depth > 0 then
      refused = true
      error("a shared module's load cannot require a module that runs per request", 0)
    end
    return nil
  end
  if loadingEnv ~= nil then
    loadingDeps[#loadingDeps + 1] = rec
    -- Its globals go into the load's (the module loading sees them as it would per request).
    local globals = rec.globals
    if globals ~= nil then
      for k, v in next, globals do rawset(loadingEnv, k, v) end
    end
    if not rec.plain and rec.run ~= serial then bind(rec, serial, env) end
  elseif not rec.plain and rec.run ~= serial then
    bind(rec, serial, env)
  end
  return rec.value
end

-- Notes every object the sandbox reaches from root: these are shared already.
adopt = function(v)
  local tv = type(v)
  if (tv ~= "table" and tv ~= "function" and tv ~= "userdata" and tv ~= "thread") or builtin[v] then return end
  builtin[v] = true
  if tv == "table" then
    for k, x in next, v do
      adopt(k)
      adopt(x)
    end
    adopt(dgetmeta(v))
  elseif tv == "function" then
    local i = 1
    while true do
      local name, x = dgetup(v, i)
      if name == nil then break end
      adopt(x)
      i = i + 1
    end
  else
    adopt(dgetmeta(v))
  end
end

local w = { share = share, views = views }
-- The roots of what the sandbox shares (its globals' metatable, the string metatable), given
-- once the sandbox is built; adopted at the first load.
w.roots = function(...) roots = { ... } end
w.next = function(t, k)
  local r = views[t]
  if r ~= nil then return lib.next(r, k) end
  return lib.next(t, k)
end
w.rawget = function(t, k)
  local r = views[t]
  if r ~= nil then return lib.rawget(r, k) end
  return lib.rawget(t, k)
end
w.rawlen = function(t)
  local r = views[t]
  if r ~= nil then return lib.rawlen(r) end
  return lib.rawlen(t)
end
w.rawset = function(t, k, v)
  if readonly[t] then error("attempt to modify a read-only table", 2) end
  if views[t] ~= nil then makeDirty(t) end
  return lib.rawset(t, k, v)
end
w.getmetatable = function(t)
  local r = views[t]
  if r == nil then return lib.getmetatable(t) end
  local mt = dgetmeta(r)
  if mt == nil then return nil end
  local protected = rawget(mt, "__metatable")
  if protected ~= nil then return protected end
  return proxyOf[mt]
end
w.setmetatable = function(t, mt)
  -- A finalizer runs whenever the collector gets to it: during a later request, with this
  -- one's data in its upvalues (and print() writing to that request's response).
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc is not available: a finalizer would run during another request", 2)
  end
  if views[t] ~= nil then makeDirty(t) end
  if views[mt] ~= nil then makeDirty(mt) end
  return lib.setmetatable(t, mt)
end
-- json.array(t) marks t for this run: a clean proxy is copied first, so the mark is the run's.
w.writable = function(t)
  if views[t] ~= nil then makeDirty(t) end
  return t
end
return w
`;
