/**
 * pass(backend, { emit = true }) relaying a real PHP-FPM's response through the pipeline
 * (runtime/handlers/pipeline.ts: relay), counting what goes to the web server's connection:
 * issue 23 asks that a small response go out in one write with END_REQUEST, and that a large
 * one stream (bounded memory, the 3 MiB case is in cache-front.test.ts through nginx).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { defaultScriptLimits, type ScriptEngine, type ScriptLimits } from '../../runtime/engines/engine.js';
import { createJsEngine, type JsEngine } from '../../runtime/engines/js.js';
import type { Handler } from '../../runtime/fastcgi/server/connection.js';
import { Lua54Engine } from '../../runtime/engines/lua54/engine.js';
import { ScriptStore } from '../../runtime/engines/script-store.js';
import { encodePairs } from '../../runtime/fastcgi/pairs.js';
import { Request } from '../../runtime/fastcgi/server/request.js';
import { Response } from '../../runtime/fastcgi/server/response.js';
import { createScriptHandler } from '../../runtime/handlers/pipeline.js';
import { Logger } from '../../runtime/log.js';
import { makePool } from '../helpers/backend-pool.js';
import { Decoder, T, parseCgi } from '../helpers/fcgi-client.js';
import { requirePhpFpm, startPhpFpm } from '../helpers/php-fpm.js';

const noFlow = { pauseFor(): void {}, resumeFor(): void {} };
const BIG = 1024 * 1024;

/** What {@link relayOnce} serves: a front script (by file name, .lua or .js) and its limits. */
interface RelaySetup {
  file?: string;
  source?: string;
  limits?: Partial<ScriptLimits>;
  /** The pool's servers, when not the test's PHP-FPM (a refused port). */
  servers?: string[];
  /** Requests served one after the other through the same handler and engines (default 1); the last is returned. */
  times?: number;
  /** Called with the JS engine after the last request. */
  afterwards?: (js: JsEngine) => void;
}

/** Serves `setup.times` requests through the pipeline; returns the last response and how many sends it took. */
async function relayOnce(t: TestContext, page: string, setup: RelaySetup = {}): Promise<{ sends: number; lastOnly: boolean; status: number; body: Buffer; stderr: string }> {
  const fpm = await startPhpFpm(t, {
    scripts: {
      'hello.php': "<?php\nheader('Cache-Control: no-store');\necho '123';\n",
      'big.php': `<?php\necho str_repeat('0123456789abcdef', ${BIG / 16});\n`,
      'slow.php': "<?php\nusleep(300000);\necho 'slow';\n",
    },
  });
  t.after(() => fpm.stop());
  const www = fs.mkdtempSync(path.join(os.tmpdir(), 'lodestone-relay-'));
  t.after(() => fs.rmSync(www, { recursive: true, force: true }));
  const file = setup.file ?? 'relay.lua';
  fs.writeFileSync(path.join(www, file), setup.source ?? 'return pass("php", { emit = true })\n');
  const log = new Logger('error', () => {});
  const lua = new Lua54Engine();
  const js = await createJsEngine();
  t.after(() => js.close());
  const store = new ScriptStore({ root: www, engines: new Map<string, ScriptEngine>([[lua.extension, lua], [js.extension, js]]), statIntervalMs: 0, maxEntries: 10, maxBytes: 1 << 20, cacheDir: null, log });
  const { pool } = makePool(t, 'php', setup.servers ?? [fpm.address]);
  const limits = { ...defaultScriptLimits, ...setup.limits };
  const handler = createScriptHandler({ store, root: www, limits, log, script: path.join(www, file), raw: () => false, backends: new Map([['php', pool]]) });

  let out: { sends: number; lastOnly: boolean; status: number; body: Buffer; stderr: string } | null = null;
  for (let i = 0; i < (setup.times ?? 1); i++) out = await serveOne(handler, fpm.script(page), page, fpm.docRoot);
  setup.afterwards?.(js);
  return out!;
}

/** One request through `handler`, recording what goes to the web server. */
async function serveOne(handler: Handler, script: string, page: string, docRoot: string): Promise<{ sends: number; lastOnly: boolean; status: number; body: Buffer; stderr: string }> {
  const request = new Request(1, 'RESPONDER', false, { id: 1, peer: undefined }, 1, noFlow);
  request.setParams(encodePairs(Object.entries({ REQUEST_METHOD: 'GET', SCRIPT_FILENAME: script, SCRIPT_NAME: `/${page}`, REQUEST_URI: `/${page}`, DOCUMENT_ROOT: docRoot, QUERY_STRING: '' })));
  request.stdin.end();
  const decoder = new Decoder();
  let sends = 0;
  let lastOnly = false;
  const response = new Response({
    requestId: 1,
    open: true,
    send(data, last) {
      sends++;
      lastOnly = last;
      decoder.push(Buffer.isBuffer(data) ? data : Buffer.concat(data));
      return true;
    },
  });
  await handler(request, response);
  const stdout = Buffer.concat(decoder.records.filter((r) => r.type === T.STDOUT).map((r) => r.content));
  const stderr = Buffer.concat(decoder.records.filter((r) => r.type === T.STDERR).map((r) => r.content)).toString();
  assert.ok(decoder.records.some((r) => r.type === T.END_REQUEST), 'the response ended');
  const cgi = parseCgi(stdout);
  return { sends, lastOnly, status: cgi.status, body: cgi.body, stderr };
}

test('pass(emit): a small PHP response goes to the web server in one write, END_REQUEST included', async (t) => {
  if (!requirePhpFpm(t)) return;
  const out = await relayOnce(t, 'hello.php');
  assert.equal(out.status, 200);
  assert.equal(out.body.toString(), '123');
  assert.equal(out.sends, 1, 'one write');
  assert.equal(out.lastOnly, true, 'the write ends the request');
});

test('pass(emit): a 1 MiB PHP response streams in several writes, every byte in order', async (t) => {
  if (!requirePhpFpm(t)) return;
  const out = await relayOnce(t, 'big.php');
  assert.equal(out.status, 200);
  assert.equal(out.body.length, BIG);
  assert.ok(out.body.equals(Buffer.from('0123456789abcdef'.repeat(BIG / 16))), 'every byte in order');
  assert.ok(out.sends > 1, `streamed (${out.sends} writes)`);
});

// The run ends at pass(..., emit): nothing the script does after the call reaches the response,
// whether the call was a tail call (no Lua error at all), a statement, inside a coroutine whose
// resumer goes on, or (JS) a promise the script did not await.
for (const [file, source] of [
  ['statement.lua', 'pass("php", { emit = true })\nprint("after")\nresponse.headers["X-After"] = "1"\n'],
  ['coroutine.lua', 'local relay = coroutine.wrap(function() return pass("php", { emit = true }) end)\nrelay()\nprint("after")\n'],
  ['pcall.lua', 'local ok = pcall(pass, "php", { emit = true })\nprint("after", ok)\n'],
  ['unawaited.js', 'pass("php", { emit: true });\nprint("after");\n'],
] as const) {
  test(`pass(emit): nothing after the call reaches the response (${file})`, async (t) => {
    if (!requirePhpFpm(t)) return;
    const out = await relayOnce(t, 'hello.php', { file, source });
    assert.equal(out.status, 200);
    assert.equal(out.body.toString(), '123');
  });
}

test('pass(emit): the wait for PHP is outside the script wall limit (the pool times it), as nginx times fastcgi_pass', async (t) => {
  if (!requirePhpFpm(t)) return;
  const out = await relayOnce(t, 'slow.php', { limits: { wallMs: 50 } });
  assert.equal(out.status, 200);
  assert.equal(out.body.toString(), 'slow');
});

test('pass(emit) to a server that refuses: 502 after the run, and the reason in the web server log', async (t) => {
  if (!requirePhpFpm(t)) return;
  const refused = net.createServer();
  await new Promise<void>((resolve) => refused.listen(0, '127.0.0.1', resolve));
  const port = (refused.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => refused.close(() => resolve()));
  const out = await relayOnce(t, 'hello.php', { servers: [`127.0.0.1:${port}`] });
  assert.equal(out.status, 502);
  assert.match(out.stderr, /relay\.lua: pass\("php"\): .*no server available/);
});

test('pass(emit) awaited in JS: the never-settling promise it returns leaves the sandbox reusable', async (t) => {
  if (!requirePhpFpm(t)) return;
  let pool: { idle: number; busy: number } | null = null;
  let vms: { created: number; disposed: number } | null = null;
  const out = await relayOnce(t, 'hello.php', {
    file: 'awaited.js',
    source: 'await pass("php", { emit: true });\nprint("after");\n',
    times: 3,
    afterwards: (js) => {
      pool = js.pool;
      vms = { ...js.vms };
    },
  });
  assert.equal(out.body.toString(), '123');
  assert.deepEqual(pool, { idle: 1, busy: 0 });
  assert.deepEqual(vms, { created: 1, disposed: 0 }, 'one sandbox served all three');
});
