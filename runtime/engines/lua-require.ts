/**
 * require() for both Lua engines, in Lua: module code runs as plain Lua calls inside the run's
 * thread, so a module's top level may wait in a host call (sleep, fetch) like the script, and
 * a limit stops it like any script code. The host functions it is given find the compiled
 * module (host/modules.ts via the engine) and keep the chain of requires in progress.
 *
 * Each run has its own `loaded` table, which the host keeps with the run and drops with it. Not
 * a weak table keyed by the run: fengari empties weak tables only in collectgarbage(), which no
 * script can call, so every run's entry stayed (measured: 100,000 of 100,000 after a loop). A
 * module's top level runs once per run that requires it on fengari; lua54 passes `lookup` and
 * `share` (shared-modules-lua.ts), and a module it can share runs once per
 * state, each run seeing it as it loaded. A module run per request is called with the run's
 * globals and its name, as Lua's require gives `...`. An error in it names its file:line,
 * after the place of each require that led there.
 */
export const REQUIRE_LUA = String.raw`
local open, close, loadedOf, env, pcall, error, type, lookup, share = ...
return function(name)
  if type(name) ~= "string" then
    error("bad argument #1 to 'require' (string expected, got " .. type(name) .. ")", 2)
  end
  if lookup then
    -- lua54, in one host call: the run's serial number, its globals (nil inside a shared
    -- module's load) and the module's chunk, nil when there is none to run.
    local serial, runEnv, chunk = lookup(name)
    if chunk ~= nil then
      local value = share(chunk, name, serial, runEnv)
      if value ~= nil then return value end
    end
  end
  local loaded = loadedOf()
  local value = loaded[name]
  if value ~= nil then return value end
  local found, chunk = pcall(open, name)
  if not found then error(chunk, 2) end
  local ok, result = pcall(chunk(), env(), name)
  close(name)
  -- The module's message ("lib/a.lua:3: boom") gets the require's place in front, as the
  -- script's line: through nested modules the message reads as the chain of requires.
  if not ok then error(result, type(result) == "string" and 2 or 0) end
  if result == nil then result = true end
  loaded[name] = result
  return result
end
`;
