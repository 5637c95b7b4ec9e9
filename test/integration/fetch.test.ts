/**
 * fetch() end to end: real nginx -> the real `lodestone` CLI (the [fetch] section read from its
 * config file, the worker's FetchClient) -> a local Node http server the config allows, from a
 * Lua and a JS script that print what they got. A second local server, not allowed, must never
 * see a connection, and the refusal is logged with its code.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { startLodestone, tempDir } from '../helpers/lodestone.js';
import { havePrograms, httpRequest, startNginx } from '../helpers/peers.js';

const timeout = 60_000;

async function listen(t: TestContext, handler: http.RequestListener): Promise<{ base: string; connections: () => number }> {
  let connections = 0;
  const server = http.createServer(handler);
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, connections: () => connections };
}

const SCRIPTS = {
  lua: (api: string, denied: string) => `
local res = fetch("${api}/user?id=" .. request.query.id, { headers = { ["X-Caller"] = "lua" } })
response.headers["Content-Type"] = "text/plain"
print(res.status, res.headers["x-api"], res.body)
local ok, err = pcall(fetch, "${denied}/")
print(ok, err:match("LS_FETCH_[%u_]+"))
`,
  js: (api: string, denied: string) => `
const res = await fetch("${api}/user?id=" + request.query.id, { headers: { "X-Caller": "js" } });
response.headers["Content-Type"] = "text/plain";
print(res.status, res.headers["x-api"], res.body);
try { await fetch("${denied}/"); print(true) } catch (e) { print(false, e.code) }
`,
};

test('fetch() through nginx: a script fetches from an allowed local server and prints it; a denied one is never contacted', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const api = await listen(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-api': 'v1' });
    res.end(JSON.stringify({ url: req.url, caller: req.headers['x-caller'] }));
  });
  const denied = await listen(t, (_req, res) => res.end('never'));
  const www = path.join(tempDir(t), 'www');
  fs.mkdirSync(www);
  for (const ext of ['lua', 'js'] as const) fs.writeFileSync(path.join(www, `fetch.${ext}`), SCRIPTS[ext](api.base, denied.base));
  const lodestone = await startLodestone(t, {
    diagnostic: false,
    args: ['--root', www],
    config: { fetch: { allow: [api.base], timeoutMs: 5000 } },
  });
  t.after(() => lodestone.stop());
  const nginx = await startNginx(t, { fastcgiPass: `127.0.0.1:${lodestone.port}`, scriptRoot: www });

  for (const ext of ['lua', 'js'] as const) {
    const reply = await httpRequest(nginx.url(`/fetch.${ext}?id=7`));
    assert.equal(reply.status, 200, `${ext}: ${reply.body.toString()}\n${lodestone.log()}`);
    assert.equal(reply.headers['content-type'], 'text/plain');
    assert.equal(reply.body.toString(), `200\tv1\t{"url":"/user?id=7","caller":"${ext}"}\nfalse\tLS_FETCH_DENIED\n`);
  }
  assert.equal(denied.connections(), 0, 'the origin not in fetch.allow saw no connection');
  await lodestone.waitForLog(new RegExp(`warn LS_FETCH_DENIED fetch\\(\\): ${denied.base.replace(/[.]/g, '\\.')} is not in fetch\\.allow`));
});
