-- The lighttpd mod_magnet peer of the render scenario (bench/scenarios/render.ts): render.lua's
-- page run inside lighttpd itself (PUC Lua 5.4, no FastCGI hop). lighttpd 1.4.60+'s lighty.r API.
local escapes = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }
local rows = {}
for i = 1, 200 do
  local name = (("item " .. i .. " & co"):gsub("[&<>\"']", escapes))
  rows[i] = string.format("<tr><td>%d</td><td>%s</td><td>%.2f</td></tr>", i, name, i * 1.25)
end
local r = lighty.r
r.resp_header["Content-Type"] = "text/html"
-- print's trailing newline, as the other peers send it.
r.resp_body:set({ "<table>", table.concat(rows, "\n"), "</table>\n" })
return 200
