-- Cache in front of PHP: GET and HEAD without a session cookie are answered from the cache
-- when they can be; misses go to the "php" backend pool and what may be cached is stored
-- for as long as the backend said (Cache-Control max-age / s-maxage, or X-Accel-Expires).
-- POST and requests with a session cookie always go straight through.
--
-- Needs a backend named "php" (config "backends", or --backend php=unix:/run/php/php-fpm.sock).
-- PHP receives the request's own params: SCRIPT_FILENAME is what the web server sent.

local BACKEND = "php"
local SESSION_COOKIE = "PHPSESSID"

-- Seconds the backend lets us keep a response, or nil when it may not be cached.
local function ttl_of(res)
  if res.status ~= 200 or res.headers["set-cookie"] then return nil end
  local vary = res.headers["vary"]
  if vary and vary:lower() ~= "accept-encoding" then return nil end
  local accel = res.headers["x-accel-expires"]
  if accel then
    local n = tonumber(accel)
    if n and n > 0 then return n end
    return nil
  end
  local cc = (res.headers["cache-control"] or ""):lower()
  if cc:find("no-store", 1, true) or cc:find("no-cache", 1, true) or cc:find("private", 1, true) then return nil end
  local age = tonumber(cc:match("s%-maxage=(%d+)") or cc:match("max%-age=(%d+)"))
  if age and age > 0 then return age end
  return nil
end

local method = request.method
local cookie = request.headers["cookie"] or ""
if (method ~= "GET" and method ~= "HEAD") or cookie:find(SESSION_COOKIE .. "=", 1, true) then
  response.headers["X-Cache"] = "BYPASS"
  return pass(BACKEND, { emit = true })
end

local key = "page:" .. (request.headers["host"] or "") .. request.uri
local hit = cache.get(key)
if type(hit) == "table" then
  -- Before emit(): a large body cached as a file ends the run there, sent by the web server.
  response.headers["Age"] = hit.age
  response.headers["X-Cache"] = "HIT"
  emit(hit)
  return
end

local res = pass(BACKEND)
local ttl = ttl_of(res)
-- A HEAD response has no body (PHP sends none): only a GET fills the cache.
if ttl and method == "GET" then cache.set(key, res, ttl) end
emit(res)
response.headers["X-Cache"] = "MISS"
