// A login with a signed cookie: POST user=NAME logs in (a real site checks a password first);
// a request whose cookie carries a valid HMAC is greeted; a forged or edited cookie is refused.
// The cookie is base64url(user) "." hex HMAC-SHA256: nothing to store, nothing to look up.
const KEY = 'demo key: replace with a long random secret kept out of the docroot';
const sign = (value) => crypto.hmac('sha256', KEY, value);

response.headers['Content-Type'] = 'text/plain; charset=utf-8';
if (request.method === 'POST') {
  let user = null;
  try {
    user = (await request.form()).fields.user ?? null;
  } catch {
    // a malformed form: answered as a bad user below
  }
  if (user === null || !/^[\w-]+$/.test(user)) {
    print('user: letters, digits, _ and - only');
    return 400;
  }
  const value = base64.encode_url(user);
  response.cookie('session', `${value}.${sign(value)}`, { path: '/', maxAge: 3600, httpOnly: true, sameSite: 'Lax' });
  print(`logged in as ${user}`);
  return;
}

const [, value, mac] = /^([\w-]+)\.([0-9a-f]+)$/.exec(request.cookies.session ?? '') ?? [];
// timing_safe_equal: a forger learns nothing from how long the comparison took.
if (value === undefined || !crypto.timing_safe_equal(mac, sign(value))) {
  print('not logged in');
  return 401;
}
print(`hello ${base64.decode_url(value)}`);
