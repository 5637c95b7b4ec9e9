-- A small JSON API: GET /api.lua?name=x greets, POST echoes the body back.
response.headers["Content-Type"] = "application/json"
if request.method == "POST" then
  -- json.encode refuses a string that is not UTF-8: a binary body is the client's mistake.
  local ok, text = pcall(json.encode, { received = request.body() })
  if not ok then
    write(json.encode({ error = "the body must be UTF-8 text" }))
    return 400
  end
  write(text)
  return 201
end
local name = request.query.name
if not name or name == "" then
  write(json.encode({ error = "name is required" }))
  return 400
end
write(json.encode({ greeting = "Hello, " .. name, method = request.method }))
