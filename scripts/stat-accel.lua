-- fcgi-stat-accel as a script: stat the requested file on Lodestone's thread pool, so that the
-- web server's own stat() of it finds the inode cached, then let the web server send it.
-- `lodestone serve --stat-accel` does the same without a script; this one is the starting
-- point for a variant (add a header, refuse some types, log).
--
--   lodestone serve --script scripts/stat-accel.lua --file-root /srv/www --stat-threads 20
--
-- behind lighttpd as in the original (every URL, check-local disable, x-sendfile enable):
--   fastcgi.server = ( "" => (( "socket" => "/run/lodestone.sock",
--                               "check-local" => "disable", "x-sendfile" => "enable" )) )
--
-- stat() and sendfile() only reach the file roots: a path outside them (a symlink pointing
-- out included) ends the run with 403 and a log line.

local function page(status, title)
  response.headers["Content-Type"] = "text/html; charset=utf-8"
  write("<h1>", title, "</h1>\n")
  return status
end

local file = request.params.SCRIPT_FILENAME
if not file or file == "" then return page(404, "404 Not Found") end
local info = stat(file)
if not info then return page(404, "404 Not Found") end
if info.is_dir then return page(403, "403 Forbidden") end
-- X-Sendfile (lighttpd, Apache) or X-Accel-Redirect (nginx, with files.accel), by SERVER_SOFTWARE.
return sendfile(file)
