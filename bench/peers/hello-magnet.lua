-- The lighttpd mod_magnet peer of the benchmark: Lua run inside lighttpd itself (no FastCGI
-- hop), answering every request with 200 text/plain "123". lighttpd 1.4.60+'s lighty.r API.
local r = lighty.r
r.resp_header["Content-Type"] = "text/plain"
r.resp_body:set({ "123" })
return 200
