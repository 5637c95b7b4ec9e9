// Edge authentication in front of PHP: ask an auth service about the caller's cookie, then hand
// the request to PHP-FPM, which learns the user as REMOTE_USER. Run it as the front controller
// (--script auth-pass.js) with a backend named "php" and the service's origin in fetch.allow;
// the web server names the service: fastcgi_param AUTH_SERVICE http://127.0.0.1:8081/check;
const service = request.params.AUTH_SERVICE ?? 'http://127.0.0.1:8081/check';
let res;
try {
  res = await fetch(service, { headers: { Cookie: request.headers.cookie ?? '' }, timeoutMs: 1000 });
} catch (e) {
  // Down, slow or refused: say so in the web server's error log, and fail closed.
  log(`auth service unavailable: ${e.code ?? e.name}: ${e.message}`);
  response.headers['Content-Type'] = 'text/plain';
  print('authentication is unavailable');
  return 503;
}
if (res.status !== 200 || !res.headers['x-user']) {
  response.headers['Content-Type'] = 'text/plain';
  print('not allowed');
  return res.status === 401 ? 401 : 403;
}
return pass('php', { emit: true, params: { REMOTE_USER: res.headers['x-user'] } });
