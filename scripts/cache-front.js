// Cache in front of PHP: GET and HEAD without a session cookie are answered from the cache
// when they can be; misses go to the "php" backend pool and what may be cached is stored
// for as long as the backend said (Cache-Control max-age / s-maxage, or X-Accel-Expires).
// POST and requests with a session cookie always go straight through.
//
// Needs a backend named "php" (config "backends", or --backend php=unix:/run/php/php-fpm.sock).
// PHP receives the request's own params: SCRIPT_FILENAME is what the web server sent.

const BACKEND = 'php';
const SESSION_COOKIE = 'PHPSESSID';

// Seconds the backend lets us keep a response, or null when it may not be cached.
function ttlOf(res) {
  if (res.status !== 200 || res.headers['set-cookie'] !== undefined) return null;
  const vary = res.headers['vary'];
  if (vary !== undefined && vary.toLowerCase() !== 'accept-encoding') return null;
  const accel = res.headers['x-accel-expires'];
  if (accel !== undefined) {
    const n = Number(accel);
    return n > 0 ? n : null;
  }
  const cc = (res.headers['cache-control'] ?? '').toLowerCase();
  if (/no-store|no-cache|private/.test(cc)) return null;
  const m = /s-maxage=(\d+)/.exec(cc) ?? /max-age=(\d+)/.exec(cc);
  const age = m ? Number(m[1]) : 0;
  return age > 0 ? age : null;
}

const method = request.method;
const cookie = request.headers['cookie'] ?? '';
if ((method !== 'GET' && method !== 'HEAD') || cookie.includes(SESSION_COOKIE + '=')) {
  response.headers['X-Cache'] = 'BYPASS';
  return pass(BACKEND, { emit: true });
}

const key = 'page:' + (request.headers['host'] ?? '') + request.uri;
const hit = await cache.get(key);
if (hit !== null && typeof hit === 'object') {
  // Before emit(): a large body cached as a file ends the run there, sent by the web server.
  response.headers['Age'] = hit.age;
  response.headers['X-Cache'] = 'HIT';
  await emit(hit);
  return;
}

const res = await pass(BACKEND);
const ttl = ttlOf(res);
// A HEAD response has no body (PHP sends none): only a GET fills the cache.
if (ttl !== null && method === 'GET') await cache.set(key, res, ttl);
emit(res);
response.headers['X-Cache'] = 'MISS';
