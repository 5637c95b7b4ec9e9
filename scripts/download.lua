-- A download the script authorises and the web server delivers: after the check, sendfile()
-- hands the file back to nginx (X-Accel-Redirect) or lighttpd (X-Sendfile), which send the
-- bytes, Range requests included. The file is named relative to the first files root
-- (--file-root / files.roots); sendfile() answers 403 for anything outside the roots (`..`,
-- absolute paths, symlinks pointing out) and 404 for a missing file, so the query string
-- cannot reach other files.
--
--   GET /download.lua?file=report.pdf                      the whole file
--   GET /download.lua?file=video.mp4&offset=0&length=1024  bytes 0-1023 (206)
--   GET /download.lua?file=report.pdf&as=Q1%20report.pdf   offered as a download
--
-- KEY stands in for a real check (a session cookie, a signed link).
local KEY = "open-sesame"

local function refuse(status, text)
  response.headers["Content-Type"] = "text/plain; charset=utf-8"
  print(text)
  return status
end

if request.headers["x-download-key"] ~= KEY then return refuse(403, "forbidden") end
local file = request.query.file
if not file or file == "" then return refuse(400, "file is required") end

-- Headers set before sendfile() stay (nginx keeps only some: Cache-Control, Set-Cookie,
-- Content-Disposition, Expires); the Content-Type comes from the file's extension.
response.headers["Cache-Control"] = "private"
local options = { filename = request.query.as }
local offset, length = tonumber(request.query.offset), tonumber(request.query.length)
-- sendfile() ends the run: nothing after it executes.
return sendfile(file, offset, length, options)
