/**
 * Scripts end to end: real nginx (with FastCGI keep-alive) in front of the real `lodestone`
 * CLI serving scripts/ and temp roots, in both languages: the shipped examples, errors with
 * file:line in nginx's error log (never in the body), limits with the server still serving,
 * reload after edit and delete, confinement, the front controller, and Lua bytecode that
 * survives a restart.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { startLodestone, tempDir, type Lodestone } from '../helpers/lodestone.js';
import { repoRoot } from '../shared/repo.js';
import { havePrograms, httpRequest, startNginx, type WebServer } from '../helpers/peers.js';

const timeout = 90_000;
const scriptsDir = path.join(repoRoot, 'scripts');

async function stack(
  t: TestContext,
  root: string,
  opts: { config?: Record<string, unknown>; args?: string[] } = {},
): Promise<{ lodestone: Lodestone; nginx: WebServer }> {
  const lodestone = await startLodestone(t, {
    diagnostic: false,
    args: ['--root', root, ...(opts.args ?? [])],
    ...(opts.config ? { config: opts.config } : {}),
  });
  const nginx = await startNginx(t, { fastcgiPass: `127.0.0.1:${lodestone.port}`, keepalive: 4, scriptRoot: root });
  return { lodestone, nginx };
}

// Lua on both engines (README, "Lua engines").
for (const [ext, luaEngine] of [['lua', 'fengari'], ['lua', 'lua54'], ['js', 'fengari']] as const) {
  test(`scripts/*.${ext} through nginx${ext === 'lua' ? ` (${luaEngine})` : ''}`, { timeout }, async (t) => {
    if (!havePrograms(t, 'nginx')) return;
    const { nginx } = await stack(t, scriptsDir, { config: { luaEngine } });

    const hello = await httpRequest(nginx.url(`/hello.${ext}`));
    assert.equal(hello.status, 200);
    assert.equal(hello.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(hello.body.toString(), `Hello from ${ext === 'lua' ? 'Lua' : 'JavaScript'}\n`);

    const created = await httpRequest(nginx.url(`/status.${ext}`));
    assert.equal(created.status, 201);
    assert.equal(created.headers['cache-control'], 'no-store');
    assert.equal(created.body.toString(), 'created\n');
    const missing = await httpRequest(nginx.url(`/status.${ext}?missing=1`));
    assert.equal(missing.status, 404);
    assert.equal(missing.body.toString(), 'nothing here\n');

    const query = await httpRequest(nginx.url(`/query.${ext}?b=2&a=%C3%A9t%C3%A9&b=3`));
    assert.equal(query.body.toString(), 'a=été\nb=3\n');

    const greet = await httpRequest(nginx.url(`/api.${ext}?name=Ada`));
    assert.equal(greet.status, 200);
    assert.deepEqual(JSON.parse(greet.body.toString()), { greeting: 'Hello, Ada', method: 'GET' });
    const bad = await httpRequest(nginx.url(`/api.${ext}`));
    assert.equal(bad.status, 400);
    const posted = await httpRequest(nginx.url(`/api.${ext}`), { method: 'POST', body: 'a "quoted" body' });
    assert.equal(posted.status, 201);
    assert.deepEqual(JSON.parse(posted.body.toString()), { received: 'a "quoted" body' });

    // The JSON API with a module (scripts/lib/api.*).
    const list = await httpRequest(nginx.url(`/items.${ext}`));
    assert.equal(list.status, 200, list.body.toString());
    assert.equal(list.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(list.body.toString()), [
      { id: 1, name: 'lodestone' },
      { id: 2, name: 'magnet' },
    ]);
    assert.deepEqual(JSON.parse((await httpRequest(nginx.url(`/items.${ext}?id=2`))).body.toString()), { id: 2, name: 'magnet' });
    const none = await httpRequest(nginx.url(`/items.${ext}?id=9`));
    assert.equal(none.status, 404);
    assert.deepEqual(JSON.parse(none.body.toString()), { error: 'no item 9' });
    const added = await httpRequest(nginx.url(`/items.${ext}`), { method: 'POST', body: '{"name":"needle"}' });
    assert.equal(added.status, 201);
    assert.deepEqual(JSON.parse(added.body.toString()), { id: 3, name: 'needle' });
    const garbage = await httpRequest(nginx.url(`/items.${ext}`), { method: 'POST', body: '[1, 2' });
    assert.equal(garbage.status, 400);
    assert.deepEqual(JSON.parse(garbage.body.toString()), { error: 'the body must be a JSON object' });
    const unnamed = await httpRequest(nginx.url(`/items.${ext}`), { method: 'POST', body: '{"name":""}' });
    assert.equal(unnamed.status, 422);
    const deleted = await httpRequest(nginx.url(`/items.${ext}`), { method: 'DELETE' });
    assert.equal(deleted.status, 405);
    assert.equal(deleted.headers.allow, 'GET, POST');
    // The module itself is code, not a page: refused, its source never sent.
    const source = await httpRequest(nginx.url(`/lib/api.${ext}`));
    assert.equal(source.status, 403);
    assert.doesNotMatch(source.body.toString(), /Helpers every JSON endpoint/);
  });
}

test('errors: 500 to the client, file:line in the logs only; limits leave the server serving', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const root = tempDir(t);
  const write = (name: string, text: string): void => fs.writeFileSync(path.join(root, name), text);
  write('ok.lua', 'print("fine")');
  write('ok.js', 'print("fine")');
  write('syntax.lua', 'print("a")\nlocal = 1\n');
  write('syntax.js', 'print("a");\nlet = ;\n');
  write('raise.lua', 'print("a")\n\nerror("boom from lua")\n');
  write('raise.js', 'print("a");\n\nthrow new Error("boom from js");\n');
  write('spin.lua', 'while true do end');
  write('spin.js', 'for (;;) {}');
  const { nginx, lodestone } = await stack(t, root, { config: { scriptLimits: { cpuMs: 200 } } });

  // [script, line, what the message says]
  const cases: Array<[string, number, RegExp]> = [
    ['syntax.lua', 2, /expected/],
    ['syntax.js', 2, /SyntaxError/],
    ['raise.lua', 3, /boom from lua/],
    ['raise.js', 3, /boom from js/],
    ['spin.lua', 1, /CPU/i],
    ['spin.js', 1, /CPU/i],
  ];
  for (const [name, line, message] of cases) {
    const reply = await httpRequest(nginx.url(`/${name}`));
    assert.equal(reply.status, 500, name);
    assert.doesNotMatch(reply.body.toString(), /boom|syntax|\.lua|\.js|CPU/i, `${name}: details must not reach the client`);
    // FCGI_STDERR lands in nginx's error log as "file:line: message".
    const logged = await nginx.waitForErrorLog(new RegExp(`${name.replace('.', '\\.')}(:${line})?: .*`));
    assert.match(logged, message, name);
    // A limit may name the line the script was on when stopped; errors must.
    if (!name.startsWith('spin')) assert.match(logged, new RegExp(`${name.replace('.', '\\.')}:${line}: `));
    // Lodestone's own log: the stable code, the message and file:line. Its stderr pipe may
    // be read after nginx has logged the same error, so wait for the line rather than peek.
    const own = await lodestone.waitForLog(new RegExp(`/${name.replace('.', '\\.')}`));
    assert.match(own, /LS_SCRIPT_(COMPILE|ERROR|LIMIT)/);
    assert.match(own, message);
    for (const ok of ['ok.lua', 'ok.js']) assert.equal((await httpRequest(nginx.url(`/${ok}`))).body.toString(), 'fine\n');
  }
});

test('missing 404, outside the root or not a script 403', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const root = tempDir(t);
  const outside = tempDir(t);
  fs.writeFileSync(path.join(outside, 'secret.lua'), 'print("escaped")');
  fs.symlinkSync(path.join(outside, 'secret.lua'), path.join(root, 'link.lua'));
  fs.writeFileSync(path.join(root, 'notes.txt'), 'print("text")');
  const { nginx } = await stack(t, root);
  assert.equal((await httpRequest(nginx.url('/nope.lua'))).status, 404);
  assert.equal((await httpRequest(nginx.url('/link.lua'))).status, 403);
  assert.equal((await httpRequest(nginx.url('/notes.txt'))).status, 403);
});

test('an edited script is reloaded, a deleted one is gone', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const root = tempDir(t);
  const file = path.join(root, 'page.js');
  fs.writeFileSync(file, 'print("first")');
  const { nginx } = await stack(t, root, { config: { statIntervalMs: 0 } });
  assert.equal((await httpRequest(nginx.url('/page.js'))).body.toString(), 'first\n');
  fs.writeFileSync(file, 'print("second version")');
  assert.equal((await httpRequest(nginx.url('/page.js'))).body.toString(), 'second version\n');
  fs.rmSync(file);
  assert.equal((await httpRequest(nginx.url('/page.js'))).status, 404);
});

test('--script: one front controller answers every request', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const root = tempDir(t);
  const front = path.join(root, 'front.lua');
  fs.writeFileSync(front, 'print("front: " .. request.path)');
  const { nginx } = await stack(t, root, { args: ['--script', front] });
  assert.equal((await httpRequest(nginx.url('/any/where.php'))).body.toString(), 'front: /any/where.php\n');
});

test('Lua bytecode in cacheDir survives a restart', { timeout }, async (t) => {
  const root = tempDir(t);
  const cacheDir = path.join(tempDir(t), 'bytecode');
  fs.writeFileSync(path.join(root, 'a.lua'), 'print(6 * 7)');
  for (const [round, expect] of [
    [1, /script compiled/],
    [2, /script loaded from bytecode cache/],
  ] as const) {
    const lodestone = await startLodestone(t, {
      diagnostic: false,
      args: ['--root', root, '--cache-dir', cacheDir, '--log-level', 'debug'],
    });
    const { RawClient, parseCgi, request } = await import('../helpers/fcgi-client.js');
    const client = await RawClient.connect({ port: lodestone.port });
    await client.write(request(1, { SCRIPT_FILENAME: path.join(root, 'a.lua'), REQUEST_METHOD: 'GET' }));
    assert.equal(parseCgi((await client.reply(1)).stdout).body.toString(), '42\n');
    client.close();
    await lodestone.waitForLog(expect);
    if (round === 2) assert.doesNotMatch(lodestone.log(), /script compiled/);
    assert.equal(await lodestone.stop(), 0);
  }
});

test('compatibility through nginx: a lua-fastcgi-magnet script (raw output) and a mod_magnet script', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const root = tempDir(t);
  // lua-fastcgi-magnet style: the script prints its own CGI header block.
  fs.writeFileSync(
    path.join(root, 'legacy.lua'),
    'print("Status: 404 Not Found")\nprint("Content-Type: text/plain")\nprint("X-Legacy: yes")\nprint("")\nwrite("gone")\n',
  );
  fs.writeFileSync(path.join(root, 'moved.lua'), 'print("Location: /elsewhere")\nprint("")\n');
  // mod_magnet style: the lighty table and a returned status.
  fs.writeFileSync(
    path.join(root, 'magnet.lua'),
    [
      'if lighty.r.req_attr["uri.path"] == "/magnet.lua" and lighty.r.req_header["X-Key"] == "open" then',
      '  lighty.r.resp_header["Content-Type"] = "text/plain"',
      '  lighty.r.resp_body.set({ "welcome ", lighty.r.req_attr["request.method"], "\\n" })',
      '  return 200',
      'end',
      'return 403',
    ].join('\n'),
  );
  const { nginx } = await stack(t, root, { config: { rawOutput: ['legacy.lua', 'moved.lua'] } });
  const legacy = await httpRequest(nginx.url('/legacy.lua'));
  assert.equal(legacy.status, 404);
  assert.equal(legacy.headers['content-type'], 'text/plain');
  assert.equal(legacy.headers['x-legacy'], 'yes');
  assert.equal(legacy.body.toString(), 'gone');
  const moved = await httpRequest(nginx.url('/moved.lua'));
  assert.equal(moved.status, 302);
  assert.equal(moved.headers.location, '/elsewhere');
  const open = await httpRequest(nginx.url('/magnet.lua'), { headers: { 'X-Key': 'open' } });
  assert.equal(open.status, 200);
  assert.equal(open.body.toString(), 'welcome GET\n');
  assert.equal((await httpRequest(nginx.url('/magnet.lua'))).status, 403);
});
