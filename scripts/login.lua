-- A login with a signed cookie: POST user=NAME logs in (a real site checks a password first);
-- a request whose cookie carries a valid HMAC is greeted; a forged or edited cookie is refused.
-- The cookie is base64url(user) "." hex HMAC-SHA256: nothing to store, nothing to look up.
local KEY = "demo key: replace with a long random secret kept out of the docroot"
local function sign(value)
  return crypto.hmac("sha256", KEY, value)
end

response.headers["Content-Type"] = "text/plain; charset=utf-8"
if request.method == "POST" then
  local ok, form = pcall(request.form)
  local user = ok and form.fields.user or nil
  if not user or not user:match("^[%w_%-]+$") then
    print("user: letters, digits, _ and - only")
    return 400
  end
  local value = base64.encode_url(user)
  response.cookie("session", value .. "." .. sign(value), { path = "/", maxAge = 3600, httpOnly = true, sameSite = "Lax" })
  print("logged in as " .. user)
  return
end

local value, mac = (request.cookies.session or ""):match("^([%w_%-]+)%.(%x+)$")
-- timing_safe_equal: a forger learns nothing from how long the comparison took.
if not value or not crypto.timing_safe_equal(mac, sign(value)) then
  print("not logged in")
  return 401
end
print("hello " .. base64.decode_url(value))
