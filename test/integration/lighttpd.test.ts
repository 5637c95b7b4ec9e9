/**
 * lighttpd -> Lodestone through the real lighttpd mod_fastcgi: a Lodestone listening on TCP
 * ("host"/"port"), and a Lodestone lighttpd spawns itself ("bin-path"), which hands it the
 * listening unix socket on fd 0 — the spawn-fcgi/libfcgi contract — with and without
 * `--listen fd:0`.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { cliPath, complaints, startLodestone, tempDir } from '../helpers/lodestone.js';
import { havePrograms, httpRequest, killAfter, startLighttpd, type WebServer } from '../helpers/peers.js';
import { waitFor } from '../shared/poll.js';
import { parseReport, pattern, sha256, type Report } from '../helpers/diagnostic.js';

/** A hung peer fails its test instead of the whole run. */
const timeout = 60_000;


async function getReport(lighttpd: WebServer, pathAndQuery: string, headers?: Record<string, string>): Promise<Report> {
  const reply = await httpRequest(lighttpd.url(pathAndQuery), headers ? { headers } : {});
  assert.equal(reply.status, 200, reply.body.toString());
  assert.equal(reply.headers['content-type'], 'application/json');
  return parseReport(reply.body);
}

async function postRoundTrip(lighttpd: WebServer, size: number): Promise<void> {
  const body = randomBytes(size);
  const reply = await httpRequest(lighttpd.url('/app/upload'), {
    method: 'POST',
    headers: { 'Content-Type': 'application/octet-stream' },
    body,
  });
  assert.equal(reply.status, 200, reply.body.toString());
  const report = parseReport(reply.body);
  assert.equal(report.params.REQUEST_METHOD, 'POST');
  assert.equal(report.params.CONTENT_LENGTH, String(size));
  assert.equal(report.params.CONTENT_TYPE, 'application/octet-stream');
  assert.equal(report.stdinBytes, size);
  assert.equal(report.stdinSha256, sha256(body));
}

async function statusPassthrough(lighttpd: WebServer): Promise<void> {
  const reply = await httpRequest(lighttpd.url('/app/missing?status=404&header=X-Test:yes'));
  assert.equal(reply.status, 404);
  assert.equal(reply.headers['x-test'], 'yes');
  assert.equal(parseReport(reply.body).params.QUERY_STRING, 'status=404&header=X-Test:yes');
}

test('lighttpd -> lodestone over TCP (host/port)', { timeout }, async (t) => {
  if (!havePrograms(t, 'lighttpd')) return;
  const lodestone = await startLodestone(t);
  const lighttpd = await startLighttpd(t, { backend: { host: '127.0.0.1', port: lodestone.port } });

  await t.test('GET: params as lighttpd sent them', async () => {
    const report = await getReport(lighttpd, '/app/script.lua?x=1&y=two%20words', { 'X-Lodestone-Probe': 'probe' });
    const p = report.params;
    assert.equal(report.role, 'RESPONDER');
    assert.equal(p.REQUEST_METHOD, 'GET');
    assert.equal(p.QUERY_STRING, 'x=1&y=two%20words');
    assert.equal(p.REQUEST_URI, '/app/script.lua?x=1&y=two%20words');
    // A prefix mapping ("/app" => ...) makes the prefix the script and the rest PATH_INFO.
    assert.equal(p.SCRIPT_NAME, '/app');
    assert.equal(p.PATH_INFO, '/script.lua');
    assert.equal(p.DOCUMENT_ROOT, lighttpd.docRoot);
    assert.match(p.SERVER_SOFTWARE ?? '', /^lighttpd\/1\.4\.\d+$/);
    assert.equal(p.GATEWAY_INTERFACE, 'CGI/1.1');
    assert.equal(p.SERVER_PROTOCOL, 'HTTP/1.1');
    assert.equal(p.SERVER_PORT, String(lighttpd.port));
    assert.equal(p.REMOTE_ADDR, '127.0.0.1');
    assert.equal(p.HTTP_HOST, `127.0.0.1:${lighttpd.port}`);
    assert.equal(p.HTTP_X_LODESTONE_PROBE, 'probe');
    assert.equal(report.stdinBytes, 0);
  });

  await t.test('POST 1 MiB: the body arrives intact (SHA-256)', () => postRoundTrip(lighttpd, 1024 * 1024));

  await t.test('status and header pass through', () => statusPassthrough(lighttpd));

  await t.test('?size=300000: exactly 300000 bytes of the pattern', async () => {
    const reply = await httpRequest(lighttpd.url('/app/big?size=300000'));
    assert.equal(reply.status, 200);
    assert.equal(reply.body.length, 300_000);
    const expected = pattern(300_000);
    assert.ok(reply.body.equals(expected), 'body is not "0123456789" repeated');
  });

  await t.test('FCGI_STDERR lands in lighttpd error log', async () => {
    const token = `hello-from-app-${randomBytes(4).toString('hex')}`;
    const reply = await httpRequest(lighttpd.url(`/app/log?stderr=${token}`));
    assert.equal(reply.status, 200);
    await lighttpd.waitForErrorLog(new RegExp(token));
  });

  assert.deepEqual(complaints(lodestone.log()), []);
});

/**
 * lighttpd starts Lodestone from `bin-path` with its listening socket on fd 0. `extraArgs` are
 * appended to the command line; the temp dir passed as --root marks the process so it can be
 * found and stopped whatever lighttpd does.
 */
async function spawnedByLighttpd(t: TestContext, extraArgs: string[]): Promise<void> {
  if (!havePrograms(t, 'lighttpd')) return;
  const dir = tempDir(t);
  const command = [process.execPath, cliPath, 'serve', '--diagnostic', '--root', dir, ...extraArgs];
  // lighttpd splits bin-path at white space; no quoting is possible.
  assert.ok(command.every((arg) => !/\s/.test(arg)), `white space in ${command.join(' ')}`);
  const lighttpd = await startLighttpd(t, {
    backend: {
      'bin-path': command.join(' '),
      socket: path.join(dir, 'ls.sock'),
      'max-procs': 1,
    },
  });
  killAfter(t, dir);

  const listening = await waitFor(
    () => lighttpd.output().split('\n').find((line) => line.includes('lodestone listening')),
    15_000,
    () => `lodestone's "listening" line in lighttpd output:\n${lighttpd.output()}`,
  );
  // It listened on the socket lighttpd handed over, not on a default TCP port.
  assert.match(listening, / listen=fd:0 /);
  const pid = Number(/ pid=(\d+)/.exec(listening)?.[1]);
  assert.ok(fs.statSync(`/proc/${pid}/fd/0`).isSocket(), 'fd 0 of the spawned lodestone is not a socket');

  const first = await getReport(lighttpd, '/app/spawned.lua?first');
  assert.equal(first.params.QUERY_STRING, 'first');
  assert.equal(first.params.SCRIPT_NAME, '/app');
  await postRoundTrip(lighttpd, 256 * 1024);
  await statusPassthrough(lighttpd);
  const last = await getReport(lighttpd, '/app/spawned.lua?last');
  // One process served them all, a connection per request (lighttpd does not keep them).
  assert.equal(last.keepConn, false);
  assert.equal(last.connection, first.connection + 3);

  // lighttpd's shutdown signals its backend, which stops gracefully instead of being killed.
  await lighttpd.stop();
  await waitFor(
    () => (/stopping gracefully signal=SIGTERM/.test(lighttpd.output()) ? true : undefined),
    10_000,
    () => `graceful stop in lodestone log:\n${lighttpd.output()}`,
  );
  assert.deepEqual(complaints(lighttpd.output()), []);
}

test('lighttpd bin-path spawns lodestone; the socket on fd 0 is detected without --listen', { timeout }, (t) =>
  spawnedByLighttpd(t, []),
);

test('lighttpd bin-path spawns lodestone with --listen fd:0', { timeout }, (t) =>
  spawnedByLighttpd(t, ['--listen', 'fd:0']),
);
