/**
 * The backend pool against a real PHP-FPM: params and bodies both ways, Set-Cookie order, large
 * streamed responses with backpressure, kept connections really reused (same PHP pid), queueing
 * under maxConnections, failover to a live server and back, timeouts, FCGI_STDERR, aborts,
 * php-fpm recycling children under pm.max_requests, and close() leaving no handle behind.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import test, { type TestContext } from 'node:test';
import { makePool as makeSharedPool, type PoolSetup } from '../helpers/backend-pool.js';
import {
  BackendError,
  BackendPool,
  cancelOf,
  readBody,
  type BackendResponse,
  type PoolOptions,
} from '../../runtime/fastcgi/client/pool.js';
import { requirePhpFpm, startPhpFpm, type PhpFpm } from '../helpers/php-fpm.js';

const scripts = {
  'echo.php': `<?php
http_response_code(201);
header('X-Method: ' . $_SERVER['REQUEST_METHOD']);
header('X-Custom: ' . ($_SERVER['LODESTONE_CUSTOM'] ?? '-'));
setcookie('a', '1');
setcookie('b', '2');
header('Set-Cookie: c=3', false);
$in = file_get_contents('php://input');
header('X-Body-Length: ' . strlen($in));
header('X-Body-Sha256: ' . hash('sha256', $in));
header('X-Pid: ' . getmypid());
echo $in;
`,
  'big.php': `<?php
header('Content-Type: application/octet-stream');
$chunk = str_repeat('0123456789abcdef', 4096);
for ($i = 0; $i < 80; $i++) { echo $chunk; flush(); }
`,
  'pid.php': `<?php
if (isset($_GET['sleep'])) usleep((int) $_GET['sleep']);
echo getmypid();
`,
  'slow.php': `<?php
usleep(2000000);
echo 'late';
`,
  'stderr.php': `<?php
error_log('boom');
echo 'fine';
`,
};

/** 80 x 64 KiB, as big.php prints it. */
const bigBody = Buffer.from('0123456789abcdef'.repeat(4096).repeat(80));

function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** CGI params as nginx's fastcgi_params would send them for `/script?query`. */
function params(fpm: PhpFpm, script: string, extra: Record<string, string> = {}): Array<[string, string]> {
  const [name, query = ''] = script.split('?') as [string, string?];
  return Object.entries({
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_PROTOCOL: 'HTTP/1.1',
    SERVER_SOFTWARE: 'lodestone-test',
    REQUEST_METHOD: 'GET',
    SCRIPT_FILENAME: fpm.script(name),
    SCRIPT_NAME: `/${name}`,
    REQUEST_URI: `/${script}`,
    DOCUMENT_ROOT: fpm.docRoot,
    QUERY_STRING: query,
    SERVER_NAME: 'localhost',
    SERVER_PORT: '80',
    REMOTE_ADDR: '127.0.0.1',
    ...extra,
  });
}

function makePool(t: TestContext, servers: string[], opts: Partial<PoolOptions> = {}): PoolSetup {
  return makeSharedPool(t, 'php', servers, opts, 1000);
}

async function get(pool: BackendPool, fpm: PhpFpm, script: string): Promise<{ res: BackendResponse; body: string }> {
  const res = await pool.request({ params: params(fpm, script), body: null });
  return { res, body: (await readBody(res, 1 << 20)).toString() };
}

function header(res: BackendResponse, name: string): string[] {
  return res.headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);
}

async function rejects(promise: Promise<unknown>, kind: BackendError['kind'], status: number): Promise<BackendError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof BackendError, `expected a BackendError, got ${String(err)}`);
    assert.equal(err.kind, kind, err.message);
    assert.equal(err.status, status);
    return err;
  }
  assert.fail(`expected a '${kind}' BackendError`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

test('params and a 1 MB body reach PHP, as a Buffer and streamed; status and repeated Set-Cookie come back in order', async (t) => {
  if (!requirePhpFpm(t)) return;
  const fpm = await startPhpFpm(t, { scripts });
  const { pool, logs } = makePool(t, [fpm.address]);
  const input = randomBytes(1 << 20);
  const post = (body: Buffer | AsyncIterable<Uint8Array>): Promise<BackendResponse> =>
    pool.request({
      params: params(fpm, 'echo.php', {
        REQUEST_METHOD: 'PUT',
        CONTENT_LENGTH: String(input.length),
        CONTENT_TYPE: 'application/octet-stream',
        LODESTONE_CUSTOM: 'forwarded ✓',
      }),
      body,
    });
  async function* chunks(): AsyncGenerator<Uint8Array> {
    // Odd sizes, and Uint8Arrays rather than Buffers, as a web server's body may come.
    for (let at = 0; at < input.length; ) {
      const n = Math.min(1 + Math.floor(Math.random() * 100_000), input.length - at);
      yield new Uint8Array(input.buffer, input.byteOffset + at, n);
      at += n;
      if (Math.random() < 0.2) await sleep(1);
    }
  }
  const forms: Array<[string, () => Buffer | AsyncIterable<Uint8Array>]> = [
    ['Buffer', () => input],
    ['async generator', chunks],
    ['Readable', () => Readable.from([input.subarray(0, 300_000), input.subarray(300_000)])],
  ];
  for (const [form, body] of forms) {
    const res = await post(body());
    assert.equal(res.status, 201, form);
    assert.equal(res.server, fpm.address);
    assert.deepEqual(header(res, 'x-method'), ['PUT']);
    assert.deepEqual(header(res, 'x-custom'), ['forwarded ✓'].map((s) => Buffer.from(s).toString('latin1')));
    assert.deepEqual(header(res, 'set-cookie'), ['a=1', 'b=2', 'c=3'], form);
    assert.deepEqual(header(res, 'x-body-length'), [String(input.length)], form);
    assert.deepEqual(header(res, 'x-body-sha256'), [sha256(input)], form);
    const echoed = await readBody(res, 2 << 20);
    assert.equal(echoed.length, input.length, form);
    assert.ok(echoed.equals(input), `${form}: echoed body differs`);
  }
  // Pairs given as an encoded block (forwarded as received) work the same.
  const { encodePairs } = await import('../../runtime/fastcgi/pairs.js');
  const res = await pool.request({ params: encodePairs(params(fpm, 'echo.php')), body: null });
  assert.deepEqual(header(res, 'x-method'), ['GET']);
  assert.deepEqual(header(res, 'x-body-length'), ['0']);
  assert.equal((await readBody(res, 10)).length, 0);
  assert.equal(pool.stats()[0]!.connects, 1, 'all four requests on one kept connection');
  assert.deepEqual(
    logs.filter((l) => / (warn|error) /.test(l)),
    [],
  );
});

test('a 5 MB response streams whole; a consumer that stops reading pauses the backend socket', async (t) => {
  if (!requirePhpFpm(t)) return;
  const fpm = await startPhpFpm(t, { scripts });
  const { pool } = makePool(t, [fpm.address]);

  const fast = await pool.request({ params: params(fpm, 'big.php'), body: null });
  assert.equal(fast.status, 200);
  assert.deepEqual(header(fast, 'content-type'), ['application/octet-stream']);
  const whole = await readBody(fast, 8 << 20);
  assert.equal(whole.length, bigBody.length);
  assert.ok(whole.equals(bigBody));

  const slow = await pool.request({ params: params(fpm, 'big.php'), body: null });
  // Not reading at all: what is buffered must level off far below the 5 MB PHP is sending.
  let last = -1;
  for (let stable = 0; stable < 5; ) {
    await sleep(40);
    const now = slow.body.readableLength;
    stable = now === last ? stable + 1 : 0;
    last = now;
  }
  assert.ok(last < 1 << 20, `buffered ${last} bytes without a reader`);
  // Then a slow reader still gets every byte, in order.
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of slow.body) {
    chunks.push(chunk as Buffer);
    if (++n % 20 === 0) await sleep(2);
  }
  const got = Buffer.concat(chunks);
  assert.equal(got.length, bigBody.length);
  assert.ok(got.equals(bigBody));
  assert.equal(pool.stats()[0]!.connects, 1, 'the connection was reused after the paused response');
});

test('kept connections are reused (one connect, one PHP pid); without keepAlive a connection per request', async (t) => {
  if (!requirePhpFpm(t)) return;
  const fpm = await startPhpFpm(t, { scripts, maxChildren: 2 });
  const kept = makePool(t, [fpm.address]);
  const pids = new Set<string>();
  for (let i = 0; i < 50; i++) pids.add((await get(kept.pool, fpm, 'pid.php')).body);
  assert.equal(pids.size, 1, `PHP pids ${[...pids].join(' ')}`);
  const stats = kept.pool.stats()[0]!;
  assert.equal(stats.connects, 1);
  assert.equal(stats.requests, 50);
  assert.equal(stats.idle, 1);
  assert.equal(stats.active, 0);

  // The kept connection holds one php-fpm child: the other pool's requests go to the other one.
  const fresh = makePool(t, [fpm.address], { keepAlive: false });
  for (let i = 0; i < 50; i++) await get(fresh.pool, fpm, 'pid.php');
  const s = fresh.pool.stats()[0]!;
  assert.equal(s.connects, 50);
  assert.equal(s.idle, 0);
});

test('20 concurrent requests with maxConnections 4 and pm.max_children 4 all succeed', async (t) => {
  if (!requirePhpFpm(t)) return;
  const fpm = await startPhpFpm(t, { scripts, maxChildren: 4 });
  const { pool, logged } = makePool(t, [fpm.address], { maxConnections: 4 });
  let maxActive = 0;
  const watch = setInterval(() => (maxActive = Math.max(maxActive, pool.stats()[0]!.active)), 1);
  t.after(() => clearInterval(watch));
  const replies = await Promise.all(Array.from({ length: 20 }, () => get(pool, fpm, 'pid.php?sleep=50000')));
  clearInterval(watch);
  const pids = new Set(replies.map((r) => r.body));
  assert.ok(pids.size >= 1 && pids.size <= 4, `pids ${[...pids].join(' ')}`);
  const stats = pool.stats()[0]!;
  assert.ok(stats.connects <= 4, `connects ${stats.connects}`);
  assert.equal(stats.requests, 20);
  assert.ok(maxActive <= 4, `active reached ${maxActive}`);
  assert.deepEqual(logged('LS_BACKEND_TIMEOUT'), []);
});

test('failover: a dead server is disabled and skipped; all down is a 502; a restarted server serves again', async (t) => {
  if (!requirePhpFpm(t)) return;
  const fpm = await startPhpFpm(t, { scripts });
  const dead = `unix:${path.join(fpm.dir, 'nobody-listens.sock')}`;
  const { pool, logged } = makePool(t, [dead, fpm.address], { disableTimeMs: 300 });
  for (let i = 0; i < 10; i++) assert.match((await get(pool, fpm, 'pid.php')).body, /^\d+$/);
  const d = pool.stats()[0];
  let live = pool.stats()[1];
  assert.ok(d!.failures >= 1);
  assert.ok(d!.disabledUntil > Date.now() - 1000, 'the dead server is disabled');
  assert.equal(d!.connects, 0);
  assert.equal(live!.requests, 10);
  assert.equal(live!.failures, 0);
  assert.ok(logged('LS_BACKEND_DISABLED').length >= 1);
  assert.ok(logged('LS_BACKEND_DISABLED').every((l) => l.includes('pool=php') && l.includes(`server=${dead}`)));
  // After disableTimeMs the dead server is tried again by the next request, which still succeeds.
  await sleep(400);
  const before = pool.stats()[0]!.failures;
  await get(pool, fpm, 'pid.php');
  assert.equal(pool.stats()[0]!.failures, before + 1, 'the dead server was tried again');

  await fpm.stop();
  const unavailable = logged('LS_BACKEND_UNAVAILABLE').length;
  await rejects(get(pool, fpm, 'pid.php'), 'unavailable', 502);
  assert.equal(logged('LS_BACKEND_UNAVAILABLE').length, unavailable + 1, 'logged once per request');
  live = pool.stats()[1];
  assert.ok(live!.failures >= 1);
  assert.ok(live!.disabledUntil > 0);

  await fpm.start();
  await sleep(400);
  assert.match((await get(pool, fpm, 'pid.php')).body, /^\d+$/);
});

test('a response timeout is a 504, the connection is closed, and the pool keeps serving', async (t) => {
  if (!requirePhpFpm(t)) return;
  const fpm = await startPhpFpm(t, { scripts, maxChildren: 2 });
  const { pool, logged } = makePool(t, [fpm.address], { responseTimeoutMs: 300 });
  await get(pool, fpm, 'pid.php');
  const err = await rejects(pool.request({ params: params(fpm, 'slow.php'), body: null }), 'timeout', 504);
  assert.equal(err.code, 'LS_BACKEND_TIMEOUT');
  assert.equal(logged('LS_BACKEND_TIMEOUT').length, 1);
  const stats = pool.stats()[0]!;
  assert.equal(stats.failures, 1);
  assert.equal(stats.idle, 0, 'the timed-out connection is not kept');
  // The only server of a pool is never left out; the other child answers at once.
  assert.equal(stats.disabledUntil, 0);
  assert.match((await get(pool, fpm, 'pid.php')).body, /^\d+$/);
  assert.equal(pool.stats()[0]!.connects, 2);
});

test('FCGI_STDERR from error_log() is logged with LS_BACKEND_STDERR; the response is unaffected', async (t) => {
  if (!requirePhpFpm(t)) return;
  const fpm = await startPhpFpm(t, { scripts });
  const { pool, logged, logs } = makePool(t, [fpm.address]);
  const { res, body } = await get(pool, fpm, 'stderr.php');
  assert.equal(res.status, 200);
  assert.equal(body, 'fine');
  const lines = logged('LS_BACKEND_STDERR');
  assert.equal(lines.length, 1, logs.join('\n'));
  assert.match(lines[0]!, /boom/);
  assert.match(lines[0]!, /pool=php/);
  assert.ok(lines[0]!.includes(`server=${fpm.address}`));
  // The connection was fine for reuse.
  await get(pool, fpm, 'pid.php');
  assert.equal(pool.stats()[0]!.connects, 1);
});

test('aborting mid-response destroys the body and the connection; before the head it rejects with 499', async (t) => {
  if (!requirePhpFpm(t)) return;
  const fpm = await startPhpFpm(t, { scripts });
  const { pool } = makePool(t, [fpm.address]);
  await get(pool, fpm, 'pid.php');
  assert.equal(pool.stats()[0]!.connects, 1);

  const ac = new AbortController();
  const res = await pool.request({ params: params(fpm, 'big.php'), body: null, cancel: cancelOf(ac.signal) });
  let received = 0;
  const read = (async () => {
    for await (const chunk of res.body) {
      received += (chunk as Buffer).length;
      if (!ac.signal.aborted) ac.abort();
    }
  })();
  await rejects(read, 'aborted', 499);
  assert.ok(res.body.destroyed);
  assert.ok(received < bigBody.length);
  // The aborted connection is gone: the next request needs a new one.
  await get(pool, fpm, 'pid.php');
  assert.equal(pool.stats()[0]!.connects, 2);

  const early = new AbortController();
  const pending = pool.request({ params: params(fpm, 'slow.php'), body: null, cancel: cancelOf(early.signal) });
  setTimeout(() => early.abort(), 100);
  await rejects(pending, 'aborted', 499);
  await rejects(pool.request({ params: params(fpm, 'pid.php'), body: null, cancel: cancelOf(early.signal) }), 'aborted', 499);
  assert.match((await get(pool, fpm, 'pid.php')).body, /^\d+$/);
  assert.equal(pool.stats()[0]!.failures, 0, 'aborts are not server failures');
});

test('php-fpm recycling children (pm.max_requests) closes kept connections; requests are retried, none fail', async (t) => {
  if (!requirePhpFpm(t)) return;
  const fpm = await startPhpFpm(t, { scripts, maxChildren: 2, maxRequests: 3 });
  const { pool, logged, logs } = makePool(t, [fpm.address]);
  const pids = new Set<string>();
  const input = randomBytes(100_000);
  async function* streamed(): AsyncGenerator<Uint8Array> {
    for (let at = 0; at < input.length; at += 30_000) {
      await sleep(0);
      yield input.subarray(at, at + 30_000);
    }
  }
  // Every third request meets a recycled connection; four forms make each form meet one. A
  // streamed body is replayed from what was kept of it.
  const forms = [(): Buffer => input, (): null => null, streamed, streamed];
  for (let i = 0; i < 36; i++) {
    const body = forms[i % 4]!();
    const length = body === null ? 0 : input.length;
    const res = await pool.request({
      params: params(fpm, 'echo.php', { REQUEST_METHOD: 'POST', CONTENT_LENGTH: String(length) }),
      body,
    });
    assert.deepEqual(header(res, 'x-body-length'), [String(length)], `request ${i}`);
    if (length > 0) assert.deepEqual(header(res, 'x-body-sha256'), [sha256(input)], `request ${i}`);
    pids.add(header(res, 'x-pid')[0]!);
    await readBody(res, 1 << 20);
  }
  const stats = pool.stats()[0]!;
  assert.ok(pids.size >= 12, `${pids.size} children served 36 requests at 3 each`);
  assert.ok(stats.connects >= 12, `connects ${stats.connects}`);
  assert.equal(stats.failures, 0);
  assert.deepEqual(logged('LS_BACKEND_UNAVAILABLE'), []);
  t.diagnostic(`requests retried on a fresh connection: ${logs.filter((l) => l.includes('retrying')).length}`);
});

test('close() fails queued requests, lets the active one finish and leaves no socket or timer behind', async (t) => {
  if (!requirePhpFpm(t)) return;
  const fpm = await startPhpFpm(t, { scripts, maxChildren: 2 });
  const count = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
    return out;
  };
  await sleep(50);
  const before = count();
  const { pool } = makePool(t, [fpm.address], { maxConnections: 1 });
  // An idle kept connection, one request in flight, one queued behind it.
  await get(pool, fpm, 'pid.php');
  const active = get(pool, fpm, 'pid.php?sleep=200000');
  const queued = get(pool, fpm, 'pid.php');
  await sleep(50);
  const closed = pool.close();
  await rejects(queued, 'unavailable', 502);
  assert.match((await active).body, /^\d+$/);
  await closed;
  await rejects(get(pool, fpm, 'pid.php'), 'unavailable', 502);
  await sleep(20);
  const after = count();
  for (const kind of ['TCPSocketWrap', 'PipeWrap', 'Timeout', 'Immediate', 'TCPWrap']) {
    assert.ok((after[kind] ?? 0) <= (before[kind] ?? 0), `${kind}: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
  }
});
