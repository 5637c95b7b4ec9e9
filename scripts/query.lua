-- Echo the decoded query arguments, one "name=value" per line, sorted by name.
response.headers["Content-Type"] = "text/plain; charset=utf-8"
local names = {}
for name in pairs(request.query) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do
  print(name .. "=" .. request.query[name])
end
