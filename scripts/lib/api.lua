-- Helpers every JSON endpoint shares, required by items.lua as require("api"). A module's top
-- level runs afresh in each request that requires it: nothing kept here outlives the request.
local api = {}

-- Sends `value` as JSON; returns the status for the script to return.
function api.reply(value, status)
  response.headers["Content-Type"] = "application/json"
  response.headers["Cache-Control"] = "no-store"
  write(json.encode(value))
  return status or 200
end

function api.fail(status, message)
  return api.reply({ error = message }, status)
end

-- The request's body as a JSON object, or nil and why.
function api.body()
  local ok, value = pcall(json.decode, request.body())
  if not ok or type(value) ~= "table" then return nil, "the body must be a JSON object" end
  return value
end

-- True when the request's method is one of `...`; else sets Allow for the 405.
function api.allow(...)
  for _, method in ipairs({ ... }) do
    if request.method == method then return true end
  end
  response.headers["Allow"] = table.concat({ ... }, ", ")
  return false
end

return api
