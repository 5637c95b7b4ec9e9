/**
 * stat() and sendfile() from Lua and JS scripts, and the --stat-accel mode, through a real
 * Lodestone process and the independent raw FastCGI client: what the web server receives
 * (status, escalation header, range headers, bytes sent directly) and the log lines. Delivery
 * of the bytes by real nginx and lighttpd is in files.test.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { RawClient, parseCgi, request, type Cgi } from '../helpers/fcgi-client.js';
import { startLodestone, tempDir, type Lodestone } from '../helpers/lodestone.js';

interface Site {
  www: string;
  files: string;
  outside: string;
  server: Lodestone;
}

const NGINX = 'nginx/1.22.1';
const LIGHTTPD = 'lighttpd/1.4.69';

async function site(t: TestContext, scripts: Record<string, string>, opts: { args?: string[]; config?: Record<string, unknown> } = {}): Promise<Site> {
  const dir = tempDir(t);
  const www = path.join(dir, 'www');
  const files = path.join(dir, 'files');
  const outside = path.join(dir, 'outside');
  for (const d of [www, files, path.join(files, 'sub'), outside]) fs.mkdirSync(d);
  fs.writeFileSync(path.join(files, 'a.txt'), 'hello, file\n');
  fs.writeFileSync(path.join(files, 'sub', 'a b,%?.bin'), Buffer.from('0123456789'));
  fs.writeFileSync(path.join(outside, 'secret.txt'), 'SECRET\n');
  fs.symlinkSync(path.join(outside, 'secret.txt'), path.join(files, 'link-out'));
  fs.symlinkSync(path.join(files, 'a.txt'), path.join(files, 'link-in'));
  for (const [name, source] of Object.entries(scripts)) fs.writeFileSync(path.join(www, name), source);
  const server = await startLodestone(t, {
    diagnostic: false,
    args: ['--root', www, '--file-root', files, ...(opts.args ?? [])],
    ...(opts.config ? { config: opts.config } : {}),
  });
  t.after(() => server.stop());
  return { www, files, outside, server };
}

async function get(s: Site, script: string, params: Record<string, string> = {}): Promise<Cgi & { stderr: string }> {
  const client = await RawClient.connect({ port: s.server.port });
  try {
    await client.write(
      request(1, {
        SCRIPT_FILENAME: path.join(s.www, script),
        REQUEST_METHOD: 'GET',
        REQUEST_URI: '/' + script,
        QUERY_STRING: '',
        ...params,
      }),
    );
    const reply = await client.reply(1);
    return { ...parseCgi(reply.stdout), stderr: reply.stderr };
  } finally {
    client.close();
  }
}

const statLua = `
local st = stat(request.params.WANT)
if st == nil then print("nil") return end
print(st.is_file, st.is_dir, st.size, st.mtime, st.etag, st.content_type)
`;
const statJs = `
const st = await stat(request.params.WANT);
if (st === null) { print('nil'); return; }
print(st.is_file, st.is_dir, st.size, st.mtime, st.etag, st.content_type);
`;

test('stat(): the documented fields in Lua and JS alike; nil/null when missing', async (t) => {
  const s = await site(t, { 'stat.lua': statLua, 'stat.js': statJs });
  const file = path.join(s.files, 'a.txt');
  const st = fs.statSync(file);
  const mtime = Math.floor(st.mtimeMs / 1000);
  const etag = `"${mtime.toString(16)}-${st.size.toString(16)}"`;
  for (const script of ['stat.lua', 'stat.js']) {
    const lua = script.endsWith('.lua');
    const sep = '\t';
    const yes = lua ? 'true' : 'true';
    const r = await get(s, script, { WANT: file });
    assert.equal(r.status, 200, script);
    assert.equal(r.body.toString(), [yes, 'false', '12', String(mtime), etag, 'text/plain; charset=utf-8'].join(sep) + '\n', script);
    const dir = await get(s, script, { WANT: path.join(s.files, 'sub') });
    assert.match(dir.body.toString(), /^false\ttrue\t/, script);
    const missing = await get(s, script, { WANT: path.join(s.files, 'nope.txt') });
    assert.equal(missing.body.toString(), 'nil\n', script);
    // Relative paths resolve against the first files root.
    const rel = await get(s, script, { WANT: 'sub/a b,%?.bin' });
    assert.match(rel.body.toString(), /^true\tfalse\t10\t/, script);
  }
});

test('stat() outside the roots ends the run with 403 and a log line, whatever the script catches', async (t) => {
  const s = await site(t, {
    'probe.lua': 'print(pcall(stat, request.params.WANT))\nprint("after")\n',
    'probe.js': 'try { await stat(request.params.WANT); } catch (e) { print("caught"); }\nprint("after");\n',
  });
  for (const script of ['probe.lua', 'probe.js']) {
    for (const want of [
      path.join(s.outside, 'secret.txt'),
      path.join(s.files, '..', 'outside', 'secret.txt'),
      '../outside/secret.txt',
      path.join(s.files, 'link-out'),
      path.join(s.files, 'a.txt') + '\0.png',
    ]) {
      const r = await get(s, script, { WANT: want });
      assert.equal(r.status, 403, `${script} ${JSON.stringify(want)}`);
      assert.doesNotMatch(r.body.toString(), /after|caught|SECRET/);
      assert.match(r.stderr, new RegExp(`${script}: stat\\(`));
    }
  }
  await s.server.waitForLog(/LS_FILE_FORBIDDEN/);
});

const sendLua = `
response.headers["X-Before"] = "kept"
print("this body is dropped")
local offset, length = tonumber(request.params.OFFSET), tonumber(request.params.LENGTH)
local ok = pcall(sendfile, request.params.WANT, offset, length, { filename = request.params.NAME })
print("not reached", ok)
`;
const sendJs = `
response.headers['X-Before'] = 'kept';
print('this body is dropped');
const p = request.params;
const offset = p.OFFSET ? Number(p.OFFSET) : undefined, length = p.LENGTH ? Number(p.LENGTH) : undefined;
try { await sendfile(p.WANT, offset, length, p.NAME ? { filename: p.NAME } : undefined); } catch { print('caught'); }
print('not reached');
`;

test('sendfile() escalates to lighttpd with X-Sendfile, url-encoded, and ends the run', async (t) => {
  const s = await site(t, { 'send.lua': sendLua, 'send.js': sendJs });
  const file = path.join(s.files, 'sub', 'a b,%?.bin');
  for (const script of ['send.lua', 'send.js']) {
    const r = await get(s, script, { WANT: file, SERVER_SOFTWARE: LIGHTTPD });
    assert.equal(r.status, 200, script);
    assert.equal(decodeURIComponent(r.headers['x-sendfile']!), file);
    assert.doesNotMatch(r.headers['x-sendfile']!, /[ ,%?](?![0-9A-F]{2})/);
    assert.equal(r.headers['x-before'], 'kept');
    assert.equal(r.headers['content-type'], 'application/octet-stream');
    assert.equal(r.body.length, 0, `${script}: body ${r.body.toString()}`);
    // A symlink inside the roots is followed and the real path is sent.
    const link = await get(s, script, { WANT: path.join(s.files, 'link-in'), SERVER_SOFTWARE: LIGHTTPD, NAME: 'r\u00e9sum\u00e9.txt' });
    assert.equal(decodeURIComponent(link.headers['x-sendfile']!), path.join(s.files, 'a.txt'));
    assert.equal(link.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(link.headers['content-disposition'], `attachment; filename="resume.txt"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt`);
  }
});

test('sendfile() ranges: X-Sendfile2 for lighttpd, the bytes themselves for nginx; 206 and Content-Range', async (t) => {
  const s = await site(t, { 'send.lua': sendLua, 'send.js': sendJs }, { config: { files: { accel: {} } } });
  const file = path.join(s.files, 'sub', 'a b,%?.bin');
  for (const script of ['send.lua', 'send.js']) {
    const l = await get(s, script, { WANT: file, SERVER_SOFTWARE: LIGHTTPD, OFFSET: '2', LENGTH: '4' });
    assert.equal(l.status, 206, script);
    const [p, range] = l.headers['x-sendfile2']!.split(' ');
    assert.equal(decodeURIComponent(p!), file);
    assert.equal(range, '2-5');
    assert.equal(l.headers['content-range'], 'bytes 2-5/10');
    assert.equal(l.body.length, 0);

    const n = await get(s, script, { WANT: file, SERVER_SOFTWARE: NGINX, OFFSET: '2', LENGTH: '4' });
    assert.equal(n.status, 206, script);
    assert.equal(n.headers['x-accel-redirect'], undefined);
    assert.equal(n.headers['content-range'], 'bytes 2-5/10');
    assert.equal(n.headers['content-length'], '4');
    assert.equal(n.body.toString(), '2345');

    // Past the end: 416 with the size; a length past the end is cut to the file.
    const past = await get(s, script, { WANT: file, SERVER_SOFTWARE: NGINX, OFFSET: '10' });
    assert.equal(past.status, 416);
    assert.equal(past.headers['content-range'], 'bytes */10');
    const cut = await get(s, script, { WANT: file, SERVER_SOFTWARE: NGINX, OFFSET: '8', LENGTH: '100' });
    assert.equal(cut.body.toString(), '89');
  }
});

test('sendfile() for nginx: X-Accel-Redirect through files.accel; no mapping is a 500 with a log line', async (t) => {
  const dir = tempDir(t);
  const files = path.join(dir, 'files');
  fs.mkdirSync(path.join(files, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(files, 'sub', 'a b#.txt'), 'x');
  fs.writeFileSync(path.join(dir, 'send.lua'), 'sendfile(request.params.WANT)\n');
  const mapped = await startLodestone(t, {
    diagnostic: false,
    args: ['--root', dir],
    config: { files: { roots: [files], accel: { [files]: '/protected/' } } },
  });
  t.after(() => mapped.stop());
  const s: Site = { www: dir, files, outside: dir, server: mapped };
  const r = await get(s, 'send.lua', { WANT: path.join(files, 'sub', 'a b#.txt'), SERVER_SOFTWARE: NGINX });
  assert.equal(r.status, 200, r.stderr + mapped.log());
  assert.equal(r.headers['x-accel-redirect'], '/protected/sub/a%20b%23.txt');

  const unmapped = await startLodestone(t, { diagnostic: false, args: ['--root', dir, '--file-root', files] });
  t.after(() => unmapped.stop());
  const u = await get({ ...s, server: unmapped }, 'send.lua', { WANT: path.join(files, 'sub', 'a b#.txt'), SERVER_SOFTWARE: NGINX });
  assert.equal(u.status, 500);
  assert.equal(u.headers['x-accel-redirect'], undefined);
  await unmapped.waitForLog(/LS_SENDFILE_NO_MAPPING/);

  // A configured mode wins over SERVER_SOFTWARE.
  const forced = await startLodestone(t, { diagnostic: false, args: ['--root', dir, '--file-root', files, '--sendfile', 'x-sendfile'] });
  t.after(() => forced.stop());
  const f = await get({ ...s, server: forced }, 'send.lua', { WANT: path.join(files, 'sub', 'a b#.txt'), SERVER_SOFTWARE: NGINX });
  assert.equal(decodeURIComponent(f.headers['x-sendfile']!), path.join(files, 'sub', 'a b#.txt'));
});

test('sendfile() refusals: missing 404, directory 403, outside the roots 403, traversal 403', async (t) => {
  const s = await site(t, { 'send.lua': sendLua, 'send.js': sendJs });
  for (const script of ['send.lua', 'send.js']) {
    const cases: Array<[string, number]> = [
      [path.join(s.files, 'missing.txt'), 404],
      [path.join(s.files, 'sub'), 403],
      [path.join(s.outside, 'secret.txt'), 403],
      [path.join(s.files, 'sub', '..', '..', 'outside', 'secret.txt'), 403],
      [path.join(s.files, 'link-out'), 403],
      ['/etc/passwd', 403],
      [path.join(s.files, 'a.txt\0'), 403],
    ];
    for (const [want, status] of cases) {
      const r = await get(s, script, { WANT: want, SERVER_SOFTWARE: LIGHTTPD });
      assert.equal(r.status, status, `${script} ${JSON.stringify(want)}`);
      assert.equal(r.headers['x-sendfile'], undefined);
      assert.equal(r.headers['x-before'], undefined, 'an error page replaces the prepared headers');
      assert.doesNotMatch(r.body.toString(), /not reached|caught|SECRET|dropped/);
    }
  }
  await s.server.waitForLog(/LS_FILE_NOT_FOUND/);
  await s.server.waitForLog(/LS_FILE_FORBIDDEN/);
});

test('--stat-accel: 404 missing, 403 directory or outside, else the escalation header; no script runs', async (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(path.join(dir, 'img'));
  fs.writeFileSync(path.join(dir, 'img', 'a.png'), Buffer.alloc(100));
  fs.writeFileSync(path.join(dir, 'x.lua'), 'print("a script ran")\n');
  const server = await startLodestone(t, { diagnostic: false, args: ['--root', dir, '--stat-accel'] });
  t.after(() => server.stop());
  const s: Site = { www: dir, files: dir, outside: dir, server };
  const ok = await get(s, 'img/a.png', { SERVER_SOFTWARE: LIGHTTPD });
  assert.equal(ok.status, 200);
  assert.equal(decodeURIComponent(ok.headers['x-sendfile']!), path.join(dir, 'img', 'a.png'));
  assert.equal(ok.headers['content-type'], 'image/png');
  const script = await get(s, 'x.lua', { SERVER_SOFTWARE: LIGHTTPD });
  assert.equal(decodeURIComponent(script.headers['x-sendfile']!), path.join(dir, 'x.lua'));
  assert.equal(script.body.length, 0);
  assert.equal((await get(s, 'img/missing.png')).status, 404);
  assert.equal((await get(s, 'img')).status, 403);
  assert.equal((await get(s, 'img/')).status, 403);
  assert.equal((await get(s, '../../etc/passwd')).status, 403);
});

test('--stat-threads sets the size of the thread pool stats run on', async (t) => {
  const threads = async (args: string[]): Promise<number> => {
    const dir = tempDir(t);
    fs.writeFileSync(path.join(dir, 'a.txt'), 'x');
    const server = await startLodestone(t, { diagnostic: false, args: ['--root', dir, '--stat-accel', ...args] });
    try {
      // The pool starts on first use: one stat request starts it.
      const r = await get({ www: dir, files: dir, outside: dir, server }, 'a.txt');
      assert.equal(r.status, 200);
      return fs.readdirSync(`/proc/${server.child.pid}/task`).length;
    } finally {
      await server.stop();
    }
  };
  const base = await threads([]);
  const more = await threads(['--stat-threads', '20']);
  assert.equal(more - base, 16, `threads: default ${base}, with --stat-threads 20: ${more}`);
});

// On both Lua engines: each builds the table with the shared field names (lighty-attributes.ts).
for (const luaEngine of ['lua54', 'fengari']) {
  test(`lighty.stat() (${luaEngine}): mod_magnet field names, confined like stat()`, async (t) => {
    const s = await site(t, {
      'magnet.lua': `
local st = lighty.stat(lighty.r.req_attr["physical.doc-root"] .. "/../files/" .. lighty.r.req_header["X-Want"])
if not st then return 404 end
lighty.r.resp_body.set({ tostring(st.is_file), " ", st.st_size, " ", st["content-type"], " ", st.etag })
return 200
`,
    }, { config: { luaEngine } });
    const file = path.join(s.files, 'a.txt');
    const r = await get(s, 'magnet.lua', { HTTP_X_WANT: 'a.txt', DOCUMENT_ROOT: s.www });
    assert.equal(r.status, 200, r.stderr);
    assert.match(r.body.toString(), /^true 12 text\/plain; charset=utf-8 "[0-9a-f]+-c"$/);
    assert.equal((await get(s, 'magnet.lua', { HTTP_X_WANT: 'nope.txt' })).status, 404);
    const out = await get(s, 'magnet.lua', { HTTP_X_WANT: '../outside/secret.txt' });
    assert.equal(out.status, 403);
    assert.ok(fs.existsSync(file));
  });
}
