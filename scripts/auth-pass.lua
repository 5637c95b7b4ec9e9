-- Edge authentication in front of PHP: ask an auth service about the caller's cookie, then hand
-- the request to PHP-FPM, which learns the user as REMOTE_USER. Run it as the front controller
-- (--script auth-pass.lua) with a backend named "php" and the service's origin in fetch.allow;
-- the web server names the service: fastcgi_param AUTH_SERVICE http://127.0.0.1:8081/check;
local service = request.params.AUTH_SERVICE or "http://127.0.0.1:8081/check"
local ok, res = pcall(fetch, service, { headers = { Cookie = request.headers.cookie or "" }, timeoutMs = 1000 })
if not ok then
  -- Down, slow or refused: say so in the web server's error log, and fail closed.
  log("auth service unavailable: " .. tostring(res))
  response.headers["Content-Type"] = "text/plain"
  print("authentication is unavailable")
  return 503
end
if res.status ~= 200 or not res.headers["x-user"] then
  response.headers["Content-Type"] = "text/plain"
  print("not allowed")
  return res.status == 401 and 401 or 403
end
return pass("php", { emit = true, params = { REMOTE_USER = res.headers["x-user"] } })
