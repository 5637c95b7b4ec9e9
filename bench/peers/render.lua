-- The render page (bench/scenarios/render.ts, and micro's render case) on Lodestone's Lua
-- engines, lua54 and fengari: ordinary edge work written the plain way, the same steps as
-- render.js, render.php, render-magnet.lua and render-nginx-lua.lua, byte for byte the same body.
local escapes = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }
local rows = {}
for i = 1, 200 do
  -- gsub returns the count too; the parentheses keep only the string.
  local name = (("item " .. i .. " & co"):gsub("[&<>\"']", escapes))
  rows[i] = string.format("<tr><td>%d</td><td>%s</td><td>%.2f</td></tr>", i, name, i * 1.25)
end
print("<table>" .. table.concat(rows, "\n") .. "</table>")
