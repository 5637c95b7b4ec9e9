/**
 * FastCGI 1.0 conformance of the in-process server, spoken to byte by byte with the independent
 * RawClient: record framing and padding, PARAMS split anywhere, FCGI_KEEP_CONN, the three roles,
 * unknown types and roles, and how responses are framed (STDOUT/STDERR streams, END_REQUEST).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import type { Handler } from '../../runtime/fastcgi/server/connection.js';
import { diagnostic } from '../../runtime/handlers/diagnostic.js';
import {
  ROLE,
  T,
  beginRequest,
  pairs,
  parseCgi,
  record,
  recordPadded,
  request,
  stream,
} from '../helpers/fcgi-client.js';
import {
  assertAligned,
  assertStreamsClosed,
  cgiParams,
  expectClosed,
  report,
  sleep,
  startServer,
} from '../helpers/raw-harness.js';
import { sha256 } from '../helpers/diagnostic.js';

test('RESPONDER round trip: params and body reach the handler, the reply is a complete CGI response', async (t) => {
  const h = await startServer(t);
  const body = Buffer.from('name=lodestone&answer=42');
  const params = cgiParams('', {
    REQUEST_METHOD: 'POST',
    CONTENT_LENGTH: String(body.length),
    HTTP_HOST: 'example.test',
  });
  const { reply, cgi, client } = await h.get(params, { body });

  assert.equal(reply.protocolStatus, 0, 'FCGI_REQUEST_COMPLETE');
  assert.equal(reply.appStatus, 0);
  assert.equal(reply.stderr, '');
  assert.equal(cgi.status, 200);
  assert.equal(cgi.headers.status, '200 OK');
  const r = report(cgi);
  assert.equal(r.role, 'RESPONDER');
  assert.equal(r.requestId, 1);
  assert.equal(r.keepConn, false);
  assert.equal(r.sequence, 1);
  assert.deepEqual(r.params, params);
  assert.equal(r.stdinBytes, body.length);
  assert.equal(r.stdinSha256, sha256(body));
  assertStreamsClosed(reply);
  // The END_REQUEST body: appStatus (4 bytes), protocolStatus, 3 reserved zero bytes.
  const end = reply.records.at(-1)!;
  assert.deepEqual([...end.content], [0, 0, 0, 0, 0, 0, 0, 0]);
  assertAligned(client.records);
});

test('padding on input is skipped, whatever its length and content', async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  // Padding made of bytes that parse as a valid STDIN record: a server that read padding as
  // records would put "EVIL" into the body.
  const evil = record(T.STDIN, 1, 'EVIL');
  const pad = (n: number): Buffer =>
    Buffer.concat(Array.from({ length: Math.ceil(n / evil.length) }, () => evil)).subarray(0, n);
  const p = pairs(cgiParams('echo', { ODD_NAME: 'odd-value' }));
  const begin = beginRequest(1).subarray(8, 16);
  await client.write(
    Buffer.concat([
      recordPadded(T.BEGIN_REQUEST, 1, begin, pad(255)),
      recordPadded(T.PARAMS, 1, p.subarray(0, 5), pad(0)),
      recordPadded(T.PARAMS, 1, p.subarray(5, 12), pad(255)),
      recordPadded(T.PARAMS, 1, p.subarray(12, 31), pad(1)),
      recordPadded(T.PARAMS, 1, p.subarray(31), pad(3)),
      recordPadded(T.PARAMS, 1, Buffer.alloc(0), pad(255)),
      recordPadded(T.STDIN, 1, 'hello', pad(0)),
      recordPadded(T.STDIN, 1, ', padded', pad(255)),
      recordPadded(T.STDIN, 1, ' world', pad(7)),
      recordPadded(T.STDIN, 1, Buffer.alloc(0), pad(17)),
    ]),
  );
  const reply = await client.reply(1);
  const cgi = parseCgi(reply.stdout);
  assert.equal(cgi.status, 200);
  assert.equal(cgi.body.toString(), 'hello, padded world');
});

test('PARAMS split across records at awkward points decode the same', async (t) => {
  const h = await startServer(t);

  await t.test('one byte per PARAMS record', async () => {
    const params = cgiParams('', { HTTP_COOKIE: 'a=1; b=2', EMPTY_VALUE: '' });
    const { cgi } = await h.get(params, { paramsChunk: 1 });
    assert.deepEqual(report(cgi).params, params);
  });

  await t.test('4-byte name and value lengths split between records', async () => {
    const longName = 'HTTP_X_' + 'N'.repeat(200);
    const longValue = 'v'.repeat(300);
    const list: Array<[string, string]> = [
      ['QUERY_STRING', ''],
      ['LONG', longValue],
      [longName, 'short'],
    ];
    const p = pairs(list);
    // Offsets of the 4-byte lengths, so the splits land inside them.
    const valueLenAt = 2 + 'QUERY_STRING'.length + 1; // after QUERY_STRING pair and LONG's 1-byte name length
    assert.equal(p[valueLenAt], 0x80, 'value length of LONG is 4 bytes');
    const nameLenAt = valueLenAt + 4 + 4 + 300;
    assert.equal(p[nameLenAt], 0x80, 'name length of the long name is 4 bytes');
    const cuts = [0, valueLenAt + 1, valueLenAt + 3, nameLenAt + 2, nameLenAt + 4, nameLenAt + 5, p.length];
    const client = await h.connect();
    const parts = [beginRequest(1)];
    for (let i = 1; i < cuts.length; i++) parts.push(record(T.PARAMS, 1, p.subarray(cuts[i - 1], cuts[i])));
    parts.push(record(T.PARAMS, 1), record(T.STDIN, 1));
    await client.write(Buffer.concat(parts));
    const r = report(parseCgi((await client.reply(1)).stdout));
    assert.deepEqual(r.params, Object.fromEntries(list));
  });

  await t.test('a 100 000-byte value spanning two full records', async () => {
    const big = randomBytes(50_000).toString('hex');
    const params = cgiParams('', { HTTP_X_BIG: big });
    const client = await h.connect();
    // 65535-byte records (odd, so padded by 1): the value crosses the record boundary.
    const p = stream(T.PARAMS, 1, pairs(params), 65535);
    await client.write(Buffer.concat([beginRequest(1), p, stream(T.STDIN, 1, '')]));
    const reply = await client.reply(1);
    const r = report(parseCgi(reply.stdout));
    assert.equal(r.params.HTTP_X_BIG, big);
  });
});

test('an empty PARAMS stream is a request with no params', async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  await client.write(Buffer.concat([beginRequest(1), record(T.PARAMS, 1), record(T.STDIN, 1)]));
  const reply = await client.reply(1);
  assert.equal(reply.protocolStatus, 0);
  assert.deepEqual(report(parseCgi(reply.stdout)).params, {});
});

test('a second empty PARAMS record after the end is ignored', async (t) => {
  // Counting calls: a server that took the second empty record as another end of PARAMS would
  // run the handler twice for one request.
  let calls = 0;
  const handler: Handler = (req, res) => {
    calls++;
    return diagnostic(req, res);
  };
  const h = await startServer(t, { handler });
  const client = await h.connect();
  const p = stream(T.PARAMS, 1, pairs(cgiParams('', { FIRST: '1' })));
  await client.write(
    Buffer.concat([
      beginRequest(1, ROLE.RESPONDER, true),
      p,
      record(T.PARAMS, 1),
      // A non-empty stray PARAMS after the end must not be merged into the params either.
      record(T.PARAMS, 1, pairs({ LATE: 'x' })),
      stream(T.STDIN, 1, 'body'),
    ]),
  );
  const reply = await client.reply(1);
  const r = report(parseCgi(reply.stdout));
  assert.deepEqual(r.params, cgiParams('', { FIRST: '1' }));
  assert.equal(r.stdinBytes, 4);
  assert.equal(calls, 1, 'handler ran once');
  // The connection is still in a good state: a next request on it is answered.
  await client.write(request(2, cgiParams('hello'), { keepConn: true }));
  assert.equal(parseCgi((await client.reply(2)).stdout).body.toString(), '123');
  assert.equal(calls, 2);
});

test('without FCGI_KEEP_CONN the server closes the connection after END_REQUEST', async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  await client.write(request(1, cgiParams('hello')));
  const reply = await client.reply(1);
  assert.equal(parseCgi(reply.stdout).body.toString(), '123');
  await expectClosed(client, 2000);
  assert.equal(client.records.at(-1)!.type, T.END_REQUEST, 'nothing after END_REQUEST');
});

test('with FCGI_KEEP_CONN sequential requests share one connection, which stays open', async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  const seen: Array<{ connection: number; sequence: number; keepConn: boolean }> = [];
  for (let i = 1; i <= 4; i++) {
    // Request ids may be reused once a request is over; alternate to check both.
    const id = i % 2 === 0 ? 2 : 1;
    const before = client.records.length;
    await client.write(request(id, cgiParams('', { N: String(i) }), { keepConn: true }));
    await client.until(() => client.records.slice(before).some((r) => r.type === T.END_REQUEST), 5000, `reply ${i}`);
    const mine = client.records.slice(before);
    const stdout = Buffer.concat(mine.filter((r) => r.type === T.STDOUT).map((r) => r.content));
    const r = report(parseCgi(stdout));
    assert.equal(r.params.N, String(i));
    seen.push({ connection: r.connection, sequence: r.sequence, keepConn: r.keepConn });
  }
  assert.deepEqual(
    seen.map((s) => s.sequence),
    [1, 2, 3, 4],
  );
  assert.equal(new Set(seen.map((s) => s.connection)).size, 1, 'all on the same connection');
  assert.ok(seen.every((s) => s.keepConn));
  await sleep(200);
  assert.equal(client.isClosed, false, 'kept connection still open');
  assert.equal(h.server.openConnections, 1);
});

test('every record the server sends is 8-byte aligned and fits its length field', async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  const queries = [
    'hello',
    'size=1',
    'size=7',
    'size=65529',
    'size=300001',
    'stderr=abc',
    'status=404',
    'flush&size=13',
    '',
  ];
  for (const [i, q] of queries.entries()) {
    await client.write(request(i + 1, cgiParams(q), { keepConn: true, body: 'x'.repeat(i) }));
    await client.reply(i + 1);
  }
  await client.write(record(T.GET_VALUES, 0, pairs({ FCGI_MPXS_CONNS: '' })));
  await client.write(record(99, 0, 'abc'));
  await client.until(() => client.records.some((r) => r.type === T.UNKNOWN_TYPE));
  assert.ok(client.records.some((r) => r.type === T.GET_VALUES_RESULT));
  assertAligned(client.records);
  // STDOUT records of the big body use (almost) the whole 16-bit length, still aligned.
  assert.ok(client.records.some((r) => r.type === T.STDOUT && r.content.length > 60_000));
});

test('an unknown management record type gets UNKNOWN_TYPE; the connection stays usable', async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  await client.write(record(99, 0, 'whatever'));
  await client.until(() => client.records.length > 0);
  const [rec] = client.records;
  assert.equal(rec!.type, T.UNKNOWN_TYPE);
  assert.equal(rec!.id, 0);
  // FCGI_UnknownTypeBody: type, then 7 reserved bytes.
  assert.deepEqual([...rec!.content], [99, 0, 0, 0, 0, 0, 0, 0]);
  await client.write(request(1, cgiParams('hello')));
  const reply = await client.reply(1);
  assert.equal(parseCgi(reply.stdout).body.toString(), '123');
});

test('an unknown role gets END_REQUEST with FCGI_UNKNOWN_ROLE', async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  const p = stream(T.PARAMS, 1, pairs(cgiParams('hello')));
  await client.write(Buffer.concat([beginRequest(1, 7, true), p, record(T.STDIN, 1)]));
  const reply = await client.reply(1);
  assert.equal(reply.protocolStatus, 3, 'FCGI_UNKNOWN_ROLE');
  assert.equal(reply.stdout.length, 0, 'no output for a refused request');
  assert.equal(h.logged('LS_UNKNOWN_ROLE').length, 1);
  // With KEEP_CONN the connection outlives the refusal.
  await client.write(request(2, cgiParams('hello'), { keepConn: true }));
  assert.equal(parseCgi((await client.reply(2)).stdout).body.toString(), '123');
});

test('AUTHORIZER: 200 with a Variable- header, 403 when denied', async (t) => {
  const h = await startServer(t);
  const ok = await h.get(cgiParams(''), { role: ROLE.AUTHORIZER });
  assert.equal(ok.reply.protocolStatus, 0);
  assert.equal(ok.cgi.status, 200);
  assert.equal(ok.cgi.headers['variable-lodestone_user'], 'diagnostic');
  assert.equal(ok.cgi.body.length, 0);

  const denied = await h.get(cgiParams('', { HTTP_X_LODESTONE_DENY: '1' }), { role: ROLE.AUTHORIZER });
  assert.equal(denied.cgi.status, 403);
  assert.equal(denied.cgi.headers['variable-lodestone_user'], undefined);
  assert.equal(denied.cgi.body.toString(), 'denied\n');
});

test('FILTER: the DATA stream comes back verbatim, with the byte counts in headers', async (t) => {
  const h = await startServer(t);
  const data = randomBytes(5000);
  const params = cgiParams('', { FCGI_DATA_LENGTH: String(data.length), FCGI_DATA_LAST_MOD: '0' });
  const { reply, cgi } = await h.get(params, { role: ROLE.FILTER, body: 'ten bytes!', data });
  assert.equal(reply.protocolStatus, 0);
  assert.equal(cgi.status, 200);
  assert.equal(cgi.headers['x-data-bytes'], '5000');
  assert.equal(cgi.headers['x-stdin-bytes'], '10');
  assert.ok(cgi.body.equals(data), 'body is the DATA stream');
});

test('a large body arrives intact across several STDOUT records', async (t) => {
  const h = await startServer(t);
  const { reply, cgi, client } = await h.get(cgiParams('size=300000'));
  assert.equal(cgi.status, 200);
  assert.equal(cgi.body.length, 300_000);
  const expected = Buffer.alloc(300_000);
  for (let i = 0; i < expected.length; i++) expected[i] = 48 + (i % 10);
  assert.ok(cgi.body.equals(expected), 'body is "0123456789" repeated');
  const stdout = reply.records.filter((r) => r.type === T.STDOUT && r.content.length > 0);
  assert.ok(stdout.length >= 5, `300 000 bytes need at least 5 records, got ${stdout.length}`);
  assertStreamsClosed(reply);
  assertAligned(client.records);
});

test('a handler that throws gets a 500 and LS_HANDLER_FAILED in the log', async (t) => {
  const h = await startServer(t);
  const { reply, cgi } = await h.get(cgiParams('throw'));
  assert.equal(reply.protocolStatus, 0);
  assert.equal(cgi.status, 500);
  assert.equal(cgi.body.toString(), '500 Internal Server Error\n');
  const line = h.logged('LS_HANDLER_FAILED')[0];
  assert.ok(line, 'LS_HANDLER_FAILED logged');
  assert.match(line, /^\S+ error LS_HANDLER_FAILED diagnostic responder asked to throw /);
  assert.match(line, / script=\/srv\/diag/);
});

test('a synchronous throw and a bad status set by the handler also become 500s', async (t) => {
  const handler: Handler = (req, res) => {
    if (req.params.QUERY_STRING === 'sync') throw new Error('sync boom');
    res.status = 42; // invalid: ending the response throws
  };
  const h = await startServer(t, { handler });
  const sync = await h.get(cgiParams('sync'));
  assert.equal(sync.cgi.status, 500);
  const bad = await h.get(cgiParams('bad-status'));
  assert.equal(bad.cgi.status, 500);
  assert.equal(h.logged('LS_HANDLER_FAILED').length, 2);
});

test('stderr text arrives in STDERR records, closed by an empty one', async (t) => {
  const h = await startServer(t);
  const { reply, cgi } = await h.get(cgiParams('stderr=something%20went%20wrong&size=3'));
  assert.equal(cgi.body.toString(), '012');
  assert.equal(reply.stderr, 'something went wrong\n');
  const stderr = reply.records.filter((r) => r.type === T.STDERR);
  assert.ok(stderr.length >= 2);
  assert.equal(stderr.at(-1)!.content.length, 0, 'STDERR stream closed by an empty record');
  const endAt = reply.records.findIndex((r) => r.type === T.END_REQUEST);
  assert.ok(reply.records.indexOf(stderr.at(-1)!) < endAt, 'STDERR closed before END_REQUEST');
});

test('flush streams the headers before the handler produces the body', async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  await client.write(request(1, cgiParams('flush&sleep=500&size=5')));
  await client.until(() => client.records.some((r) => r.type === T.STDOUT), 5000, 'first STDOUT');
  const first = client.records.find((r) => r.type === T.STDOUT)!;
  // The first record is the header block alone; the body is still being "computed".
  assert.equal(first.content.toString(), 'Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n');
  assert.equal(client.records.some((r) => r.type === T.END_REQUEST), false, 'not finished yet');
  const reply = await client.reply(1);
  assert.equal(parseCgi(reply.stdout).body.toString(), '01234');
  const end = reply.records.at(-1)!;
  // Loose: the sleep is 500 ms; anything above 250 ms proves the headers did not wait for it.
  assert.ok(end.at! - first.at! >= 250, `headers arrived only ${end.at! - first.at!} ms before the end`);
});

test('a unix socket serves the same protocol', async (t) => {
  const h = await startServer(t, { unix: true });
  const { reply, cgi } = await h.get(cgiParams('echo', { REQUEST_METHOD: 'POST' }), { body: 'over a unix socket' });
  assert.equal(reply.protocolStatus, 0);
  assert.equal(cgi.body.toString(), 'over a unix socket');
});
