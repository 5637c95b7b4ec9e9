// A download the script authorises and the web server delivers: after the check, sendfile()
// hands the file back to nginx (X-Accel-Redirect) or lighttpd (X-Sendfile), which send the
// bytes, Range requests included. The file is named relative to the first files root
// (--file-root / files.roots); sendfile() answers 403 for anything outside the roots (`..`,
// absolute paths, symlinks pointing out) and 404 for a missing file, so the query string
// cannot reach other files.
//
//   GET /download.js?file=report.pdf                      the whole file
//   GET /download.js?file=video.mp4&offset=0&length=1024  bytes 0-1023 (206)
//   GET /download.js?file=report.pdf&as=Q1%20report.pdf   offered as a download
//
// KEY stands in for a real check (a session cookie, a signed link).
const KEY = 'open-sesame';

function refuse(status, text) {
  response.headers['Content-Type'] = 'text/plain; charset=utf-8';
  print(text);
  return status;
}

if (request.headers['x-download-key'] !== KEY) return refuse(403, 'forbidden');
const file = request.query.file;
if (!file) return refuse(400, 'file is required');

// Headers set before sendfile() stay (nginx keeps only some: Cache-Control, Set-Cookie,
// Content-Disposition, Expires); the Content-Type comes from the file's extension.
response.headers['Cache-Control'] = 'private';
const number = (s) => (s === undefined || s === '' ? undefined : Number(s));
const options = request.query.as === undefined ? {} : { filename: request.query.as };
// sendfile() ends the run: nothing after it executes.
return sendfile(file, number(request.query.offset), number(request.query.length), options);
