-- A small JSON API: GET /api.lua?name=x greets, POST echoes the body back.
-- (Lua has no JSON library in the sandbox; this encodes the few fields it needs.)
local function quote(s)
  -- gsub returns two values; the parentheses keep only the string.
  return '"' .. (s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end)) .. '"'
end

response.headers["Content-Type"] = "application/json"
if request.method == "POST" then
  write('{"received":', quote(request.body()), '}')
  return 201
end
local name = request.query.name
if not name or name == "" then
  write('{"error":"name is required"}')
  return 400
end
write('{"greeting":', quote("Hello, " .. name), ',"method":', quote(request.method), '}')
