/**
 * The backend client and pool against raw `net` servers that answer with handcrafted records:
 * what is sent (BEGIN_REQUEST flags, PARAMS, STDIN framing), every malformed or truncated
 * answer a backend can give, timeouts, retries on a kept connection closed by the server,
 * balancing and queueing. The servers decode with the test helper's own decoder, independent
 * of runtime/fastcgi.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import test, { type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { makePool as makeSharedPool, type PoolSetup } from '../helpers/backend-pool.js';
import { Logger } from '../../runtime/log.js';
import { Request } from '../../runtime/fastcgi/server/request.js';
import { blankLineEnd } from '../../runtime/fastcgi/client/wire.js';
import {
  BackendError,
  BackendPool,
  cancelOf,
  defaultPoolOptions,
  parseServer,
  readBody,
  type BackendResponse,
  type PoolOptions,
} from '../../runtime/fastcgi/client/pool.js';
import { Decoder, T, decodePairsForTest, record, stream, type Rec } from '../helpers/fcgi-client.js';
import { waitFor } from '../shared/poll.js';

interface RawRequest {
  keepConn: boolean;
  params: Record<string, string>;
  stdin: Buffer;
  records: Rec[];
  /** Requests before this one on the same connection. */
  index: number;
}

type Responder = (socket: net.Socket, req: RawRequest) => void;

interface RawBackend {
  readonly spec: string;
  readonly requests: RawRequest[];
  /** Connections accepted so far. */
  connections(): number;
  /** Connections still open. */
  open(): number;
}

/**
 * A FastCGI "backend" on 127.0.0.1:0 that calls `respond` once per request: when its empty STDIN
 * record arrived, or with `at: 'params'` as soon as PARAMS ended.
 */
async function rawBackend(t: TestContext, respond: Responder, at: 'stdin' | 'params' = 'stdin'): Promise<RawBackend> {
  const sockets = new Set<net.Socket>();
  const requests: RawRequest[] = [];
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const decoder = new Decoder();
    let from = 0;
    let index = 0;
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      for (let i = from; i < decoder.records.length; i++) {
        const r = decoder.records[i]!;
        const closing = at === 'params' ? r.type === T.PARAMS : r.type === T.STDIN;
        if (!closing || r.content.length > 0) continue;
        const mine = decoder.records.slice(from, i + 1);
        from = i + 1;
        const begin = mine.find((m) => m.type === T.BEGIN_REQUEST)!;
        const req: RawRequest = {
          keepConn: (begin.content[2]! & 1) === 1,
          params: decodePairsForTest(Buffer.concat(mine.filter((m) => m.type === T.PARAMS).map((m) => m.content))),
          stdin: Buffer.concat(mine.filter((m) => m.type === T.STDIN).map((m) => m.content)),
          records: mine,
          index: index++,
        };
        requests.push(req);
        respond(socket, req);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  const { port } = server.address() as net.AddressInfo;
  return { spec: `127.0.0.1:${port}`, requests, connections: () => connections, open: () => sockets.size };
}

function end(protocolStatus = 0, appStatus = 0): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt32BE(appStatus);
  body[4] = protocolStatus;
  return record(T.END_REQUEST, 1, body);
}

/** A whole, valid response. */
function reply(body: string, head = 'Content-Type: text/plain\r\n\r\n'): Buffer {
  return Buffer.concat([stream(T.STDOUT, 1, head + body), end()]);
}

const ok: Responder = (socket, req) => socket.write(reply(`hello ${req.index}`));

function makePool(t: TestContext, servers: string[], opts: Partial<PoolOptions> = {}): PoolSetup {
  return makeSharedPool(t, 'raw', servers, opts, 500);
}

const params: Array<[string, string]> = [
  ['SCRIPT_FILENAME', '/srv/index.php'],
  ['REQUEST_METHOD', 'GET'],
];

async function text(pool: BackendPool): Promise<string> {
  const res = await pool.request({ params, body: null });
  return (await readBody(res, 1 << 20)).toString();
}

async function rejects(promise: Promise<unknown>, kind: BackendError['kind'], pattern?: RegExp): Promise<BackendError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof BackendError, `expected a BackendError, got ${String(err)}`);
    assert.equal(err.kind, kind, err.message);
    assert.equal(err.status, { unavailable: 502, protocol: 502, timeout: 504, aborted: 499 }[kind]);
    if (pattern) assert.match(err.message, pattern);
    return err;
  }
  assert.fail(`expected a '${kind}' BackendError`);
}

test('parseServer accepts unix paths, IPv4, [IPv6] and host names, and explains a bad spec', () => {
  assert.deepEqual(parseServer('unix:/run/php/fpm.sock'), { kind: 'unix', path: '/run/php/fpm.sock' });
  assert.deepEqual(parseServer('127.0.0.1:9001'), { kind: 'tcp', host: '127.0.0.1', port: 9001 });
  assert.deepEqual(parseServer('[::1]:9001'), { kind: 'tcp', host: '::1', port: 9001 });
  assert.deepEqual(parseServer('localhost:9001'), { kind: 'tcp', host: 'localhost', port: 9001 });
  assert.deepEqual(parseServer('tcp:php.internal:9000'), { kind: 'tcp', host: 'php.internal', port: 9000 });
  for (const bad of ['', 'unix:', 'unix:relative.sock', `unix:/${'x'.repeat(120)}`, '127.0.0.1', '::1:9000', 'host:0', 'host:65536', 'host:port', 'http://x:80']) {
    assert.equal(typeof parseServer(bad), 'string', JSON.stringify(bad));
  }
  const log = new Logger('error', () => {});
  assert.throws(() => new BackendPool({ ...defaultPoolOptions, name: 'x', servers: [] }, log), /servers is empty/);
  assert.throws(() => new BackendPool({ ...defaultPoolOptions, name: 'x', servers: ['nope'] }, log), /bad server/);
  assert.throws(
    () => new BackendPool({ ...defaultPoolOptions, name: 'x', servers: ['127.0.0.1:1'], maxConnections: 0 }, log),
    /maxConnections/,
  );
});

test('blankLineEnd finds the end of a CGI header block with LF or CRLF lines, only past `from`', () => {
  assert.equal(blankLineEnd(Buffer.from('A: b\r\n\r\nbody'), 0), 8);
  assert.equal(blankLineEnd(Buffer.from('A: b\n\nbody'), 0), 6);
  assert.equal(blankLineEnd(Buffer.from('\r\nbody'), 0), 2);
  assert.equal(blankLineEnd(Buffer.from('\nbody'), 0), 1);
  assert.equal(blankLineEnd(Buffer.from('A: b\r\nC: d\r\n'), 0), -1);
  assert.equal(blankLineEnd(Buffer.from('A: b\r\n\r'), 0), -1);
  // The LF that completes the blank line may be the first new byte.
  assert.equal(blankLineEnd(Buffer.from('A: b\r\n\r\n'), 7), 8);
});

test('the request goes out as BEGIN_REQUEST (KEEP_CONN), PARAMS and STDIN in records of at most 65535 bytes', async (t) => {
  const backend = await rawBackend(t, ok);
  const { pool } = makePool(t, [backend.spec]);
  const big = randomBytes(300_000);
  const long = 'v'.repeat(70_000);
  let res = await pool.request({ params: [...params, ['LONG', long]], body: big });
  await readBody(res, 100);
  res = await pool.request({ params, body: null });
  await readBody(res, 100);
  const [first, second] = backend.requests;
  assert.equal(first!.keepConn, true);
  assert.equal(first!.params.LONG, long);
  assert.equal(first!.params.SCRIPT_FILENAME, '/srv/index.php');
  assert.ok(first!.stdin.equals(big));
  assert.ok(first!.records.every((r) => r.id === 1 && r.content.length <= 65535 && ((r.padding ?? 0) + r.content.length) % 8 === 0));
  assert.deepEqual(
    first!.records.map((r) => r.type).filter((ty, i, all) => i === 0 || all[i - 1] !== ty),
    [T.BEGIN_REQUEST, T.PARAMS, T.STDIN],
  );
  // Without a body an empty STDIN record is still sent.
  assert.deepEqual(
    second!.records.filter((r) => r.type === T.STDIN).map((r) => r.content.length),
    [0],
  );
  assert.equal(second!.index, 1, 'second request on the same connection');
  assert.equal(backend.connections(), 1);

  const plain = makePool(t, [backend.spec], { keepAlive: false });
  await text(plain.pool);
  assert.equal(backend.requests[2]!.keepConn, false);
});

test('a header block split into 1-byte records, LF line ends, Status and Location are understood', async (t) => {
  const heads = [
    ['Status: 404 Not Found\nContent-Type: text/html\nSet-Cookie: a=1\nSet-Cookie: b=2\n\n', 404],
    ['Location: /elsewhere\r\n\r\n', 302],
    ['X-A: 1\r\n\r\n', 200],
  ] as const;
  let which = 0;
  const backend = await rawBackend(t, (socket) => {
    const [head] = heads[which++]!;
    const out = Buffer.from(head + 'the body');
    for (const byte of out) socket.write(record(T.STDOUT, 1, Buffer.from([byte])));
    socket.write(Buffer.concat([record(T.STDOUT, 1), end(0, 255)]));
  });
  const { pool } = makePool(t, [backend.spec]);
  for (const [, status] of heads) {
    const res = await pool.request({ params, body: null });
    assert.equal(res.status, status);
    assert.equal((await readBody(res, 100)).toString(), 'the body');
    if (status === 404) {
      assert.deepEqual(res.headers, [
        ['Content-Type', 'text/html'],
        ['Set-Cookie', 'a=1'],
        ['Set-Cookie', 'b=2'],
      ]);
    }
  }
  assert.equal(backend.connections(), 1, 'appStatus 255 did not matter; the connection was reused');
});

// Each case: what the backend sends, and a pattern of the message.
const malformed: Array<[string, () => Buffer, RegExp]> = [
  ['garbage bytes', () => Buffer.from('HTTP/1.1 200 OK\r\n\r\n'), /version 72/],
  ['a version 2 record', () => Buffer.from([2, T.STDOUT, 0, 1, 0, 0, 0, 0]), /version 2/],
  ['a header block without its blank line, then END_REQUEST', () => Buffer.concat([stream(T.STDOUT, 1, 'A: b\r\n'), end()]), /before the end of the CGI header block/],
  ['END_REQUEST without STDOUT', () => end(), /without output/],
  ['a malformed header line', () => reply('x', 'no colon here\r\n\r\n'), /malformed CGI header line/],
  ['a bad Status', () => reply('x', 'Status: abc\r\n\r\n'), /malformed Status/],
  ['a header block over 64 KiB', () => stream(T.STDOUT, 1, `X-Big: ${'x'.repeat(70_000)}\r\n`), /over 65536 bytes/],
  ['END_REQUEST with FCGI_OVERLOADED', () => Buffer.concat([stream(T.STDOUT, 1, 'A: b\r\n\r\n'), end(2)]), /protocolStatus 2/],
  ['a record for another request id', () => record(T.STDOUT, 2, 'A: b\r\n\r\n'), /request id 2/],
  ['an unexpected record type', () => record(T.GET_VALUES_RESULT, 1, ''), /unexpected record type 10/],
  ['a short END_REQUEST', () => Buffer.concat([stream(T.STDOUT, 1, 'A: b\r\n\r\n'), record(T.END_REQUEST, 1, 'abc')]), /END_REQUEST body of 3 bytes/],
];

for (const [name, bytes, pattern] of malformed) {
  test(`a backend sending ${name}: 'protocol' (502), logged, connection closed, pool still works`, async (t) => {
    let bad = true;
    const backend = await rawBackend(t, (socket) => {
      if (bad) socket.write(bytes());
      else ok(socket, { index: 0 } as RawRequest);
    });
    const { pool, logged } = makePool(t, [backend.spec]);
    // Before the head the request rejects; after it, the body errors: readBody sees either.
    const err = await rejects(text(pool), 'protocol', pattern);
    assert.equal(err.code, 'LS_BACKEND_PROTOCOL');
    assert.equal(err.pool, 'raw');
    assert.equal(err.server, backend.spec);
    assert.equal(logged('LS_BACKEND_PROTOCOL').length, 1);
    assert.match(logged('LS_BACKEND_PROTOCOL')[0]!, /pool=raw/);
    await waitFor(() => backend.open() === 0, 3000, 'the client to close the connection');
    bad = false;
    assert.equal(await text(pool), 'hello 0');
    assert.equal(pool.stats()[0]!.failures, 1);
    assert.equal(pool.stats()[0]!.disabledUntil, 0);
  });
}

test('a backend closing mid-body: the head arrives, then the body errors with a protocol error', async (t) => {
  const backend = await rawBackend(t, (socket) => {
    socket.write(record(T.STDOUT, 1, 'Content-Type: text/plain\r\n\r\npartial'), () => setTimeout(() => socket.destroy(), 20));
  });
  const { pool, logged } = makePool(t, [backend.spec]);
  const res = await pool.request({ params, body: null });
  assert.equal(res.status, 200);
  await rejects(readBody(res, 1000), 'protocol', /closed before END_REQUEST/);
  assert.equal(logged('LS_BACKEND_PROTOCOL').length, 1);
});

test('data after END_REQUEST on an idle kept connection closes it; the next request opens a new one', async (t) => {
  const backend = await rawBackend(t, (socket) => socket.write(Buffer.concat([reply('x'), record(T.STDOUT, 1, 'stray')])));
  const { pool, logged } = makePool(t, [backend.spec]);
  assert.equal(await text(pool), 'x');
  await waitFor(() => backend.open() === 0, 3000, 'the stray bytes to close the connection');
  assert.equal(logged('LS_BACKEND_PROTOCOL').length, 1);
  assert.equal(await text(pool), 'x');
  assert.equal(backend.connections(), 2);
});

test('a backend that never answers: timeout (504) after responseTimeoutMs, also between body reads', async (t) => {
  const silent = await rawBackend(t, () => {});
  const { pool, logged } = makePool(t, [silent.spec], { responseTimeoutMs: 150 });
  const err = await rejects(pool.request({ params, body: null }), 'timeout', /no response from the backend for 150 ms/);
  assert.equal(err.code, 'LS_BACKEND_TIMEOUT');
  assert.equal(logged('LS_BACKEND_TIMEOUT').length, 1);
  await waitFor(() => silent.open() === 0, 3000, 'the timed-out connection to close');

  const stalls = await rawBackend(t, (socket) => socket.write(record(T.STDOUT, 1, 'A: b\r\n\r\nsome')));
  const second = makePool(t, [stalls.spec], { responseTimeoutMs: 150 });
  const res = await second.pool.request({ params, body: null });
  await rejects(readBody(res, 100), 'timeout', /backend stopped sending for 150 ms/);
});

test('with several servers a response timeout disables the server; the others serve meanwhile', async (t) => {
  const silent = await rawBackend(t, () => {});
  const live = await rawBackend(t, ok);
  const { pool, logged } = makePool(t, [silent.spec, live.spec], { responseTimeoutMs: 150, disableTimeMs: 60_000 });
  // Round robin starts at the first server: the silent one.
  await rejects(pool.request({ params, body: null }), 'timeout');
  assert.ok(pool.stats()[0]!.disabledUntil > Date.now());
  assert.equal(logged('LS_BACKEND_DISABLED').length, 1);
  assert.match(logged('LS_BACKEND_DISABLED')[0]!, /response timed out/);
  for (let i = 0; i < 4; i++) assert.match(await text(pool), /^hello \d$/);
  assert.equal(silent.requests.length, 1);
});

test('FCGI_STDERR is logged per record, cut at 1 KiB, at most 20 lines per request', async (t) => {
  const backend = await rawBackend(t, (socket) => {
    const parts = [record(T.STDERR, 1, 'PHP message: first\n'), record(T.STDERR, 1, 'y'.repeat(5000))];
    for (let i = 0; i < 30; i++) parts.push(record(T.STDERR, 1, `flood ${i}`));
    socket.write(Buffer.concat([...parts, reply('still fine')]));
  });
  const { pool, logged } = makePool(t, [backend.spec]);
  assert.equal(await text(pool), 'still fine');
  const lines = logged('LS_BACKEND_STDERR');
  assert.equal(lines.length, 21);
  assert.match(lines[0]!, /PHP message: first pool=raw server=/);
  assert.ok(lines[1]!.includes(`${'y'.repeat(1024)}...`));
  assert.ok(!lines[1]!.includes('y'.repeat(1025)));
  assert.match(lines[20]!, /12 more stderr records not logged/);
});

test('a kept connection closed by the backend before answering is retried once on a new one, not a failure', async (t) => {
  // The second request on each connection gets no answer: the connection is just closed, as
  // php-fpm does when it recycles a child.
  const backend = await rawBackend(t, (socket, req) => {
    if (req.index === 0) ok(socket, req);
    else socket.destroy();
  });
  const { pool, logged } = makePool(t, [backend.spec]);
  assert.equal(await text(pool), 'hello 0');
  async function* body(): AsyncGenerator<Uint8Array> {
    yield Buffer.from('streamed ');
    await sleep(1);
    yield Buffer.from('body');
  }
  const res = await pool.request({ params, body: body() });
  assert.equal((await readBody(res, 100)).toString(), 'hello 0');
  assert.equal(backend.connections(), 2);
  assert.equal(backend.requests.at(-1)!.stdin.toString(), 'streamed body', 'the streamed body was replayed whole');
  assert.equal(pool.stats()[0]!.failures, 0);
  assert.deepEqual(logged('LS_BACKEND_UNAVAILABLE'), []);

  // On a fresh connection the same close is an 'unavailable' error: no retry.
  const fresh = await rawBackend(t, (socket) => socket.destroy());
  const second = makePool(t, [fresh.spec]);
  await rejects(second.pool.request({ params, body: null }), 'unavailable', /closed before any response/);
  assert.equal(fresh.connections(), 1);
  assert.equal(second.pool.stats()[0]!.failures, 1);
  assert.equal(second.logged('LS_BACKEND_UNAVAILABLE').length, 1);
});

test('a streamed body too big to keep is not replayed: the request fails instead of sending half a body', async (t) => {
  const backend = await rawBackend(t, (socket, req) => {
    if (req.index === 0) ok(socket, req);
    else socket.destroy();
  });
  const { pool } = makePool(t, [backend.spec]);
  await text(pool);
  async function* body(): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < 5; i++) {
      await sleep(0);
      yield Buffer.alloc(100_000, i);
    }
  }
  await rejects(pool.request({ params, body: body() }), 'unavailable');
  assert.equal(backend.connections(), 1);
});

test('a backend answering before reading the whole body: the response is fine, the connection not reused', async (t) => {
  const backend = await rawBackend(t, (socket, req) => ok(socket, req), 'params');
  const { pool } = makePool(t, [backend.spec]);
  let pulled = 0;
  async function* endless(): AsyncGenerator<Uint8Array> {
    for (;;) {
      pulled++;
      yield Buffer.alloc(10_000);
      await sleep(5);
    }
  }
  const res = await pool.request({ params, body: endless() });
  assert.equal((await readBody(res, 100)).toString(), 'hello 0');
  await waitFor(() => backend.open() === 0, 3000, 'the connection to close');
  const was = pulled;
  await sleep(50);
  assert.equal(pulled, was, 'the body source was stopped');
  assert.equal(await text(pool), 'hello 0');
  assert.equal(backend.connections(), 2);
});

test('a request body that fails mid-stream aborts the request (499) and closes the connection', async (t) => {
  const backend = await rawBackend(t, ok);
  const { pool } = makePool(t, [backend.spec]);
  async function* failing(): AsyncGenerator<Uint8Array> {
    yield Buffer.from('a');
    await sleep(5);
    throw new Error('client went away');
  }
  await rejects(pool.request({ params, body: failing() }), 'aborted', /client went away/);
  await waitFor(() => backend.open() === 0, 3000, 'the connection to close');
  assert.equal(pool.stats()[0]!.failures, 0);
  // Bad input from the caller never throws synchronously.
  const throwing: Iterable<readonly [string, string]> = {
    [Symbol.iterator]() {
      throw new Error('bad params');
    },
  };
  await rejects(pool.request({ params: throwing, body: null }), 'protocol', /bad params/);
});

test('destroying the body early or readBody past maxBytes closes the connection instead of reusing it', async (t) => {
  const backend = await rawBackend(t, (socket) => {
    socket.write(record(T.STDOUT, 1, 'A: b\r\n\r\n' + 'z'.repeat(1000)));
    setTimeout(() => socket.write(Buffer.concat([record(T.STDOUT, 1, 'tail'), end()])), 30);
  });
  const { pool } = makePool(t, [backend.spec]);
  const res = await pool.request({ params, body: null });
  res.body.destroy();
  await waitFor(() => backend.open() === 0, 3000, 'the connection to close');
  await rejects(readBody(await pool.request({ params, body: null }), 100), 'protocol', /over 100 bytes/);
  await waitFor(() => backend.open() === 0, 3000, 'the connection to close');
  assert.equal((await readBody(await pool.request({ params, body: null }), 2000)).length, 1004);
  assert.equal(backend.connections(), 3);
  assert.equal(pool.stats()[0]!.failures, 0);
});

test('least load with round-robin ties; a full pool queues FIFO, and a queued request times out at 504', async (t) => {
  const held: Array<() => void> = [];
  const hold: Responder = (socket, req) => held.push(() => ok(socket, req));
  const a = await rawBackend(t, hold);
  const b = await rawBackend(t, hold);
  const { pool, logged } = makePool(t, [a.spec, b.spec], { maxConnections: 2, responseTimeoutMs: 2000 });
  const pending: Array<Promise<BackendResponse>> = [];
  for (let i = 0; i < 4; i++) pending.push(pool.request({ params, body: null }));
  await waitFor(() => held.length === 4, 3000, 'four requests at the backends');
  assert.deepEqual(
    pool.stats().map((s) => s.active),
    [2, 2],
  );
  // Both servers are full: the fifth waits in the queue and gets the first slot that frees.
  const fifth = pool.request({ params, body: null });
  await sleep(30);
  assert.equal(held.length, 4);
  held.shift()!();
  await waitFor(() => held.length === 4, 3000, 'the queued request to reach a backend');
  for (const release of held.splice(0)) release();
  for (const res of await Promise.all([...pending, fifth])) await readBody(res, 100);
  assert.equal(a.requests.length + b.requests.length, 5);
  assert.deepEqual(
    pool.stats().map((s) => s.connects),
    [2, 2],
  );

  const slow = makePool(t, [a.spec], { maxConnections: 1, responseTimeoutMs: 200 });
  const first = slow.pool.request({ params, body: null });
  const queued = slow.pool.request({ params, body: null });
  await rejects(queued, 'timeout', /no free connection within 200 ms/);
  await rejects(first, 'timeout');
  assert.equal(slow.logged('LS_BACKEND_TIMEOUT').length, 2);
  assert.equal(logged('LS_BACKEND_TIMEOUT').length, 0);
});

test('an abort while queued or connecting rejects with 499 and frees the slot', async (t) => {
  const held: Array<() => void> = [];
  const backend = await rawBackend(t, (socket, req) => held.push(() => ok(socket, req)));
  const { pool } = makePool(t, [backend.spec], { maxConnections: 1 });
  const first = pool.request({ params, body: null });
  const ac = new AbortController();
  const queued = pool.request({ params, body: null, cancel: cancelOf(ac.signal) });
  await waitFor(() => held.length === 1, 3000, 'the first request');
  ac.abort();
  await rejects(queued, 'aborted', /queued/);
  held.shift()!();
  await readBody(await first, 100);
  assert.equal(await (async () => {
    const p = text(pool);
    await waitFor(() => held.length === 1, 3000, 'the next request');
    held.shift()!();
    return p;
  })(), 'hello 1');
  assert.equal(pool.stats()[0]!.active, 0);
});

test('the server\'s own Request cancels a backend request: aborted mid-exchange, it rejects with 499 and closes that connection', async (t) => {
  // pass() hands the pool the request it serves (no AbortController per request): its abort
  // (the web server's ABORT_REQUEST, a closed connection) must reach the backend exchange.
  const backend = await rawBackend(t, () => {}); // takes the request, never answers
  const { pool } = makePool(t, [backend.spec]);
  const flow = { pauseFor() {}, resumeFor() {} };
  const served = new Request(1, 'RESPONDER', false, { id: 1, peer: undefined }, 1, flow);
  const asked = pool.request({ params, body: null, cancel: served });
  await waitFor(() => backend.requests.length === 1, 3000, 'the request at the backend');
  assert.equal(backend.open(), 1);
  served.abort(new Error('client went away'));
  await rejects(asked, 'aborted');
  await waitFor(() => backend.open() === 0, 3000, 'the backend connection closed');
  const before = new Request(2, 'RESPONDER', false, { id: 1, peer: undefined }, 2, flow);
  before.abort(new Error('gone already'));
  await rejects(pool.request({ params, body: null, cancel: before }), 'aborted');
  assert.equal(pool.stats()[0]!.active, 0);
});

test('failover between raw servers: refused connections disable a server once, logged with pool and server', async (t) => {
  const live = await rawBackend(t, ok);
  // A port that was just free: nothing listens there.
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const deadPort = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const dead = `127.0.0.1:${deadPort}`;
  const { pool, logged } = makePool(t, [dead, live.spec], { disableTimeMs: 60_000 });
  const replies = await Promise.all(Array.from({ length: 6 }, () => text(pool)));
  assert.equal(replies.length, 6);
  const [d, l] = pool.stats();
  assert.ok(d!.disabledUntil > Date.now());
  assert.ok(d!.failures >= 1);
  assert.equal(l!.requests, 6);
  assert.equal(logged('LS_BACKEND_DISABLED').length, 1);
  assert.match(logged('LS_BACKEND_DISABLED')[0]!, new RegExp(`pool=raw server=${dead.replace(/\./g, '\\.')}`));
  assert.match(logged('LS_BACKEND_DISABLED')[0]!, /ECONNREFUSED/);
});

test('close() leaves no socket or timer behind, even with a body nobody reads', async (t) => {
  const backend = await rawBackend(t, (socket) => socket.write(record(T.STDOUT, 1, 'A: b\r\n\r\nnever ends')));
  const idle = await rawBackend(t, ok);
  const count = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
    return out;
  };
  const before = count();
  const logs: string[] = [];
  const pool = new BackendPool(
    { ...defaultPoolOptions, name: 'raw', servers: [backend.spec, idle.spec] },
    new Logger('debug', (line) => logs.push(line)),
  );
  const res = await pool.request({ params, body: null });
  await text(pool);
  assert.equal(pool.stats()[1]!.idle, 1);
  await pool.close(100);
  assert.ok(res.body.destroyed, 'the unread body was destroyed after the grace');
  await waitFor(() => backend.open() === 0 && idle.open() === 0, 3000, 'the backends to see the close');
  await sleep(10);
  const after = count();
  for (const kind of ['TCPSocketWrap', 'TCPWrap', 'PipeWrap', 'Timeout', 'Immediate']) {
    assert.ok((after[kind] ?? 0) <= (before[kind] ?? 0), `${kind}: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
  }
});
