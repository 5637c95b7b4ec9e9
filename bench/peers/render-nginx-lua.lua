-- The nginx + lua-nginx-module peer of the render scenario (bench/scenarios/render.ts):
-- render.lua's page run by LuaJIT inside nginx (content_by_lua_file, code cache on), the
-- OpenResty way of doing edge work with no backend at all.
local escapes = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }
local rows = {}
for i = 1, 200 do
  local name = (("item " .. i .. " & co"):gsub("[&<>\"']", escapes))
  rows[i] = string.format("<tr><td>%d</td><td>%s</td><td>%.2f</td></tr>", i, name, i * 1.25)
end
ngx.header["Content-Type"] = "text/html"
-- ngx.say adds the newline print adds elsewhere.
ngx.say("<table>", table.concat(rows, "\n"), "</table>")
