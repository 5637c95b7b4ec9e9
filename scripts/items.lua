-- A JSON API with a module (lib/api.lua): GET /items.lua lists, ?id=N shows one, POST adds one.
local api = require("api")
local items = { { id = 1, name = "lodestone" }, { id = 2, name = "magnet" } }

if not api.allow("GET", "POST") then return api.fail(405, "use GET or POST") end
if request.method == "POST" then
  local item, err = api.body()
  if not item then return api.fail(400, err) end
  if type(item.name) ~= "string" or item.name == "" then return api.fail(422, "name is required") end
  return api.reply({ id = #items + 1, name = item.name }, 201)
end
local id = tonumber(request.query.id)
if not id then return api.reply(items) end
for _, item in ipairs(items) do
  if item.id == id then return api.reply(item) end
end
return api.fail(404, "no item " .. id)
