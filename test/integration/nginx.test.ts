/**
 * nginx -> Lodestone through the real nginx: the params nginx sends, request bodies nginx
 * buffers to disk, status and headers, a large response, FCGI_STDERR in nginx's error log, over
 * TCP and a unix socket; and upstream keep-alive, with a control run that shows the keep-alive
 * assertions can fail.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { complaints, startLodestone, tempDir, type Lodestone } from '../helpers/lodestone.js';
import { havePrograms, httpRequest, startNginx, type WebServer } from '../helpers/peers.js';
import { parseReport, pattern, sha256, type Report } from '../helpers/diagnostic.js';

/** A hung peer fails its test instead of the whole run. */
const timeout = 60_000;



/** The round trips both transports must pass, as subtests sharing one nginx and one Lodestone. */
async function roundTrips(t: TestContext, nginx: WebServer, lodestone: Lodestone, tag: string): Promise<void> {
  await t.test('GET: params as nginx sent them', async () => {
    const reply = await httpRequest(nginx.url('/app/index.lua?a=1&b=two%20words'), {
      headers: { 'X-Lodestone-Probe': `probe-${tag}` },
    });
    assert.equal(reply.status, 200, reply.body.toString());
    assert.equal(reply.headers['content-type'], 'application/json');
    const report = parseReport(reply.body);
    const p = report.params;
    assert.equal(report.role, 'RESPONDER');
    assert.equal(p.REQUEST_METHOD, 'GET');
    assert.equal(p.QUERY_STRING, 'a=1&b=two%20words');
    assert.equal(p.REQUEST_URI, '/app/index.lua?a=1&b=two%20words');
    assert.equal(p.SCRIPT_NAME, '/app/index.lua');
    assert.equal(p.DOCUMENT_URI, '/app/index.lua');
    assert.equal(p.DOCUMENT_ROOT, nginx.docRoot);
    assert.equal(p.SCRIPT_FILENAME, path.join(nginx.docRoot, 'app/index.lua'));
    assert.equal(p.GATEWAY_INTERFACE, 'CGI/1.1');
    assert.match(p.SERVER_SOFTWARE ?? '', /^nginx\/1\.\d+\.\d+$/);
    assert.equal(p.SERVER_PROTOCOL, 'HTTP/1.1');
    assert.equal(p.SERVER_ADDR, '127.0.0.1');
    assert.equal(p.SERVER_PORT, String(nginx.port));
    assert.equal(p.REMOTE_ADDR, '127.0.0.1');
    assert.equal(p.REQUEST_SCHEME, 'http');
    // Debian's fastcgi_params sets HTTP_HOST to $host (no port); stock nginx passes the header.
    assert.match(p.HTTP_HOST ?? '', new RegExp(`^127\\.0\\.0\\.1(:${nginx.port})?$`));
    assert.equal(p.HTTP_X_LODESTONE_PROBE, `probe-${tag}`);
    assert.equal(p.CONTENT_LENGTH, '');
    assert.equal(report.stdinBytes, 0);
    assert.equal(report.keepConn, false);
  });

  await t.test('POST 1 MiB: the body arrives intact (SHA-256)', async () => {
    const body = randomBytes(1024 * 1024);
    const reply = await httpRequest(nginx.url('/upload'), {
      method: 'POST',
      headers: { 'Content-Type': 'application/octet-stream' },
      body,
    });
    assert.equal(reply.status, 200, reply.body.toString());
    const report = parseReport(reply.body);
    assert.equal(report.params.REQUEST_METHOD, 'POST');
    assert.equal(report.params.CONTENT_LENGTH, String(body.length));
    assert.equal(report.params.CONTENT_TYPE, 'application/octet-stream');
    assert.equal(report.stdinBytes, body.length);
    assert.equal(report.stdinSha256, sha256(body));
  });

  await t.test('POST ?echo: 1 MiB comes back byte for byte', async () => {
    const body = randomBytes(1024 * 1024);
    const reply = await httpRequest(nginx.url('/echo?echo'), { method: 'POST', body });
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['content-type'], 'application/octet-stream');
    assert.equal(reply.body.length, body.length);
    assert.ok(reply.body.equals(body), 'echoed body differs');
  });

  await t.test('status and header pass through', async () => {
    const query = 'status=404&header=X-Test:yes&header=X-Other:two%20words';
    const reply = await httpRequest(nginx.url(`/missing?${query}`));
    assert.equal(reply.status, 404);
    assert.equal(reply.headers['x-test'], 'yes');
    assert.equal(reply.headers['x-other'], 'two words');
    assert.equal(parseReport(reply.body).params.QUERY_STRING, query);
  });

  await t.test('?size=300000: exactly 300000 bytes of the pattern', async () => {
    const reply = await httpRequest(nginx.url('/big?size=300000'));
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['content-type'], 'text/plain');
    assert.equal(reply.body.length, 300_000);
    assert.ok(reply.body.equals(pattern(300_000)), 'body is not "0123456789" repeated');
  });

  await t.test('FCGI_STDERR lands in nginx error.log', async () => {
    const token = `hello-from-app-${tag}-${randomBytes(4).toString('hex')}`;
    const reply = await httpRequest(nginx.url(`/log?stderr=${token}`));
    assert.equal(reply.status, 200);
    const line = await nginx.waitForErrorLog(new RegExp(token));
    assert.match(line, /FastCGI sent in stderr/);
  });

  assert.deepEqual(complaints(lodestone.log()), []);
}

test('nginx -> lodestone over TCP', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const lodestone = await startLodestone(t);
  const nginx = await startNginx(t, { fastcgiPass: `127.0.0.1:${lodestone.port}` });
  await roundTrips(t, nginx, lodestone, 'tcp');
});

test('nginx -> lodestone over a unix socket', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const dir = tempDir(t);
  const lodestone = await startLodestone(t, { listen: `unix:${path.join(dir, 'ls.sock')}` });
  assert.equal(lodestone.socketPath, path.join(dir, 'ls.sock'));
  const nginx = await startNginx(t, { fastcgiPass: `unix:${lodestone.socketPath}` });
  await roundTrips(t, nginx, lodestone, 'unix');
});

const REQUESTS = 50;

/** Sends REQUESTS sequential GETs through nginx; returns the reports in order. */
async function sequentialReports(nginx: WebServer): Promise<Report[]> {
  const reports: Report[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    const reply = await httpRequest(nginx.url(`/ka?n=${i}`));
    assert.equal(reply.status, 200, reply.body.toString());
    const report = parseReport(reply.body);
    assert.equal(report.params.QUERY_STRING, `n=${i}`);
    reports.push(report);
  }
  return reports;
}

/** Sequence numbers per connection id, in arrival order. */
function sequencesByConnection(reports: Report[]): Map<number, number[]> {
  const byConn = new Map<number, number[]>();
  for (const r of reports) {
    const list = byConn.get(r.connection) ?? [];
    list.push(r.sequence);
    byConn.set(r.connection, list);
  }
  return byConn;
}

for (const transport of ['tcp', 'unix'] as const) {
  test(`nginx upstream keepalive over ${transport}: kept connections are reused`, { timeout }, async (t) => {
    if (!havePrograms(t, 'nginx')) return;
    const listen = transport === 'tcp' ? undefined : `unix:${path.join(tempDir(t), 'ls.sock')}`;
    const lodestone = await startLodestone(t, listen ? { listen } : {});
    const pass = transport === 'tcp' ? `127.0.0.1:${lodestone.port}` : `unix:${lodestone.socketPath}`;
    const nginx = await startNginx(t, { fastcgiPass: pass, keepalive: 4 });

    const reports = await sequentialReports(nginx);
    assert.ok(
      reports.every((r) => r.keepConn),
      'nginx did not set FCGI_KEEP_CONN',
    );
    const byConn = sequencesByConnection(reports);
    const maxSequence = Math.max(...reports.map((r) => r.sequence));
    t.diagnostic(`${REQUESTS} requests on ${byConn.size} connection(s), highest sequence ${maxSequence}`);
    assert.ok(byConn.size <= 4, `${REQUESTS} requests used ${byConn.size} connections`);
    assert.ok(maxSequence >= 10, `highest sequence on a connection was ${maxSequence}`);
    // Every request on a kept connection is one of ours, sent one after another: each
    // connection's sequence numbers must count 1, 2, 3... with no gap and no repeat.
    for (const [conn, seqs] of byConn) {
      assert.deepEqual(
        seqs,
        seqs.map((_, i) => i + 1),
        `sequence numbers on connection ${conn}`,
      );
    }
    assert.deepEqual(complaints(lodestone.log()), []);
  });
}

const controlName = 'nginx without keepalive (control): every request on a new connection';
test(controlName, { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const lodestone = await startLodestone(t);
  const nginx = await startNginx(t, { fastcgiPass: `127.0.0.1:${lodestone.port}` });

  const reports = await sequentialReports(nginx);
  assert.ok(
    reports.every((r) => !r.keepConn && r.sequence === 1),
    'a request reused a connection',
  );
  assert.equal(sequencesByConnection(reports).size, REQUESTS);
  assert.deepEqual(complaints(lodestone.log()), []);
});
