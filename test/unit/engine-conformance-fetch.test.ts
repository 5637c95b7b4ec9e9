/**
 * Engine conformance, fetch() (README, "Outbound HTTP"): each behaviour one row run against every
 * engine in ENGINES, against real HTTP servers this file starts on 127.0.0.1 (Node's http): an
 * upstream that is allowed, a second allowed one that redirects land on, and one that is never
 * allowed and counts every connection it gets (which must stay 0). The client is a real
 * FetchClient with a real config section.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import { fetchSection } from '../../runtime/fetch/fetch-config.js';
import { FetchClient } from '../../runtime/fetch/fetch-client.js';
import { Logger } from '../../runtime/log.js';
import { waitFor } from '../shared/poll.js';
import { ENGINES, caseOptions, perEngine, runCase, type Case } from '../helpers/engines.js';

/** A test server: what it saw, and how to stop it. */
interface Upstream {
  readonly base: string;
  readonly port: number;
  connections: number;
  requests: number;
  /** Responses the client went away from before they were complete. */
  cut: number;
  close(): Promise<void>;
}

const timers = new Set<NodeJS.Timeout>();

async function upstream(handle: (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer, self: Upstream) => void): Promise<Upstream> {
  const server = http.createServer((req, res) => {
    self.requests++;
    res.on('close', () => {
      if (!res.writableFinished) self.cut++;
    });
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handle(req, res, Buffer.concat(chunks), self));
  });
  server.on('connection', () => self.connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const self: Upstream = {
    base: `http://127.0.0.1:${port}`,
    port,
    connections: 0,
    requests: 0,
    cut: 0,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  return self;
}

const later = (ms: number, fn: () => void): void => {
  const t = setTimeout(() => {
    timers.delete(t);
    fn();
  }, ms);
  timers.add(t);
};

// The allowed origin that redirects land on: says who it is, echoes a POST.
const second = await upstream((req, res, body) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(`second ${req.method} ${req.url} ${body.toString()} auth=${req.headers.authorization ?? 'none'}`);
});
// Never in fetch.allow: every connection it gets is a failure of the policy.
const denied = await upstream((_req, res) => res.end('you should not see this'));
// A port nothing listens on (bound, then closed): allowed, so connecting is tried and refused.
const refused = await upstream(() => undefined);
await refused.close();

const main = await upstream((req, res, body) => {
  const url = new URL(req.url ?? '/', 'http://x');
  switch (url.pathname) {
    case '/hello':
      res.setHeader('content-type', 'text/plain');
      res.setHeader('x-multi', ['a', 'b']);
      res.end(`hello ${req.method} ${String(req.headers['x-token'] ?? '-')} ${String(req.headers['x-two'] ?? '-')}`);
      return;
    case '/echo':
      res.writeHead(201, { 'content-type': 'application/octet-stream', 'x-method': req.method });
      res.end(body);
      return;
    case '/slow':
      later(3000, () => res.end('late'));
      return;
    case '/huge':
      // Chunked (no length): the client must count as it reads and stop.
      res.writeHead(200, { 'content-type': 'text/plain' });
      for (let i = 0; i < 64; i++) res.write(Buffer.alloc(16 * 1024, 'x'));
      res.end();
      return;
    case '/huge-declared':
      res.writeHead(200, { 'content-length': String(1024 * 1024) });
      res.end(Buffer.alloc(1024 * 1024, 'y'));
      return;
    case '/to-denied':
      res.writeHead(302, { location: `${denied.base}/stolen` });
      res.end();
      return;
    case '/to-second':
      res.writeHead(307, { location: `${second.base}/landed?q=1` });
      res.end();
      return;
    case '/see-other':
      res.writeHead(303, { location: '/hello' });
      res.end();
      return;
    case '/loop':
      res.writeHead(302, { location: '/loop' });
      res.end();
      return;
    default:
      res.writeHead(404);
      res.end();
  }
});

after(async () => {
  for (const t of timers) clearTimeout(t);
  await Promise.all([main.close(), second.close(), denied.close()]);
  await client.close();
});

const logLines: string[] = [];
const config = fetchSection.parse(
  { allow: [main.base, `${second.base}/`, refused.base], timeoutMs: 2000, maxResponseBytes: 64 * 1024, maxConcurrent: 4, maxRedirects: 3 },
  { name: 'fetch', dir: '/', text: false },
  { baseDir: '/', cli: {}, env: {}, done: {} },
);
const client = new FetchClient(config, new Logger('debug', (line) => logLines.push(line)));
const services = { fetch: client };

const M = JSON.stringify(main.base);
const D = JSON.stringify(denied.base);
const R = JSON.stringify(refused.base);

/** A fetch the script catches: Lua prints `false CODE` from pcall, JS `false CODE` from e.code. */
function caught(base: string, path: string, options = '{}', jsOptions = options): { lua: string; js: string } {
  const url = { lua: `${base} .. ${JSON.stringify(path)}`, js: `${base} + ${JSON.stringify(path)}` };
  return {
    lua: `local ok, err = pcall(function() local r = fetch(${url.lua}, ${options}) return r end)\nprint(ok, ok and "" or err:match("LS_FETCH_[%u_]+"), ok and "" or (err:match("^[^:]+:%d+:") and "at line" or "no line"))`,
    js: `try { await fetch(${url.js}, ${jsOptions}); print(true) } catch (e) { print(false, e.code, e instanceof Error ? "at line" : "not an Error") }`,
  };
}

/** The upstream saw its response cut (the socket closed) long before its 3 s answer, and the slot is free. */
const letGo = async (before: number): Promise<void> => {
  await waitFor(() => main.cut > before && client.load.inFlight === 0, 1000, 'the upstream to be let go');
};

const noContact = (): void => assert.equal(denied.connections, 0, 'the denied server was never connected to');

const cases: Case[] = [
  {
    name: 'a GET with headers: status, body, headers by lower-case name, a repeated header joined by a newline',
    script: {
      lua: `local res = fetch(${M} .. "/hello", { headers = { ["X-Token"] = "t1", ["X-Two"] = 2 } })\nprint(res.status, res.body, res.headers["x-multi"], res.headers["content-type"], res.headers.connection)`,
      js: `const res = await fetch(${M} + "/hello", { headers: { "X-Token": "t1", "X-Two": 2 } });\nprint(res.status, res.body, res.headers["x-multi"], res.headers["content-type"], res.headers.connection ?? null)`,
    },
    services,
    expect: { body: perEngine({ lua: '200\thello GET t1 2\ta\nb\ttext/plain\tnil\n', js: '200\thello GET t1 2\ta\nb\ttext/plain\tnull\n' }) },
  },
  {
    name: 'a POST sends its body, bytes and NUL included, and gets it back whole',
    script: {
      lua: `local sent = "caf\\195\\169\\0" .. ("z"):rep(30000)\nlocal res = fetch(${M} .. "/echo", { method = "post", body = sent, headers = { ["Content-Type"] = "text/plain" } })\nprint(res.status, res.headers["x-method"], #res.body, res.body == sent)`,
      js: `const sent = "café\\0" + "z".repeat(30000);\nconst res = await fetch(${M} + "/echo", { method: "post", body: sent, headers: { "Content-Type": "text/plain" } });\nprint(res.status, res.headers["x-method"], res.body.length, res.body === sent)`,
    },
    services,
    expect: { body: perEngine({ lua: '201\tPOST\t30006\ttrue\n', js: '201\tPOST\t30005\ttrue\n' }) },
  },
  {
    name: 'a slow upstream past timeoutMs: LS_FETCH_TIMEOUT, caught, and the upstream is let go',
    script: caught(M, "/slow", '{ timeoutMs = 150 }', '{ timeoutMs: 150 }'),
    services,
    before: (ctx) => void (ctx.notes.cut = main.cut),
    expect: { body: 'false\tLS_FETCH_TIMEOUT\tat line\n', withinMs: 1500 },
    check: (_out, ctx) => letGo(ctx.notes.cut as number),
  },
  {
    name: 'a chunked response over maxResponseBytes: LS_FETCH_TOO_LARGE, never a cut body',
    script: caught(M, "/huge"),
    services,
    expect: { body: 'false\tLS_FETCH_TOO_LARGE\tat line\n' },
  },
  {
    name: 'a declared length over maxResponseBytes is refused before reading',
    script: caught(M, "/huge-declared"),
    services,
    expect: { body: 'false\tLS_FETCH_TOO_LARGE\tat line\n' },
  },
  {
    name: 'a redirect to a denied origin: LS_FETCH_DENIED, and that origin is never contacted',
    script: caught(M, "/to-denied"),
    services,
    expect: { body: 'false\tLS_FETCH_DENIED\tat line\n' },
    check: noContact,
  },
  {
    name: 'a 307 to another allowed origin is followed with method and body; credentials stay behind',
    script: {
      lua: `local res = fetch(${M} .. "/to-second", { method = "PUT", body = "payload", headers = { Authorization = "secret" } })\nprint(res.status, res.body)`,
      js: `const res = await fetch(${M} + "/to-second", { method: "PUT", body: "payload", headers: { Authorization: "secret" } });\nprint(res.status, res.body)`,
    },
    services,
    expect: { body: '200\tsecond PUT /landed?q=1 payload auth=none\n' },
  },
  {
    name: 'a 303 after a POST becomes a GET without the body (a relative Location)',
    script: {
      lua: `local res = fetch(${M} .. "/see-other", { method = "POST", body = "x" })\nprint(res.status, res.body)`,
      js: `const res = await fetch(${M} + "/see-other", { method: "POST", body: "x" });\nprint(res.status, res.body)`,
    },
    services,
    expect: { body: '200\thello GET - -\n' },
  },
  {
    name: 'more redirects than fetch.maxRedirects: LS_FETCH_REDIRECTS',
    script: caught(M, "/loop"),
    services,
    expect: { body: 'false\tLS_FETCH_REDIRECTS\tat line\n' },
  },
  {
    name: 'connection refused (an allowed port nothing listens on): LS_FETCH_FAILED',
    script: caught(R, "/"),
    services,
    expect: { body: 'false\tLS_FETCH_FAILED\tat line\n' },
  },
  {
    name: 'a denied origin called directly: LS_FETCH_DENIED, no connection',
    script: caught(D, "/"),
    services,
    expect: { body: 'false\tLS_FETCH_DENIED\tat line\n' },
    check: noContact,
  },
  {
    name: 'the same host on another port, or by another name, is another origin: denied',
    script: {
      lua: `for _, u in ipairs({ "http://localhost:${main.port}/hello", "https://127.0.0.1:${main.port}/hello", "http://127.0.0.1/hello" }) do local ok, err = pcall(fetch, u) print(ok, err:match("LS_FETCH_[%u_]+")) end`,
      js: `for (const u of ["http://localhost:${main.port}/hello", "https://127.0.0.1:${main.port}/hello", "http://127.0.0.1/hello"]) { try { await fetch(u) } catch (e) { print(false, e.code) } }`,
    },
    services,
    expect: { body: 'false\tLS_FETCH_DENIED\n'.repeat(3) },
  },
  {
    name: 'without a fetch client every origin is denied',
    script: caught(M, "/hello"),
    expect: { body: 'false\tLS_FETCH_DENIED\tat line\n' },
  },
  {
    name: 'a fetched response can be emitted as this request\'s response',
    script: {
      lua: `emit(fetch(${M} .. "/echo", { method = "POST", body = "relayed" }))`,
      js: `emit(await fetch(${M} + "/echo", { method: "POST", body: "relayed" }))`,
    },
    services,
    expect: { status: 201, body: 'relayed', headers: { 'x-method': 'POST', 'content-type': 'application/octet-stream' } },
  },
  {
    name: 'bad arguments are errors the script can catch, before any request',
    script: {
      lua: [
        `for _, o in ipairs({ { timeout = 5 }, { method = "CONNECT" }, { headers = { Connection = "close" } }, { headers = { ["X-A"] = "a\\rb" } }, { body = {} }, { timeoutMs = -1 } }) do`,
        `  local ok, err = pcall(fetch, ${M} .. "/hello", o) print(ok, (err:gsub("^.-fetch%(", "fetch(")))`,
        `end`,
        `for _, u in ipairs({ "/relative", "ftp://127.0.0.1/", "http://user:pw@127.0.0.1:${main.port}/" }) do local ok, err = pcall(fetch, u) print(ok, (err:gsub("^.-fetch%(", "fetch("))) end`,
      ].join('\n'),
      js: [
        `for (const o of [{ timeout: 5 }, { method: "CONNECT" }, { headers: { Connection: "close" } }, { headers: { "X-A": "a\\rb" } }, { body: {} }, { timeoutMs: -1 }]) {`,
        `  try { await fetch(${M} + "/hello", o); print(true) } catch (e) { print(false, e.message) }`,
        `}`,
        `for (const u of ["/relative", "ftp://127.0.0.1/", "http://user:pw@127.0.0.1:${main.port}/"]) { try { await fetch(u) } catch (e) { print(false, e.message) } }`,
      ].join('\n'),
    },
    services,
    expect: {
      body: perEngine({
        lua: [
          'false\tfetch(): unknown option "timeout"',
          'false\tfetch(): method CONNECT is not allowed',
          'false\tfetch(): header Connection is set by the client, not the script',
          'false\tfetch(): invalid value for header X-A: CR, LF or NUL',
          'false\tfetch(): body must be a string',
          'false\tfetch(): timeoutMs must be a positive number (got -1)',
          'false\tfetch(): "/relative" is not an absolute URL',
          'false\tfetch(): only http:// and https:// URLs can be fetched (got ftp:)',
          'false\tfetch(): credentials in the URL are not sent; use an Authorization header',
          '',
        ].join('\n'),
        js: [
          'false\tfetch(): unknown option "timeout"',
          'false\tfetch(): method CONNECT is not allowed',
          'false\tfetch(): header Connection is set by the client, not the script',
          'false\tfetch(): invalid value for header X-A: CR, LF or NUL',
          'false\tfetch(): body must be a string',
          'false\tfetch(): timeoutMs must be a positive number',
          'false\tfetch(): "/relative" is not an absolute URL',
          'false\tfetch(): only http:// and https:// URLs can be fetched (got ftp:)',
          'false\tfetch(): credentials in the URL are not sent; use an Authorization header',
          '',
        ].join('\n'),
      }),
    },
    check: noContact,
  },
  {
    name: 'an uncaught fetch error ends the run with a script error at its file:line',
    script: {
      lua: `print("before")\nlocal res = fetch(${D} .. "/")\nprint("after")`,
      js: `print("before");\nconst res = await fetch(${D} + "/");\nprint("after");`,
    },
    services,
    expect: { error: { kind: 'runtime', message: /LS_FETCH_DENIED: http:\/\/127\.0\.0\.1:\d+ is not in fetch\.allow/, line: 2 } },
    check: noContact,
  },
  {
    name: "the run's wall limit cuts a slower fetch: a limit the script cannot catch, the upstream let go",
    script: {
      lua: `local ok, err = pcall(fetch, ${M} .. "/slow", { timeoutMs = 5000 })\nprint("caught", err)`,
      js: `try { await fetch(${M} + "/slow", { timeoutMs: 5000 }) } catch (e) { print("caught", e.message) }`,
    },
    services,
    request: { limits: { wallMs: 200 } },
    before: (ctx) => void (ctx.notes.cut = main.cut),
    expect: { error: { kind: 'limit', message: /wall time over 200 ms/ }, withinMs: 1500 },
    check: (_out, ctx) => letGo(ctx.notes.cut as number),
  },
];

for (const engine of ENGINES) {
  for (const c of cases) test(`${engine.id}: ${c.name}`, caseOptions(engine, c), () => runCase(engine, c));
}

test('every refusal and failure was logged with its code; the denied server saw nothing at all', () => {
  for (const code of ['LS_FETCH_DENIED', 'LS_FETCH_TIMEOUT', 'LS_FETCH_TOO_LARGE', 'LS_FETCH_FAILED', 'LS_FETCH_REDIRECTS']) {
    assert.ok(logLines.some((l) => l.includes(` warn ${code} fetch(): http://127.0.0.1:`)), `${code} in\n${logLines.join('\n')}`);
  }
  assert.equal(denied.connections, 0);
  assert.equal(denied.requests, 0);
});
