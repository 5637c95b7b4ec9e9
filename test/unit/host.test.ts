/** ScriptHost: the request view, output limits, aborts, sleep, and raw-output mode. */
import assert from 'node:assert/strict';
import test from 'node:test';
import { ScriptHost, utf8Prefix } from '../../runtime/engines/host.js';
import { makeHost } from '../helpers/script-host.js';

const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

test('request view: method, decoded path, query (last wins), lower-case headers', () => {
  const { host } = makeHost({
    params: {
      REQUEST_METHOD: 'POST',
      REQUEST_URI: '/caf%C3%A9/x?a=1&a=2&b=%20c',
      QUERY_STRING: 'a=1&a=2&b=%20c',
      HTTP_USER_AGENT: 'test/1.0',
      HTTP_X_FORWARDED_FOR: '10.0.0.1',
      CONTENT_TYPE: 'text/plain',
      CONTENT_LENGTH: '3',
    },
  });
  assert.equal(host.method, 'POST');
  assert.equal(host.path, '/café/x');
  assert.equal(host.queryString, 'a=1&a=2&b=%20c');
  assert.deepEqual({ ...host.query }, { a: '2', b: ' c' });
  assert.deepEqual(
    { ...host.headers },
    { 'user-agent': 'test/1.0', 'x-forwarded-for': '10.0.0.1', 'content-type': 'text/plain', 'content-length': '3' },
  );
  assert.equal(host.remoteAddr, '127.0.0.1');
  assert.equal(makeHost({ params: { REQUEST_URI: '/bad%E0%A4' } }).host.path, '/bad%E0%A4');
});

test('status must be an integer 100..999', () => {
  const { host } = makeHost();
  host.status = 404;
  assert.equal(host.status, 404);
  for (const bad of [42, 1000, 200.5, NaN]) assert.throws(() => (host.status = bad), TypeError);
});

test('output over the limit stops the run with a limit error', () => {
  const { host } = makeHost({ limits: { outputBytes: 10 } });
  host.write('12345');
  host.write(new Uint8Array([54, 55, 56, 57, 48]));
  assert.throws(() => host.write('x'), (err: Error) => err.name === 'ScriptError' && /output over 10 bytes/.test(err.message));
  assert.equal(host.fatal?.kind, 'limit');
});

test('an aborted sleep rejects at once and leaves no timer behind', async () => {
  const { host } = makeHost();
  const before = timers();
  const sleeping = host.sleep(100_000);
  assert.equal(timers(), before + 1);
  host.abort('limit', 'wall time over 1 ms');
  await assert.rejects(sleeping, /wall time over 1 ms/);
  assert.equal(timers(), before);
  await assert.rejects(host.sleep(1), /wall time/);
});

test('the wall-time limit fires through start(); finish() stops watching', async () => {
  const { host } = makeHost({ limits: { wallMs: 20 } });
  host.start();
  await assert.rejects(host.sleep(100_000), /wall time over 20 ms/);
  host.finish();
  // A finished run is no longer watched: its deadline passing later stops nothing.
  const { host: quick } = makeHost({ limits: { wallMs: 1 } });
  quick.start();
  quick.finish();
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.equal(quick.fatal, null);
});

test('sleep past the wall limit ends the run at the limit; a wait beyond 2^31-1 ms does not fire at once', async () => {
  const { host } = makeHost({ limits: { wallMs: 60 } });
  host.start();
  const started = performance.now();
  await assert.rejects(host.sleep(1e12), /wall time over 60 ms/);
  assert.ok(performance.now() - started >= 50, 'not before the limit');
  host.finish();
  const { host: inf } = makeHost({ limits: { wallMs: 40 } });
  inf.start();
  await assert.rejects(inf.sleep(Infinity), /wall time over 40 ms/);
  inf.finish();
  // No deadline at all (a host never started): the overflowing wait still does not return early.
  const { host: bare } = makeHost();
  let woke = false;
  const sleeping = bare.sleep(2 ** 31 + 5).then(() => (woke = true));
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(woke, false);
  bare.abort('limit', 'stop');
  await assert.rejects(sleeping, /stop/);
  // NaN and negative waits are 0.
  await makeHost().host.sleep(NaN);
  await makeHost().host.sleep(-1);
});

test('log(): a line cut at the line bound with a marker; the run budget cut then one marker; nothing stops the run', () => {
  const t = makeHost({ limits: { logLineBytes: 10, logBytes: 25 } });
  const { host } = t;
  assert.equal(host.logRoom, 10);
  host.log('0123456789abc');
  host.log('€€€€');
  // 10 + 9 bytes kept so far: 6 of the budget left for this line.
  host.log('cut by the engine', 100, 'characters');
  host.log('over');
  host.log('dropped');
  assert.equal(host.logRoom, 0);
  assert.equal(host.fatal, null);
  host.end(undefined);
  assert.equal(
    t.result().stderr,
    '0123456789 [lodestone: log line cut, 3 more bytes not logged]\n' +
      '€€€ [lodestone: log line cut, 3 more bytes not logged]\n' +
      'cut by [lodestone: log line cut, 111 more characters not logged]\n' +
      'lodestone: log budget of this run spent (scriptLimits.logBytes = 25): this and later log lines dropped\n',
  );
});

test('utf8Prefix never splits a character or a surrogate pair', () => {
  assert.deepEqual(utf8Prefix('abc', 5), { text: 'abc', length: 3 });
  assert.deepEqual(utf8Prefix('ééé', 5), { text: 'éé', length: 4 });
  assert.deepEqual(utf8Prefix('a😀b', 3), { text: 'a', length: 1 });
  assert.deepEqual(utf8Prefix('a😀b', 2), { text: 'a', length: 1 });
  assert.deepEqual(utf8Prefix('a😀b', 5), { text: 'a😀', length: 5 });
});

test('body() returns the posted bytes', async () => {
  const { host } = makeHost({ body: Buffer.from([0, 1, 2, 255]) });
  assert.deepEqual([...(await host.body())], [0, 1, 2, 255]);
});

function rawHost(): ReturnType<typeof makeHost> {
  const t = makeHost();
  const raw = new ScriptHost(t.request, t.response, t.host.limits, '/srv/raw.lua', '/srv', true);
  return { ...t, host: raw };
}

test('raw mode: the printed CGI head becomes status and headers', () => {
  const t = rawHost();
  t.host.write('Status: 404 Not Found\r\nContent-Type: text/plain\r\n');
  t.host.write('Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nnot ');
  t.host.write('here');
  t.host.endOutput();
  assert.equal(t.host.fatal, null);
  const out = t.result();
  assert.equal(out.status, 404);
  assert.equal(out.headers['content-type'], 'text/plain');
  assert.equal(out.body.toString(), 'not here');
});

test('raw mode: no complete head, or a malformed one, is a script error', () => {
  const incomplete = rawHost();
  incomplete.host.write('Content-Type: text/plain\r\nno blank line');
  incomplete.host.endOutput();
  assert.match(incomplete.host.fatal?.message ?? '', /no complete CGI header block/);
  const malformed = rawHost();
  malformed.host.write('this is not a header\r\n\r\n');
  malformed.host.endOutput();
  assert.match(malformed.host.fatal?.message ?? '', /malformed CGI header line/);
});

test('raw mode: flush waits for the whole head, then streams', () => {
  const t = rawHost();
  t.host.write('Content-Type: text/plain\r\n');
  t.host.flush();
  assert.equal(t.response.headersSent, false);
  t.host.write('\r\nfirst ');
  t.host.flush();
  assert.equal(t.response.headersSent, true);
  t.host.write('second');
  t.host.endOutput();
  assert.equal(t.result().body.toString(), 'first second');
});

test('the web server aborting the request stops the run and its waits', async () => {
  const { host, request } = makeHost();
  host.start();
  const sleeping = host.sleep(100_000);
  request.abort(new Error('connection closed'));
  await assert.rejects(sleeping, /request aborted by the web server/);
  assert.equal(host.fatal?.kind, 'limit');
  host.finish();
  // Unsubscribed listeners are not called: a finished run ignores a later abort.
  const later = makeHost();
  later.host.start();
  later.host.finish();
  later.request.abort(new Error('late'));
  assert.equal(later.host.fatal, null);
});
