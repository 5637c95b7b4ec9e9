/**
 * The dev HTTP front end against the real FastCGI server in-process (script store, Lua and JS
 * engines, Files for sendfile) on a unix socket: scripts, static files, escalation done by the
 * front end itself, confinement of URL paths and X-Sendfile paths, error pages, and close().
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { ScriptStore } from '../../runtime/engines/script-store.js';
import { startDevHttp, type DevHttp } from '../../runtime/cli/dev-http.js';
import { defaultScriptLimits, type ScriptEngine } from '../../runtime/engines/engine.js';
import { createJsEngine } from '../../runtime/engines/js.js';
import { LuaEngine } from '../../runtime/engines/lua.js';
import { diagnostic } from '../../runtime/handlers/diagnostic.js';
import { defaultLimits } from '../../runtime/fastcgi/server/limits.js';
import { FastcgiServer } from '../../runtime/fastcgi/server/server.js';
import { Files } from '../../runtime/files/files.js';
import { Logger } from '../../runtime/log.js';
import { createScriptHandler } from '../../runtime/handlers/pipeline.js';
import { httpRequest, type HttpReply } from '../helpers/peers.js';
import { waitFor } from '../shared/poll.js';
import { tempDir } from '../helpers/lodestone.js';
import { repoRoot } from '../shared/repo.js';

const KEY = { 'x-download-key': 'open-sesame' };

interface Site {
  www: string;
  files: string;
  outside: string;
  socket: string;
  big: Buffer;
  logs: string[];
  log: Logger;
  dev: DevHttp;
  get(p: string, opts?: Parameters<typeof httpRequest>[1]): Promise<HttpReply>;
}

const scripts: Record<string, string> = {
  'boom.lua': 'error("secret-detail-42")\n',
  // Sets any header named in the query: stands in for a script escalating as it likes.
  'xs.lua': 'response.headers[request.query.h] = request.query.v\nprint("body that must not be sent")\n',
  'env.lua': `
for _, k in ipairs({ "GATEWAY_INTERFACE", "SERVER_SOFTWARE", "SCRIPT_FILENAME", "SCRIPT_NAME", "DOCUMENT_URI",
    "DOCUMENT_ROOT", "REQUEST_URI", "QUERY_STRING", "REQUEST_METHOD", "CONTENT_TYPE", "CONTENT_LENGTH",
    "SERVER_PROTOCOL", "REQUEST_SCHEME", "REMOTE_ADDR", "SERVER_ADDR", "SERVER_PORT", "SERVER_NAME",
    "REDIRECT_STATUS", "HTTP_X_CUSTOM", "HTTP_PROXY", "HTTP_X_UNDER", "HTTP_CONTENT_TYPE" }) do
  print(k .. "=" .. (request.params[k] or "<nil>"))
end
`,
};

async function site(t: TestContext): Promise<Site> {
  const dir = fs.realpathSync(tempDir(t, 'lodestone-dev-'));
  const www = path.join(dir, 'www');
  const files = path.join(dir, 'files');
  const outside = path.join(dir, 'outside');
  for (const d of [www, files, outside, path.join(www, 'sub'), path.join(www, 'noindex')]) fs.mkdirSync(d);
  for (const name of ['hello.lua', 'hello.js', 'query.lua', 'api.js', 'download.lua']) {
    fs.copyFileSync(path.join(repoRoot, 'scripts', name), path.join(www, name));
  }
  for (const [name, source] of Object.entries(scripts)) fs.writeFileSync(path.join(www, name), source);
  fs.writeFileSync(path.join(www, 'sub', 'index.lua'), 'print("index of sub")\n');
  fs.writeFileSync(path.join(www, 'notes.txt'), 'plain notes\n');
  // Bigger than every socket buffer on the way: a client that leaves mid-file really leaves early.
  const big = randomBytes(4 * 1024 * 1024);
  fs.writeFileSync(path.join(www, 'big.bin'), big);
  fs.writeFileSync(path.join(outside, 'secret.txt'), 'SECRET\n');
  fs.symlinkSync(path.join(outside, 'secret.txt'), path.join(www, 'link-out.txt'));
  fs.writeFileSync(path.join(files, 'a b%.txt'), 'file a\n');
  fs.writeFileSync(path.join(files, 'digits.bin'), '0123456789');

  const logs: string[] = [];
  const log = new Logger('debug', (line) => logs.push(line));
  const lua = new LuaEngine();
  const js = await createJsEngine();
  const engines = new Map<string, ScriptEngine>([
    [lua.extension, lua],
    [js.extension, js],
  ]);
  const store = new ScriptStore({ root: www, engines, statIntervalMs: 0, maxEntries: 100, maxBytes: 1 << 24, cacheDir: null, log });
  const filesService = new Files({
    roots: [files],
    statThreads: 4,
    statCacheMs: 0,
    statCacheEntries: 100,
    sendfile: 'auto',
    accel: [],
    prefetch: null,
    allowScripts: false,
  });
  const handler = createScriptHandler({ store, root: www, limits: defaultScriptLimits, log, script: null, raw: () => false, files: filesService });
  const server = new FastcgiServer({ limits: defaultLimits, handler, log });
  const socket = path.join(dir, 'fcgi.sock');
  await server.listen({ kind: 'unix', path: socket });
  let dev: DevHttp | null = null;
  // One hook, in order: the front end (and its pool), then the FastCGI server, then the engine.
  t.after(async () => {
    await dev?.close();
    await server.close();
    // Compiled scripts hold QuickJS objects: freed first, or freeing the runtime aborts.
    store.clear();
    js.close();
  });
  dev = await startDevHttp({ host: '127.0.0.1', port: 0, socket, root: www, fileRoots: [files], log });
  const base = dev.url;
  return { www, files, outside, socket, big, logs, log, dev, get: (p, opts) => httpRequest(base + p, opts) };
}

/** A request with the path sent exactly as given (a URL string would have its dot segments removed). */
function rawGet(port: number, rawPath: string, headers: Record<string, string> = {}): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: rawPath, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

const enc = (p: string): string => encodeURIComponent(p);

test('dev HTTP front end', async (t) => {
  const s = await site(t);

  await t.test('hello.lua and hello.js run through FastCGI', async () => {
    const lua = await s.get('/hello.lua');
    assert.equal(lua.status, 200);
    assert.equal(lua.body.toString(), 'Hello from Lua\n');
    const js = await s.get('/hello.js');
    assert.equal(js.status, 200);
    assert.equal(js.body.toString(), 'Hello from JavaScript\n');
  });

  await t.test('query.lua sees the decoded query; the params are those of fastcgi_params', async () => {
    const q = await s.get('/query.lua?b=2&a=1%20x');
    assert.equal(q.status, 200);
    assert.equal(q.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(q.body.toString(), 'a=1 x\nb=2\n');

    const r = await s.get('/sub/../env.lua?x=%41', { headers: { 'X-Custom': 'yes', Proxy: 'http://evil', X_Under: 'no' } });
    assert.equal(r.status, 200);
    const env = Object.fromEntries(
      r.body
        .toString()
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    assert.equal(env.GATEWAY_INTERFACE, 'CGI/1.1');
    assert.match(env.SERVER_SOFTWARE!, /^lodestone-dev\/\d/);
    assert.equal(env.SCRIPT_FILENAME, path.join(s.www, 'env.lua'));
    assert.equal(env.SCRIPT_NAME, '/env.lua');
    assert.equal(env.DOCUMENT_URI, '/env.lua');
    assert.equal(env.DOCUMENT_ROOT, s.www);
    assert.equal(env.QUERY_STRING, 'x=%41');
    assert.equal(env.REQUEST_METHOD, 'GET');
    assert.equal(env.SERVER_PROTOCOL, 'HTTP/1.1');
    assert.equal(env.REQUEST_SCHEME, 'http');
    assert.equal(env.REMOTE_ADDR, '127.0.0.1');
    assert.equal(env.SERVER_ADDR, '127.0.0.1');
    assert.equal(env.SERVER_PORT, String(s.dev.port));
    assert.equal(env.SERVER_NAME, '127.0.0.1');
    assert.equal(env.REDIRECT_STATUS, '200');
    assert.equal(env.HTTP_X_CUSTOM, 'yes');
    assert.equal(env.HTTP_PROXY, '<nil>', 'httpoxy: the Proxy header is not passed');
    assert.equal(env.HTTP_X_UNDER, '<nil>', 'a header with an underscore is not passed');
    assert.equal(env.HTTP_CONTENT_TYPE, '<nil>');
  });

  await t.test('REQUEST_URI is the raw request target', async () => {
    const r = await rawGet(s.dev.port, '/sub/../env.lua?x=%41');
    assert.match(r.body.toString(), /^REQUEST_URI=\/sub\/\.\.\/env\.lua\?x=%41$/m);
  });

  await t.test('api.js POST: the body goes through and back', async () => {
    const payload = JSON.stringify({ n: 1, text: 'héllo'.repeat(20_000) });
    const r = await s.get('/api.js', { method: 'POST', body: payload, headers: { 'Content-Type': 'application/json' } });
    assert.equal(r.status, 201);
    assert.equal(r.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(r.body.toString()), { received: payload });
    const g = await s.get('/api.js?name=Ada');
    assert.deepEqual(JSON.parse(g.body.toString()), { greeting: 'Hello, Ada', method: 'GET' });
  });

  await t.test('static files: content type, HEAD, a client range, 405 for POST', async () => {
    const r = await s.get('/notes.txt');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(r.headers['content-length'], '12');
    assert.equal(r.body.toString(), 'plain notes\n');
    const head = await s.get('/notes.txt', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], '12');
    assert.equal(head.body.length, 0);
    const part = await s.get('/notes.txt', { headers: { Range: 'bytes=6-10' } });
    assert.equal(part.status, 206);
    assert.equal(part.headers['content-range'], 'bytes 6-10/12');
    assert.equal(part.body.toString(), 'notes');
    const tail = await s.get('/notes.txt', { headers: { Range: 'bytes=-3' } });
    assert.equal(tail.body.toString(), 'es\n');
    const beyond = await s.get('/notes.txt', { headers: { Range: 'bytes=99-' } });
    assert.equal(beyond.status, 416);
    assert.equal(beyond.headers['content-range'], 'bytes */12');
    const post = await s.get('/notes.txt', { method: 'POST', body: 'x' });
    assert.equal(post.status, 405);
    const big = await s.get('/big.bin');
    assert.equal(big.headers['content-type'], 'application/octet-stream');
    assert.ok(big.body.equals(s.big));
  });

  await t.test('directories: redirect to the slash, then the index script; no index is 403', async () => {
    const r = await s.get('/sub?a=1');
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, '/sub/?a=1');
    const idx = await s.get('/sub/');
    assert.equal(idx.status, 200);
    assert.equal(idx.body.toString(), 'index of sub\n');
    assert.equal((await s.get('/noindex/')).status, 403);
    // Not a protocol-relative redirect off site.
    const slashes = await rawGet(s.dev.port, '//sub');
    assert.equal(slashes.status, 301);
    assert.equal(slashes.headers.location, '/sub/');
  });

  await t.test('missing -> 404 page; bad percent-encoding -> 400', async () => {
    const r = await s.get('/nope.lua');
    assert.equal(r.status, 404);
    assert.match(r.body.toString(), /404 Not Found/);
    assert.equal((await s.get('/nope.txt')).status, 404);
    assert.equal((await rawGet(s.dev.port, '/%zz')).status, 400);
  });

  await t.test('.. (plain and percent-encoded) and symlinks out of the root are refused', async () => {
    for (const p of ['/../outside/secret.txt', '/%2e%2e/outside/secret.txt', '/..%2Foutside%2Fsecret.txt', '/../../../../etc/passwd', '/link-out.txt']) {
      const r = await rawGet(s.dev.port, p);
      assert.ok(r.status === 403 || r.status === 404, `${p}: ${r.status}`);
      assert.doesNotMatch(r.body.toString(), /SECRET|root:/, p);
    }
    assert.equal((await rawGet(s.dev.port, '/%2e%2e/outside/secret.txt')).status, 403);
    assert.equal((await rawGet(s.dev.port, '/link-out.txt')).status, 403);
    assert.equal((await rawGet(s.dev.port, '/x%00.txt')).status, 403);
  });

  await t.test('a script error is a 500 without its message', async () => {
    const r = await s.get('/boom.lua');
    assert.equal(r.status, 500);
    assert.doesNotMatch(r.body.toString(), /secret-detail-42/);
  });

  await t.test('sendfile(): the front end sends the bytes; X-Sendfile never reaches the client', async () => {
    const r = await s.get(`/download.lua?file=${enc('a b%.txt')}`, { headers: KEY });
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'file a\n');
    assert.equal(r.headers['x-sendfile'], undefined);
    assert.equal(r.headers['cache-control'], 'private');
    assert.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(r.headers['content-length'], '7');
    const part = await s.get('/download.lua?file=digits.bin&offset=2&length=5', { headers: KEY });
    assert.equal(part.status, 206);
    assert.equal(part.headers['content-range'], 'bytes 2-6/10');
    assert.equal(part.body.toString(), '23456');
    // The client's own Range on an escalated file, as lighttpd honours it.
    const ranged = await s.get('/download.lua?file=digits.bin', { headers: { ...KEY, Range: 'bytes=7-' } });
    assert.equal(ranged.status, 206);
    assert.equal(ranged.body.toString(), '789');
  });

  await t.test('X-Sendfile2 with a range -> 206 with Content-Range; X-LIGHTTPD-send-file', async () => {
    const file = path.join(s.files, 'digits.bin');
    const r = await s.get(`/xs.lua?h=X-Sendfile2&v=${enc(`${encodeURI(file)} 3-5`)}`);
    assert.equal(r.status, 206);
    assert.equal(r.headers['content-range'], 'bytes 3-5/10');
    assert.equal(r.headers['x-sendfile2'], undefined);
    assert.equal(r.body.toString(), '345');
    const open = await s.get(`/xs.lua?h=X-Sendfile2&v=${enc(`${encodeURI(file)} 8-`)}`);
    assert.equal(open.body.toString(), '89');
    const lighty = await s.get(`/xs.lua?h=X-LIGHTTPD-send-file&v=${enc(encodeURI(path.join(s.files, 'a b%.txt')))}`);
    assert.equal(lighty.status, 200);
    assert.equal(lighty.body.toString(), 'file a\n');
  });

  await t.test('X-Sendfile outside the file roots -> 403 and a log line; missing -> 404', async () => {
    for (const target of [path.join(s.outside, 'secret.txt'), path.join(s.files, '..', 'outside', 'secret.txt'), path.join(s.www, 'notes.txt')]) {
      const r = await s.get(`/xs.lua?h=X-Sendfile&v=${enc(target)}`);
      assert.equal(r.status, 403, target);
      assert.doesNotMatch(r.body.toString(), /SECRET|notes|must not/);
    }
    assert.ok(s.logs.some((l) => / LS_FILE_FORBIDDEN /.test(l) && l.includes('secret.txt')));
    const missing = await s.get(`/xs.lua?h=X-Sendfile&v=${enc(path.join(s.files, 'gone.txt'))}`);
    assert.equal(missing.status, 404);
  });

  await t.test('a client leaving mid-file or mid-request does not hurt the server', async () => {
    await new Promise<void>((resolve, reject) => {
      const req = http.get(`${s.dev.url}/big.bin`, { agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? undefined : reject(err)));
    });
    // A POST whose body never completes.
    await new Promise<void>((resolve) => {
      const req = http.request(`${s.dev.url}/api.js`, { method: 'POST', agent: false, headers: { 'Content-Length': '1000' } });
      req.on('error', () => {});
      req.write('{"partial":');
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 100);
    });
    const r = await s.get('/hello.lua');
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'Hello from Lua\n');
  });
});

test('backend down -> 502 page', async (t) => {
  const dir = tempDir(t, 'lodestone-dev-');
  const log = new Logger('error', () => {});
  const dev = await startDevHttp({ host: '127.0.0.1', port: 0, socket: path.join(dir, 'none.sock'), root: fs.realpathSync(dir), fileRoots: [], log });
  t.after(() => dev.close());
  fs.writeFileSync(path.join(dir, 'x.lua'), 'print(1)\n');
  const r = await httpRequest(`${dev.url}/x.lua`);
  assert.equal(r.status, 502);
  assert.match(r.body.toString(), /502 Bad Gateway/);
});

test('script requests wait for `ready` (the FastCGI worker still starting) instead of getting a 502', async (t) => {
  const dir = fs.realpathSync(tempDir(t, 'lodestone-dev-'));
  fs.writeFileSync(path.join(dir, 'x.lua'), 'print(1)\n');
  fs.writeFileSync(path.join(dir, 'a.txt'), 'static\n');
  const socket = path.join(dir, 'late.sock');
  const log = new Logger('error', () => {});
  let workerListens = (): void => {};
  const ready = new Promise<void>((resolve) => (workerListens = resolve));
  const dev = await startDevHttp({ host: '127.0.0.1', port: 0, socket, root: dir, fileRoots: [], log, ready });
  t.after(() => dev.close());
  const script = httpRequest(`${dev.url}/x.lua`);
  // Static files need no FastCGI and do not wait.
  assert.equal((await httpRequest(`${dev.url}/a.txt`)).body.toString(), 'static\n');
  // Time for the script request to reach the front end: forwarded now, it would find no socket.
  await new Promise((resolve) => setTimeout(resolve, 200));
  const server = new FastcgiServer({ limits: defaultLimits, handler: diagnostic, log });
  await server.listen({ kind: 'unix', path: socket });
  t.after(() => server.close());
  workerListens();
  const r = await script;
  assert.equal(r.status, 200, r.body.toString());
  const seen = JSON.parse(r.body.toString()) as { params: Record<string, string> };
  assert.equal(seen.params.SCRIPT_FILENAME, path.join(dir, 'x.lua'));
});

test('close() ends keep-alive and stalled connections and the pool, leaving no handles', { timeout: 10_000 }, async (t) => {
  const kinds = ['TCPServerWrap', 'TCPSocketWrap', 'PipeWrap', 'FileHandle'];
  const count = (): Record<string, number> => {
    const all = process.getActiveResourcesInfo();
    return Object.fromEntries(kinds.map((k) => [k, all.filter((r) => r === k).length]));
  };
  const s = await site(t);
  // The site's front end, pool and client sockets are open now; a second front end is measured.
  await waitFor(() => (count().TCPSocketWrap === 0 ? true : undefined), 5000, () => JSON.stringify(count()));
  const before = count();
  const dev = await startDevHttp({ host: '127.0.0.1', port: 0, socket: s.socket, root: s.www, fileRoots: [s.files], log: s.log });
  const agent = new http.Agent({ keepAlive: true });
  t.after(() => agent.destroy());
  const reply = await new Promise<{ status: number; socketClosed: Promise<void> }>((resolve, reject) => {
    http
      .get(`${dev.url}/hello.lua`, { agent }, (res) => {
        const socketClosed = new Promise<void>((done) => res.socket.once('close', () => done()));
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, socketClosed }));
      })
      .on('error', reject);
  });
  assert.equal(reply.status, 200);
  assert.ok(count().PipeWrap! > before.PipeWrap!, 'the pool holds a kept FastCGI connection');
  // A download the client stopped reading: without closing active connections, close() would
  // wait for it forever (the test's timeout fails it).
  const stalled = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.get(`${dev.url}/big.bin`, { agent: false }, (res) => {
      res.pause();
      resolve(res);
    });
    req.on('error', () => {});
    req.once('error', reject);
  });
  await dev.close();
  // The idle keep-alive socket was closed by close(), not left to the keep-alive timeout.
  await reply.socketClosed;
  // The stalled one was cut short (a paused socket only sees its end once it reads again).
  const cut = new Promise<void>((resolve) => stalled.once('close', () => resolve()));
  stalled.on('error', () => {});
  stalled.resume();
  await cut;
  assert.equal(stalled.complete, false);
  await waitFor(
    () => (JSON.stringify(count()) === JSON.stringify(before) ? true : undefined),
    5000,
    () => `handles ${JSON.stringify(count())}, before ${JSON.stringify(before)}`,
  );
  await assert.rejects(httpRequest(`${dev.url}/hello.lua`), { code: 'ECONNREFUSED' });
  await dev.close();
});
