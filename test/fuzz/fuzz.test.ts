/**
 * Fuzzing, in the manner of undici's test/fuzzing: random and mutated record streams thrown at
 * the parser and at a live server. Seeded, so a CI failure can be replayed: FUZZ_SEED picks the
 * seed (default 20261122) and FUZZ_RUNS scales the run (default 300 parser cases, 150 server
 * cases; try FUZZ_RUNS=20000 for a long run).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import test from 'node:test';
import fc from 'fast-check';
import { RecordParser, encodeRecord } from '../../runtime/fastcgi/records.js';
import { FastcgiServer } from '../../runtime/fastcgi/server/server.js';
import { defaultLimits } from '../../runtime/fastcgi/server/limits.js';
import { diagnostic } from '../../runtime/handlers/diagnostic.js';
import { Logger } from '../../runtime/log.js';
import { RawClient, parseCgi, request } from '../helpers/fcgi-client.js';

const seed = Number(process.env.FUZZ_SEED ?? 20261122);
const runs = Number(process.env.FUZZ_RUNS ?? 300);

/** Cuts `bytes` at the given (sorted, clamped) offsets. */
function chop(bytes: Uint8Array, cuts: number[]): Buffer[] {
  const buf = Buffer.from(bytes);
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  out.push(buf.subarray(prev));
  return out;
}

const arbRecord = fc.record({
  type: fc.integer({ min: 0, max: 255 }),
  id: fc.integer({ min: 0, max: 65535 }),
  content: fc.uint8Array({ maxLength: 300 }),
});

test('parser: arbitrary bytes in arbitrary chunks never throw', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), fc.array(fc.nat(), { maxLength: 20 }), (bytes, cuts) => {
      const parser = new RecordParser(() => {});
      for (const chunk of chop(bytes, cuts)) parser.push(chunk);
    }),
    { seed, numRuns: runs },
  );
});

test('parser: any valid record stream decodes to the same records however it is chunked', () => {
  fc.assert(
    fc.property(fc.array(arbRecord, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 30 }), (records, cuts) => {
      const bytes = Buffer.concat(records.map((r) => encodeRecord(r.type, r.id, Buffer.from(r.content))));
      const got: Array<{ type: number; id: number; content: string }> = [];
      const parser = new RecordParser((type, id, buf, start, end) =>
        got.push({ type, id, content: buf.toString('hex', start, end) }),
      );
      for (const chunk of chop(bytes, cuts)) assert.equal(parser.push(chunk), null);
      assert.deepEqual(
        got,
        records.map((r) => ({ type: r.type, id: r.id, content: Buffer.from(r.content).toString('hex') })),
      );
    }),
    { seed, numRuns: runs },
  );
});

// Mutations of a valid request: the kind of damage a broken peer or an attacker produces.
const arbMutation = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 40 }) }),
  fc.record({ kind: fc.constant('repeat' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ kind: fc.constant('record' as const), at: fc.nat(), rec: arbRecord }),
);
type Mutation = typeof arbMutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(base: Buffer, mutations: Mutation[]): Buffer {
  let buf = Buffer.from(base);
  for (const m of mutations) {
    const at = m.at % (buf.length + 1);
    switch (m.kind) {
      case 'flip':
        if (buf.length > 0) buf[at % buf.length] = m.value;
        break;
      case 'truncate':
        buf = buf.subarray(0, at);
        break;
      case 'insert':
        buf = Buffer.concat([buf.subarray(0, at), Buffer.from(m.bytes), buf.subarray(at)]);
        break;
      case 'repeat':
        buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at, at + m.length), buf.subarray(at)]);
        break;
      case 'record':
        buf = Buffer.concat([buf.subarray(0, at), encodeRecord(m.rec.type, m.rec.id, Buffer.from(m.rec.content)), buf.subarray(at)]);
        break;
    }
  }
  return buf;
}

/** Sends bytes, half-closes, and waits until the server has closed the connection. */
function throwAt(port: number, bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.end(bytes));
    socket.on('data', () => {});
    socket.on('error', () => {});
    socket.on('close', () => resolve());
    socket.setTimeout(5000, () => socket.destroy());
  });
}

test('server: mutated request streams never take the server down', async (t) => {
  const errors: unknown[] = [];
  const onUncaught = (err: unknown): void => void errors.push(err);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  t.after(() => {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  });
  const lines: string[] = [];
  const server = new FastcgiServer({
    limits: { ...defaultLimits, idleTimeoutMs: 500, requestTimeoutMs: 1000, maxParamsBytes: 8192 },
    handler: diagnostic,
    log: new Logger('warn', (line) => lines.push(line)),
  });
  await server.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
  t.after(() => server.close(100));
  const port = (server.address() as net.AddressInfo).port;

  const bases = [
    request(1, { REQUEST_METHOD: 'GET', QUERY_STRING: '', SCRIPT_NAME: '/a.lua' }, { keepConn: true }),
    request(2, { REQUEST_METHOD: 'POST', CONTENT_LENGTH: '11', QUERY_STRING: 'echo' }, { body: 'hello world' }),
    request(3, { QUERY_STRING: 'hello' }, { role: 3, data: 'filter data', paramsChunk: 5 }),
    Buffer.concat([request(1, { QUERY_STRING: 'hello' }, { keepConn: true }), request(1, { QUERY_STRING: 'size=100' })]),
  ];
  const serverRuns = Math.max(20, Math.floor(runs / 2));
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: bases.length - 1 }),
      fc.array(arbMutation, { minLength: 1, maxLength: 4 }),
      async (which, mutations) => {
        await throwAt(port, mutate(bases[which]!, mutations));
      },
    ),
    { seed, numRuns: serverRuns },
  );

  assert.deepEqual(errors, []);
  // The cases really reached the server: every one connected, and some mutations still left a
  // request that ran while others were refused or broke the connection.
  assert.ok(server.stats.connectionsAccepted >= serverRuns, `accepted ${server.stats.connectionsAccepted}`);
  assert.ok(server.stats.requestsAccepted > 0);
  assert.ok(server.stats.protocolErrors > 0);
  // Still serving, correctly.
  const client = await RawClient.connect({ port });
  t.after(() => client.close());
  await client.write(request(9, { QUERY_STRING: 'echo' }, { body: 'still alive' }));
  const cgi = parseCgi((await client.reply(9)).stdout);
  assert.equal(cgi.status, 200);
  assert.equal(cgi.body.toString(), 'still alive');
  // No request may be left counted as in flight once every fuzz connection is gone.
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(server.activeRequests, 0);
});
