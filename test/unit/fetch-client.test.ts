/**
 * The `[fetch]` section (origins normalised, bad values one line naming the field) and the
 * FetchClient's per-worker concurrency bound, against a real server on 127.0.0.1. What scripts
 * see of fetch() is in engine-conformance-fetch.test.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import test from 'node:test';
import { loadConfig } from '../../runtime/cli/config.js';
import { FetchClient, FetchError, type FetchCall } from '../../runtime/fetch/fetch-client.js';
import { Logger } from '../../runtime/log.js';
import { configError } from '../helpers/config.js';
import { cliPath, run, tempDir } from '../helpers/lodestone.js';
import { waitFor } from '../shared/poll.js';

function configWith(dir: string, toml: string): string {
  const file = path.join(dir, 'lodestone.toml');
  fs.writeFileSync(file, toml);
  return file;
}

test('[fetch]: deny by default; origins normalised to scheme://host:port', (t) => {
  const defaults = loadConfig({}, {}).fetch;
  assert.deepEqual([...defaults.allow], []);
  assert.deepEqual({ ...defaults, allow: null }, { allow: null, timeoutMs: 10_000, maxResponseBytes: 8 * 1024 * 1024, maxConcurrent: 64, maxRedirects: 5 });
  const dir = tempDir(t);
  const file = configWith(dir, '[fetch]\nallow = ["HTTP://Api.Example", "https://x.internal:8443/", "http://[::1]:8080", "https://y:443"]\nmaxConcurrent = 2\n');
  const config = loadConfig({ config: file }, {});
  assert.deepEqual([...config.fetch.allow], ['http://api.example:80', 'https://x.internal:8443', 'http://[::1]:8080', 'https://y:443']);
  assert.equal(config.fetch.maxConcurrent, 2);
});

test('[fetch]: a bad value is one error naming the field', (t) => {
  const dir = tempDir(t);
  const cases: Array<[string, RegExp]> = [
    ['allow = "http://a"', /^fetch\.allow: must be an array of origins/],
    ['allow = ["ftp://a"]', /^fetch\.allow: "ftp:\/\/a": only http:\/\/ and https:\/\/ origins can be allowed/],
    ['allow = ["http://a/path"]', /^fetch\.allow: "http:\/\/a\/path" is not an origin/],
    ['allow = ["http://u:p@a"]', /^fetch\.allow: "http:\/\/u:p@a" is not an origin/],
    ['allow = ["http://a?"]', /^fetch\.allow: "http:\/\/a\?" is not an origin/],
    ['allow = ["a.example"]', /^fetch\.allow: "a\.example" is not a URL/],
    ['maxConcurrent = 0', /^fetch\.maxConcurrent: must be an integer from 1 to 65536/],
    ['maxRedirects = 21', /^fetch\.maxRedirects: /],
    ['timeout = 5', /^fetch\.timeout: unknown field/],
  ];
  for (const [body, pattern] of cases) {
    const file = configWith(dir, `[fetch]\n${body}\n`);
    assert.match(configError(() => loadConfig({ config: file }, {})), pattern, body);
  }
  // And from the command line: one line, exit code 2.
  const file = configWith(dir, '[fetch]\nallow = ["gopher://a"]\n');
  const r = run(process.execPath, [cliPath, 'serve', '--config', file, '--diagnostic'], { env: { ...process.env } });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /^lodestone: LS_CONFIG_INVALID: fetch\.allow: "gopher:\/\/a": only http:\/\/ and https:\/\/ origins can be allowed\n$/);
});

test('fetch.maxConcurrent: further calls wait their turn (FIFO), within their own deadline', async (t) => {
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    if (req.url === '/hold') held.push(res);
    else res.end(req.url);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new FetchClient({ allow: new Set([base]), timeoutMs: 5000, maxResponseBytes: 1024, maxConcurrent: 1, maxRedirects: 0 }, new Logger('error', () => undefined));
  t.after(async () => {
    for (const res of held) res.end();
    await client.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  const call = (p: string, timeoutMs = 5000): FetchCall => ({ url: new URL(base + p), method: 'GET', headers: [], body: null, timeoutMs });

  const first = client.fetch(call('/hold'));
  await waitFor(() => held.length === 1, 2000, 'the first call to reach the server');
  const second = client.fetch(call('/second'));
  const impatient = client.fetch(call('/impatient', 100));
  assert.deepEqual(client.load, { inFlight: 1, waiting: 2 });
  await assert.rejects(impatient, (err: unknown) => err instanceof FetchError && err.code === 'LS_FETCH_TIMEOUT');
  assert.deepEqual(client.load, { inFlight: 1, waiting: 1 }, 'a call that timed out waiting leaves the queue');
  held[0]!.end('released');
  assert.equal((await first).body.toString(), 'released');
  assert.equal((await second).body.toString(), '/second');
  assert.deepEqual(client.load, { inFlight: 0, waiting: 0 });
});

test('a stopped run (its signal) ends the call and frees its slot at once', async (t) => {
  let cut = 0;
  let got = 0;
  const server = http.createServer((_req, res) => {
    got++;
    res.on('close', () => void (res.writableFinished || cut++));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new FetchClient({ allow: new Set([base]), timeoutMs: 5000, maxResponseBytes: 1024, maxConcurrent: 1, maxRedirects: 0 }, new Logger('error', () => undefined));
  t.after(async () => {
    await client.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  const stop = new AbortController();
  const pending = client.fetch({ url: new URL(`${base}/`), method: 'GET', headers: [], body: null, timeoutMs: 5000, signal: stop.signal });
  await waitFor(() => got === 1, 2000, 'the call to reach the server');
  const reason = new Error('the run was stopped');
  stop.abort(reason);
  await assert.rejects(pending, (err) => err === reason);
  assert.deepEqual(client.load, { inFlight: 0, waiting: 0 });
  await waitFor(() => cut === 1, 2000, 'the upstream to see the request cut');
});
