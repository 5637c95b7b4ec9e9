-- A form upload: POST a form (multipart or urlencoded) with a `name` field and files; the
-- reply lists what arrived, and a cookie remembers the name, which a GET then shows.
response.headers["Content-Type"] = "text/plain; charset=utf-8"
if request.method ~= "POST" then
  print("last upload by " .. (request.cookies.name or "nobody"))
  return
end
-- request.form() refuses a malformed or oversized form with an error: the client's fault.
local ok, form = pcall(request.form)
if not ok then
  print(form)
  return 400
end
local name = form.fields.name or "anonymous"
response.cookie("name", name, { path = "/", maxAge = 86400, httpOnly = true, sameSite = "Lax" })
print("hello " .. name)
for _, part in ipairs(form.parts) do
  if part.filename then
    print(string.format("file %s: %s, %d bytes, %s", part.name, part.filename, part.size, part.content_type))
  end
end
