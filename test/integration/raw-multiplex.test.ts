/**
 * Concurrency on the FastCGI level: multiplexed requests on one connection, the limits the
 * server advertises with GET_VALUES (and that they are really enforced), ABORT_REQUEST, and a
 * web server that hangs up mid-request.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Handler } from '../../runtime/fastcgi/server/connection.js';
import { diagnostic } from '../../runtime/handlers/diagnostic.js';
import {
  ROLE,
  T,
  beginRequest,
  decodePairsForTest,
  pairs,
  parseCgi,
  record,
  request,
  type RawClient,
} from '../helpers/fcgi-client.js';
import { cgiParams, expectClosed, report, sleep, startServer } from '../helpers/raw-harness.js';
import { waitFor } from '../shared/poll.js';

/** The order in which END_REQUEST records arrived, by request id. */
const endOrder = (client: RawClient): number[] =>
  client.records.filter((r) => r.type === T.END_REQUEST).map((r) => r.id);

test('interleaved requests on one connection each get their own answer', async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  // Ids above 255 check both bytes of the 16-bit request id.
  const bodies = new Map<number, Buffer>([
    [1, Buffer.from('a'.repeat(3000))],
    [2, Buffer.from('second body, short')],
    [258, Buffer.from('b'.repeat(70_000))],
    [65535, Buffer.from('the last id')],
  ]);
  const streams = new Map<number, Buffer[]>();
  for (const [id, body] of bodies) {
    const p = pairs(cgiParams('echo', { REQUEST_METHOD: 'POST', REQUEST_ID_SEEN: String(id) }));
    const recs = [beginRequest(id, ROLE.RESPONDER, true)];
    for (let i = 0; i < p.length; i += 40) recs.push(record(T.PARAMS, id, p.subarray(i, i + 40)));
    recs.push(record(T.PARAMS, id));
    for (let i = 0; i < body.length; i += 1000) recs.push(record(T.STDIN, id, body.subarray(i, i + 1000)));
    recs.push(record(T.STDIN, id));
    streams.set(id, recs);
  }
  // Round-robin one record of each request at a time.
  const interleaved: Buffer[] = [];
  for (let i = 0; interleaved.length < [...streams.values()].reduce((n, s) => n + s.length, 0); i++) {
    for (const recs of streams.values()) if (i < recs.length) interleaved.push(recs[i]!);
  }
  await client.write(Buffer.concat(interleaved));
  for (const [id, body] of bodies) {
    const reply = await client.reply(id);
    assert.equal(reply.protocolStatus, 0);
    const cgi = parseCgi(reply.stdout);
    assert.equal(cgi.status, 200, `request ${id}`);
    assert.ok(cgi.body.equals(body), `request ${id} got its own body back`);
  }
  assert.equal(client.isClosed, false);
});

test('a BEGIN_REQUEST for an id already in flight is ignored', async (t) => {
  let calls = 0;
  const handler: Handler = (req, res) => {
    calls++;
    return diagnostic(req, res);
  };
  const h = await startServer(t, { handler });
  const client = await h.connect();
  await client.write(
    Buffer.concat([
      request(1, cgiParams('sleep=300&size=1'), { keepConn: true }),
      // The spec has the application ignore this, and so the records that follow it.
      request(1, cgiParams('size=5'), { keepConn: true }),
    ]),
  );
  const reply = await client.reply(1);
  assert.equal(parseCgi(reply.stdout).body.toString(), '0');
  await sleep(100);
  assert.equal(client.records.filter((r) => r.type === T.END_REQUEST).length, 1);
  assert.equal(calls, 1);
  // Once over, the id is free for a new request.
  const before = client.records.length;
  await client.write(request(1, cgiParams('size=5'), { keepConn: true }));
  await client.until(() => client.records.slice(before).some((r) => r.type === T.END_REQUEST));
  const stdout = client.records.slice(before).filter((r) => r.type === T.STDOUT);
  assert.equal(parseCgi(Buffer.concat(stdout.map((r) => r.content))).body.toString(), '01234');
});

test('multiplexed replies arrive in completion order, not request order', async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  await client.write(
    Buffer.concat([
      request(1, cgiParams('sleep=900'), { keepConn: true }),
      request(2, cgiParams('sleep=450'), { keepConn: true }),
      request(3, cgiParams(''), { keepConn: true }),
    ]),
  );
  await client.reply(1);
  await client.reply(2);
  const third = await client.reply(3);
  assert.deepEqual(endOrder(client), [3, 2, 1]);
  const r = report(parseCgi(third.stdout));
  assert.equal(r.requestId, 3);
  assert.equal(r.sequence, 3, 'third request begun on this connection');
});

async function getValues(client: RawClient): Promise<Record<string, string>> {
  const names = { FCGI_MAX_CONNS: '', FCGI_MAX_REQS: '', FCGI_MPXS_CONNS: '', LODESTONE_NO_SUCH_VAR: '' };
  const before = client.records.length;
  await client.write(record(T.GET_VALUES, 0, pairs(names)));
  const answered = (): boolean => client.records.slice(before).some((r) => r.type === T.GET_VALUES_RESULT);
  await client.until(answered, 3000, 'GET_VALUES_RESULT');
  const result = client.records.slice(before).find((r) => r.type === T.GET_VALUES_RESULT)!;
  assert.equal(result.id, 0);
  return decodePairsForTest(result.content);
}

test('GET_VALUES reports the configured limits and omits unknown names', async (t) => {
  const mpx = await startServer(t, { limits: { maxConnections: 7, maxRequests: 13, maxRequestsPerConnection: 5 } });
  const client = await mpx.connect();
  assert.deepEqual(await getValues(client), { FCGI_MAX_CONNS: '7', FCGI_MAX_REQS: '13', FCGI_MPXS_CONNS: '1' });
  // A management record does not disturb the connection: a request follows on it.
  await client.write(request(1, cgiParams('hello')));
  assert.equal(parseCgi((await client.reply(1)).stdout).body.toString(), '123');

  const single = await startServer(t, { limits: { maxRequestsPerConnection: 1 } });
  assert.deepEqual(await getValues(await single.connect()), {
    FCGI_MAX_CONNS: '1024',
    FCGI_MAX_REQS: '1024',
    FCGI_MPXS_CONNS: '0',
  });
});

test('maxRequestsPerConnection=2: a third concurrent request is refused with FCGI_OVERLOADED', async (t) => {
  const h = await startServer(t, { limits: { maxRequestsPerConnection: 2 } });
  const client = await h.connect();
  await client.write(
    Buffer.concat([
      request(1, cgiParams('sleep=400&size=1'), { keepConn: true }),
      request(2, cgiParams('sleep=400&size=2'), { keepConn: true }),
      request(3, cgiParams('size=3'), { keepConn: true }),
    ]),
  );
  const third = await client.reply(3);
  assert.equal(third.protocolStatus, 2, 'FCGI_OVERLOADED');
  assert.equal(third.stdout.length, 0);
  assert.equal(parseCgi((await client.reply(1)).stdout).body.toString(), '0');
  assert.equal(parseCgi((await client.reply(2)).stdout).body.toString(), '01');
  assert.ok(h.logged('LS_OVERLOADED').length >= 1);
  // With the two done, the slot is free again.
  await client.write(request(4, cgiParams('size=4'), { keepConn: true }));
  assert.equal(parseCgi((await client.reply(4)).stdout).body.toString(), '0123');
});

test('maxRequestsPerConnection=1: a second concurrent request gets FCGI_CANT_MPX_CONN', async (t) => {
  const h = await startServer(t, { limits: { maxRequestsPerConnection: 1 } });
  const client = await h.connect();
  await client.write(
    Buffer.concat([
      request(1, cgiParams('sleep=300&size=1'), { keepConn: true }),
      request(2, cgiParams('size=2'), { keepConn: true }),
    ]),
  );
  const second = await client.reply(2);
  assert.equal(second.protocolStatus, 1, 'FCGI_CANT_MPX_CONN');
  assert.equal(second.stdout.length, 0);
  const first = await client.reply(1);
  assert.equal(first.protocolStatus, 0);
  assert.equal(parseCgi(first.stdout).body.toString(), '0');
});

test('a refused request without KEEP_CONN does not cut off the requests already in flight', async (t) => {
  // A web server that multiplexes without asking FCGI_MPXS_CONNS may send the second request
  // without KEEP_CONN. The refusal may close the connection, but only after request 1, which
  // the server accepted, has been answered.
  const h = await startServer(t, { limits: { maxRequestsPerConnection: 1 } });
  const client = await h.connect();
  await client.write(
    Buffer.concat([
      request(1, cgiParams('sleep=300&size=1'), { keepConn: true }),
      request(2, cgiParams('size=2'), { keepConn: false }),
    ]),
  );
  const second = await client.reply(2);
  assert.equal(second.protocolStatus, 1, 'FCGI_CANT_MPX_CONN');
  const first = await client.reply(1);
  assert.equal(first.protocolStatus, 0);
  assert.equal(parseCgi(first.stdout).body.toString(), '0');
});

test('maxRequests is enforced across connections with FCGI_OVERLOADED', async (t) => {
  const h = await startServer(t, { limits: { maxRequests: 2 } });
  const a = await h.connect();
  const b = await h.connect();
  // Held long enough that on a loaded machine they are still in flight when the others arrive.
  await a.write(request(1, cgiParams('sleep=1500&size=1'), { keepConn: true }));
  await b.write(request(1, cgiParams('sleep=1500&size=2'), { keepConn: true }));
  await waitFor(() => h.server.activeRequests === 2, 3000, 'two requests in flight');
  // A third on connection a (multiplexed) and a fourth on a new connection: both over the limit.
  await a.write(request(2, cgiParams('size=3'), { keepConn: true }));
  const c = await h.connect();
  await c.write(request(1, cgiParams('size=4')));
  assert.equal((await a.reply(2)).protocolStatus, 2, 'FCGI_OVERLOADED on a');
  const refused = await c.reply(1);
  assert.equal(refused.protocolStatus, 2, 'FCGI_OVERLOADED on c');
  assert.equal(refused.stdout.length, 0);
  await expectClosed(c, 5000, 'refused request without KEEP_CONN to close its connection');
  assert.equal(parseCgi((await a.reply(1)).stdout).body.toString(), '0');
  assert.equal(parseCgi((await b.reply(1)).stdout).body.toString(), '01');
  await waitFor(() => h.server.activeRequests === 0, 3000, 'no request in flight');
  await h.assertAlive();
});

test('maxConnections=2: a third connection is closed by the server, the others are served', async (t) => {
  const h = await startServer(t, { limits: { maxConnections: 2 } });
  const a = await h.connect();
  const b = await h.connect();
  await a.write(request(1, cgiParams('sleep=1500&size=1')));
  await b.write(request(1, cgiParams('sleep=1500&size=2')));
  await waitFor(() => h.server.activeRequests === 2, 3000, 'two requests in flight');
  const c = await h.connect();
  await c.write(request(1, cgiParams('size=3')));
  await expectClosed(c, 5000, 'the third connection to be dropped');
  assert.equal(c.records.length, 0, 'nothing sent on the dropped connection');
  assert.equal(h.logged('LS_CONNECTION_LIMIT').length, 1);
  assert.equal(parseCgi((await a.reply(1)).stdout).body.toString(), '0');
  assert.equal(parseCgi((await b.reply(1)).stdout).body.toString(), '01');
  await expectClosed(a);
  await expectClosed(b);
  await waitFor(() => h.server.openConnections === 0, 3000, 'connections to be released');
  await h.assertAlive();
});

test('ABORT_REQUEST ends a sleeping request at once and aborts its signal; the connection stays usable', async (t) => {
  const signals: AbortSignal[] = [];
  const handler: Handler = (req, res) => {
    signals.push(req.signal);
    return diagnostic(req, res);
  };
  const h = await startServer(t, { handler });
  const client = await h.connect();
  await client.write(request(1, cgiParams('sleep=10000&size=10'), { keepConn: true }));
  await waitFor(() => signals.length === 1, 3000, 'handler to start');
  const sentAt = Date.now();
  await client.write(record(T.ABORT_REQUEST, 1));
  const reply = await client.reply(1, 3000);
  // Generous: the request would otherwise run 10 s.
  assert.ok(Date.now() - sentAt < 3000);
  assert.equal(reply.protocolStatus, 0, 'FCGI_REQUEST_COMPLETE');
  assert.equal(reply.stdout.length, 0, 'no output for the aborted request');
  assert.equal(signals[0]!.aborted, true);
  assert.equal((signals[0]!.reason as { code?: string }).code, 'LS_REQUEST_ABORTED');
  assert.equal(h.server.activeRequests, 0);

  await client.write(request(2, cgiParams('hello'), { keepConn: true }));
  assert.equal(parseCgi((await client.reply(2)).stdout).body.toString(), '123');
  assert.equal(signals[1]!.aborted, false);
  // An ABORT_REQUEST for a request that is not in flight is ignored.
  await client.write(record(T.ABORT_REQUEST, 7));
  await client.write(request(3, cgiParams('hello'), { keepConn: true }));
  assert.equal(parseCgi((await client.reply(3)).stdout).body.toString(), '123');
  assert.equal(client.records.filter((r) => r.id === 7).length, 0);
});

test('ABORT_REQUEST of one multiplexed request leaves the others alone', async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  await client.write(
    Buffer.concat([
      request(1, cgiParams('sleep=10000&size=1'), { keepConn: true }),
      request(2, cgiParams('sleep=300&size=2'), { keepConn: true }),
    ]),
  );
  await waitFor(() => h.server.activeRequests === 2, 3000, 'two requests in flight');
  await client.write(record(T.ABORT_REQUEST, 1));
  assert.equal((await client.reply(1, 3000)).stdout.length, 0);
  assert.equal(parseCgi((await client.reply(2)).stdout).body.toString(), '01');
});

test('a closed socket aborts the requests in flight on it', async (t) => {
  const reasons: unknown[] = [];
  let started = 0;
  const handler: Handler = async (req, res) => {
    if (req.params.QUERY_STRING === 'hello') return diagnostic(req, res);
    started++;
    await new Promise<void>((resolve) => req.signal.addEventListener('abort', () => resolve(), { once: true }));
    reasons.push(req.signal.reason);
    res.end('too late');
  };
  const h = await startServer(t, { handler });
  const client = await h.connect();
  await client.write(
    Buffer.concat([request(1, cgiParams(''), { keepConn: true }), request(2, cgiParams(''), { keepConn: true })]),
  );
  await waitFor(() => started === 2, 3000, 'both handlers to start');
  client.close();
  await waitFor(() => reasons.length === 2, 3000, 'both signals to fire');
  assert.ok(reasons.every((r) => (r as { code?: string }).code === 'LS_REQUEST_ABORTED'));
  await waitFor(() => h.server.activeRequests === 0 && h.server.openConnections === 0, 3000, 'bookkeeping to settle');
  assert.equal(h.server.stats.requestsAborted, 2);
  assert.equal(h.logged('LS_REQUEST_ABORTED').length, 2);
  await h.assertAlive();
});
