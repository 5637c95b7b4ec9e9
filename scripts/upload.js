// A form upload: POST a form (multipart or urlencoded) with a `name` field and files; the
// reply lists what arrived, and a cookie remembers the name, which a GET then shows.
response.headers['Content-Type'] = 'text/plain; charset=utf-8';
if (request.method !== 'POST') {
  print(`last upload by ${request.cookies.name ?? 'nobody'}`);
  return;
}
// request.form() refuses a malformed or oversized form with an error: the client's fault.
let form;
try {
  form = await request.form();
} catch (err) {
  print(err.message);
  return 400;
}
const name = form.fields.name ?? 'anonymous';
response.cookie('name', name, { path: '/', maxAge: 86400, httpOnly: true, sameSite: 'Lax' });
print(`hello ${name}`);
for (const part of form.parts) {
  // size is the byte count (the data is a UTF-8 decoded string in JS).
  if ('filename' in part) print(`file ${part.name}: ${part.filename}, ${part.size} bytes, ${part.content_type}`);
}
