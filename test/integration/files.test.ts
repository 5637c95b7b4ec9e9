/**
 * Files end to end: a script authorises a download and the real web server sends the bytes
 * (lighttpd with `x-sendfile` + `x-sendfile-docroot`, nginx with an `internal` location and
 * X-Accel-Redirect), whole files, script-chosen ranges and the client's own Range; file names
 * that only survive if the escalation header is percent-encoded; traversal attempts refused
 * with the secret never reaching the client; stat()'s fields; the fcgi-stat-accel mode behind
 * lighttpd configured as in the original (`""` => every URL, check-local disable, x-sendfile
 * enable), both `--stat-accel` and scripts/stat-accel.lua; a slow stat (strace makes one file's
 * statx take seconds) not holding up another request; and `--stat-threads`.
 *
 * What stops a traversal differs by layer, and the assertions say which: lighttpd and nginx
 * normalise a client URL before it becomes SCRIPT_FILENAME, so through them only a symlink can
 * lead out, and Lodestone's confinement (realpath) is what refuses it. Paths a script passes to
 * sendfile()/stat(), and SCRIPT_FILENAMEs sent over raw FastCGI, reach Lodestone unfiltered.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { RawClient, parseCgi, request as fcgiRequest } from '../helpers/fcgi-client.js';
import { startLodestone, tempDir, type Lodestone } from '../helpers/lodestone.js';
import { repoRoot } from '../shared/repo.js';
import { waitFor } from '../shared/poll.js';
import { havePrograms, httpRequest, lighttpdString, startLighttpd, startNginx, type HttpReply, type WebServer } from '../helpers/peers.js';
import { startTracedLodestone, threadCount } from '../helpers/traced.js';

const timeout = 120_000;
const KEY = { 'X-Download-Key': 'open-sesame' };
/** The internal nginx location the files root is mapped to. */
const ACCEL_PREFIX = '/protected';

// ---------------------------------------------------------------------------------------------
// The tree every test serves

interface Tree {
  dir: string;
  /** The files root (--file-root / files.roots). */
  files: string;
  /** A directory next to it, outside every root. */
  outside: string;
  /** Script root: download.{lua,js} from scripts/ plus the test's own scripts. */
  scripts: string;
  /** Bytes that must never reach a client. */
  secret: string;
  big: Buffer;
}

const PLAIN = 'plain text\n';
/** A name with every character that means something to a URL or to X-Sendfile2. */
const WEIRD = 'a b,c%?#;+é.txt';

function makeTree(t: TestContext): Tree {
  const dir = fs.realpathSync(tempDir(t, 'lodestone-files-'));
  const files = path.join(dir, 'files');
  const outside = path.join(dir, 'outside');
  const scripts = path.join(dir, 's');
  for (const d of [files, outside, scripts, path.join(files, 'sub'), path.join(dir, 'files2')]) fs.mkdirSync(d);
  const secret = `SECRET-${randomBytes(8).toString('hex')}`;
  const big = randomBytes(300_000);
  const write = (file: string, data: string | Buffer): void => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, data);
  };
  write(path.join(files, 'plain.txt'), PLAIN);
  write(path.join(files, 'big.bin'), big);
  write(path.join(files, 'data.json'), '{"a":1}\n');
  write(path.join(files, WEIRD), 'weird name\n');
  // Two names a single percent-decoding step confuses.
  write(path.join(files, 'a b.txt'), 'space name\n');
  write(path.join(files, 'a%20b.txt'), 'literal percent name\n');
  // A directory literally named "%2e%2e": decoded once more it would be "..", one level up,
  // where outside/secret.txt lives.
  write(path.join(files, '%2e%2e', 'outside', 'secret.txt'), 'DECOY\n');
  write(path.join(files, 'sub', 'inner.txt'), 'inner\n');
  write(path.join(outside, 'secret.txt'), `${secret}\n`);
  write(path.join(dir, 'files2', 'secret.txt'), `${secret}\n`);
  fs.symlinkSync('../outside/secret.txt', path.join(files, 'link-out.txt'));
  fs.symlinkSync('../outside', path.join(files, 'link-dir-out'));
  fs.symlinkSync('plain.txt', path.join(files, 'link-in.txt'));

  for (const name of ['download.lua', 'download.js']) fs.copyFileSync(path.join(repoRoot, 'scripts', name), path.join(scripts, name));
  for (const [name, source] of Object.entries(TEST_SCRIPTS)) fs.writeFileSync(path.join(scripts, name), source);
  return { dir, files, outside, scripts, secret, big };
}

const STAT_FIELDS = ['is_file', 'is_dir', 'size', 'mtime', 'etag', 'content_type'];

const TEST_SCRIPTS: Record<string, string> = {
  // stat(?path) as "name=value" lines, the same format from both languages.
  'stat.lua': `
response.headers["Content-Type"] = "text/plain"
local info = stat(request.query.path)
if info == nil then print("nil") return end
local keys = {}
for k in pairs(info) do keys[#keys + 1] = k end
table.sort(keys)
print("keys=" .. table.concat(keys, ","))
for _, k in ipairs({ ${STAT_FIELDS.map((f) => `"${f}"`).join(', ')} }) do print(k .. "=" .. tostring(info[k])) end
print("type.size=" .. math.type(info.size))
`,
  'stat.js': `
response.headers['Content-Type'] = 'text/plain';
const info = await stat(request.query.path);
if (info === null) { print('nil'); return; }
print('keys=' + Object.keys(info).sort().join(','));
for (const k of ${JSON.stringify(STAT_FIELDS)}) print(k + '=' + String(info[k]));
print('type.size=' + (Number.isInteger(info.size) ? 'integer' : typeof info.size));
`,
  // Output and a header before sendfile(): the body is dropped, the header stays.
  'dropped.lua': `
response.headers["X-Before"] = "kept"
print("this body must be dropped")
sendfile("plain.txt")
print("never runs")
`,
  'dropped.js': `
response.headers['X-Before'] = 'kept';
print('this body must be dropped');
await sendfile('plain.txt');
print('never runs');
`,
  // Scripts for the slow-stat test: one that stats, one that does not.
  'stat-only.lua': `
local info = stat(request.query.path)
print(info and ("size=" .. info.size) or "nil")
`,
  'quick.js': `print('quick');`,
};

// ---------------------------------------------------------------------------------------------
// Stacks

interface Stack {
  kind: 'nginx' | 'lighttpd';
  server: WebServer;
  lodestone: Lodestone;
  /** The URL of script `name` with `query`. */
  page(name: string, query?: Record<string, string>): string;
}

/** Lodestone serving `tree.scripts`, file root `tree.files`, nginx's internal location mapped. */
function scriptLodestone(t: TestContext, tree: Tree): Promise<Lodestone> {
  return startLodestone(t, {
    diagnostic: false,
    args: ['--root', tree.scripts],
    config: { files: { roots: [tree.files], accel: { [tree.files]: ACCEL_PREFIX } } },
  });
}

function queryString(query: Record<string, string>): string {
  return Object.entries(query)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join('&');
}

async function nginxStack(t: TestContext, tree: Tree): Promise<Stack> {
  const lodestone = await scriptLodestone(t, tree);
  const server = await startNginx(t, {
    fastcgiPass: `127.0.0.1:${lodestone.port}`,
    keepalive: 4,
    scriptRoot: tree.scripts,
    server: `location ${ACCEL_PREFIX}/ { internal; alias ${tree.files}/; }`,
  });
  return {
    kind: 'nginx',
    server,
    lodestone,
    page: (name, query = {}) => server.url(`/${name}?${queryString(query)}`),
  };
}

async function lighttpdStack(t: TestContext, tree: Tree): Promise<Stack> {
  const lodestone = await scriptLodestone(t, tree);
  // "/s/" => SCRIPT_NAME /s/NAME; "docroot" makes SCRIPT_FILENAME tree.dir + /s/NAME.
  const server = await startLighttpd(t, {
    prefix: '/s/',
    backend: {
      host: '127.0.0.1',
      port: lodestone.port,
      docroot: tree.dir,
      'x-sendfile': 'enable',
      'x-sendfile-docroot': [tree.files],
    },
  });
  return {
    kind: 'lighttpd',
    server,
    lodestone,
    page: (name, query = {}) => server.url(`/s/${name}?${queryString(query)}`),
  };
}

// ---------------------------------------------------------------------------------------------
// Checks shared by both web servers

function noSecret(reply: HttpReply, tree: Tree, what: string): void {
  assert.ok(!reply.body.toString('latin1').includes(tree.secret), `${what}: the secret reached the client`);
  assert.ok(!reply.body.toString('latin1').includes('root:x:0:0'), `${what}: /etc/passwd reached the client`);
}

/** Headers that must never reach a client: the escalation itself. */
function noEscalationLeak(reply: HttpReply, what: string): void {
  for (const h of ['x-sendfile', 'x-sendfile2', 'x-lighttpd-send-file', 'x-accel-redirect']) {
    assert.equal(reply.headers[h], undefined, `${what}: ${h} reached the client`);
  }
}

async function downloads(t: TestContext, stack: Stack, tree: Tree, ext: 'lua' | 'js'): Promise<void> {
  const script = `download.${ext}`;
  const get = (query: Record<string, string>, headers: Record<string, string> = {}): Promise<HttpReply> =>
    httpRequest(stack.page(script, query), { headers: { ...KEY, ...headers } });

  await t.test(`${ext}: whole files, Content-Type from the extension, headers set before stay`, async () => {
    const plain = await get({ file: 'plain.txt' });
    assert.equal(plain.status, 200, plain.body.toString());
    assert.equal(plain.body.toString(), PLAIN);
    assert.equal(plain.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(plain.headers['content-length'], String(PLAIN.length));
    assert.equal(plain.headers['cache-control'], 'private');
    noEscalationLeak(plain, 'plain.txt');

    const big = await get({ file: 'big.bin' });
    assert.equal(big.status, 200);
    assert.equal(big.headers['content-type'], 'application/octet-stream');
    assert.ok(big.body.equals(tree.big), `big.bin: ${big.body.length} bytes, not the file`);

    const json = await get({ file: 'data.json' });
    assert.equal(json.headers['content-type'], 'application/json');
    assert.equal(json.body.toString(), '{"a":1}\n');

    // Absolute paths inside the root work as well as relative ones; so does a symlink inside.
    assert.equal((await get({ file: path.join(tree.files, 'sub/inner.txt') })).body.toString(), 'inner\n');
    assert.equal((await get({ file: 'sub/../plain.txt' })).body.toString(), PLAIN);
    assert.equal((await get({ file: 'link-in.txt' })).body.toString(), PLAIN);
  });

  await t.test(`${ext}: names that only survive a percent-encoded header`, async () => {
    const weird = await get({ file: WEIRD });
    assert.equal(weird.status, 200, `${WEIRD}: ${weird.status} ${weird.body.toString()}`);
    assert.equal(weird.body.toString(), 'weird name\n');
    assert.equal((await get({ file: 'a b.txt' })).body.toString(), 'space name\n');
    assert.equal((await get({ file: 'a%20b.txt' })).body.toString(), 'literal percent name\n');
    // Sent unencoded, the web server would decode %2e%2e into ".." and look one level up.
    const decoy = await get({ file: '%2e%2e/outside/secret.txt' });
    noSecret(decoy, tree, '%2e%2e literal directory');
    assert.equal(decoy.status, 200);
    assert.equal(decoy.body.toString(), 'DECOY\n');
  });

  await t.test(`${ext}: ranges the script chooses (206 + Content-Range)`, async () => {
    const cases: Array<[Record<string, string>, number, number]> = [
      [{ offset: '1000', length: '5000' }, 1000, 5999],
      [{ offset: '0', length: '1' }, 0, 0],
      [{ offset: '299990' }, 299_990, 299_999],
      // A length past the end is cut at the end.
      [{ offset: '299000', length: '5000' }, 299_000, 299_999],
    ];
    for (const [query, start, end] of cases) {
      const reply = await get({ file: 'big.bin', ...query });
      const what = JSON.stringify(query);
      assert.equal(reply.status, 206, `${what}: ${reply.status}`);
      assert.equal(reply.headers['content-range'], `bytes ${start}-${end}/${tree.big.length}`, what);
      assert.equal(reply.body.length, end - start + 1, what);
      assert.ok(reply.body.equals(tree.big.subarray(start, end + 1)), `${what}: wrong bytes`);
      assert.equal(reply.headers['content-type'], 'application/octet-stream', what);
      noEscalationLeak(reply, what);
    }
    const past = await get({ file: 'big.bin', offset: '300000', length: '10' });
    assert.equal(past.status, 416);
    assert.equal(past.headers['content-range'], `bytes */${tree.big.length}`);
  });

  await t.test(`${ext}: the client's Range on an escalated file is the web server's job`, async () => {
    const first = await get({ file: 'big.bin' }, { Range: 'bytes=100-199' });
    assert.equal(first.status, 206);
    assert.equal(first.headers['content-range'], `bytes 100-199/${tree.big.length}`);
    assert.ok(first.body.equals(tree.big.subarray(100, 200)));
    const last = await get({ file: 'big.bin' }, { Range: 'bytes=-10' });
    assert.equal(last.status, 206);
    assert.ok(last.body.equals(tree.big.subarray(tree.big.length - 10)));
    const beyond = await get({ file: 'big.bin' }, { Range: 'bytes=400000-' });
    assert.equal(beyond.status, 416);
  });

  await t.test(`${ext}: a download name (Content-Disposition, RFC 6266)`, async () => {
    const reply = await get({ file: 'plain.txt', as: 'résumé 2024.txt' });
    assert.equal(reply.status, 200);
    assert.equal(reply.body.toString(), PLAIN);
    const cd = reply.headers['content-disposition'] ?? '';
    assert.match(cd, /^attachment;/);
    assert.match(cd, /filename="resume 2024\.txt"/);
    assert.match(cd, /filename\*=UTF-8''r%C3%A9sum%C3%A9%202024\.txt/);
  });

  await t.test(`${ext}: the script's own refusals`, async () => {
    const noKey = await httpRequest(stack.page(script, { file: 'plain.txt' }));
    assert.equal(noKey.status, 403);
    assert.equal(noKey.body.toString(), 'forbidden\n');
    assert.equal((await get({})).status, 400);
  });

  await t.test(`${ext}: output before sendfile() is dropped, headers stay`, async () => {
    const reply = await httpRequest(stack.page(`dropped.${ext}`));
    assert.equal(reply.status, 200);
    assert.equal(reply.body.toString(), PLAIN);
    assert.equal(reply.headers['content-type'], 'text/plain; charset=utf-8');
    // nginx keeps only a few upstream headers after X-Accel-Redirect; lighttpd keeps them all.
    if (stack.kind === 'lighttpd') assert.equal(reply.headers['x-before'], 'kept');
  });
}

/** sendfile(path) with `path` from the query: everything outside the roots gets 403 (or 404), never the bytes. */
async function traversal(t: TestContext, stack: Stack, tree: Tree, ext: 'lua' | 'js'): Promise<void> {
  await t.test(`${ext}: traversal attempts are refused by Lodestone`, async () => {
    const attempts: Array<[string, number]> = [
      ['../outside/secret.txt', 403],
      [`${tree.files}/../outside/secret.txt`, 403],
      [path.join(tree.outside, 'secret.txt'), 403],
      ['/etc/passwd', 403],
      [path.join(tree.dir, 'files2', 'secret.txt'), 403],
      ['link-out.txt', 403],
      ['link-dir-out/secret.txt', 403],
      // lighttpd answers 400 itself to a %00 anywhere in the URL, the query included.
      ['plain.txt\0.jpg', stack.kind === 'lighttpd' ? 400 : 403],
      // Not decoded: a literal (missing) name inside the root.
      ['%2e%2e%2foutside%2fsecret.txt', 404],
      ['..%2foutside%2fsecret.txt', 404],
      ['sub', 403],
      [tree.files, 403],
      ['nope.txt', 404],
      ['', 400],
    ];
    for (const [file, status] of attempts) {
      const reply = await httpRequest(stack.page(`download.${ext}`, { file }), { headers: KEY });
      const what = JSON.stringify(file);
      noSecret(reply, tree, what);
      noEscalationLeak(reply, what);
      assert.equal(reply.status, status, `${what}: ${reply.status} ${reply.body.toString().slice(0, 200)}`);
    }
    assert.match(stack.lodestone.log(), /LS_FILE_FORBIDDEN/);
    assert.match(stack.lodestone.log(), /LS_FILE_NOT_FOUND/);
  });
}

async function statFields(t: TestContext, stack: Stack, tree: Tree, ext: 'lua' | 'js'): Promise<void> {
  await t.test(`${ext}: stat() returns the documented fields`, async () => {
    const fields = async (p: string): Promise<Record<string, string> | null> => {
      const reply = await httpRequest(stack.page(`stat.${ext}`, { path: p }));
      assert.equal(reply.status, 200, `stat(${p}): ${reply.status} ${reply.body.toString()}`);
      const text = reply.body.toString();
      if (text === 'nil\n') return null;
      return Object.fromEntries(
        text
          .trimEnd()
          .split('\n')
          .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
      );
    };
    const expected = (p: string, type: string): Record<string, string> => {
      const st = fs.statSync(p);
      const mtime = Math.floor(st.mtimeMs / 1000);
      return {
        keys: [...STAT_FIELDS].sort().join(','),
        is_file: String(st.isFile()),
        is_dir: String(st.isDirectory()),
        size: String(st.size),
        mtime: String(mtime),
        etag: `"${mtime.toString(16)}-${st.size.toString(16)}"`,
        content_type: type,
        'type.size': 'integer',
      };
    };
    assert.deepEqual(await fields('plain.txt'), expected(path.join(tree.files, 'plain.txt'), 'text/plain; charset=utf-8'));
    assert.deepEqual(await fields('big.bin'), expected(path.join(tree.files, 'big.bin'), 'application/octet-stream'));
    assert.deepEqual(await fields(path.join(tree.files, 'data.json')), expected(path.join(tree.files, 'data.json'), 'application/json'));
    const dir = await fields('sub');
    assert.equal(dir?.is_dir, 'true');
    assert.equal(dir?.is_file, 'false');
    assert.equal(await fields('nope.txt'), null);
    assert.equal(await fields('sub/nope/deeper.txt'), null);
    // Outside the roots: the run ends with 403, the script sees nothing.
    for (const p of ['../outside/secret.txt', 'link-out.txt', '/etc/passwd']) {
      const reply = await httpRequest(stack.page(`stat.${ext}`, { path: p }));
      assert.equal(reply.status, 403, `stat(${p})`);
      noSecret(reply, tree, `stat(${p})`);
      assert.doesNotMatch(reply.body.toString(), /size=/);
    }
  });
}

async function everything(t: TestContext, stack: Stack, tree: Tree): Promise<void> {
  for (const ext of ['lua', 'js'] as const) {
    await downloads(t, stack, tree, ext);
    await traversal(t, stack, tree, ext);
    await statFields(t, stack, tree, ext);
  }
  // Lodestone's log has the refusals, and nothing worse than that.
  const bad = stack.lodestone
    .log()
    .split('\n')
    .filter((l) => /^\S+ error /.test(l));
  assert.deepEqual(bad, []);
}

test('lighttpd (x-sendfile, x-sendfile-docroot) -> lodestone scripts: downloads, ranges, traversal, stat', { timeout }, async (t) => {
  if (!havePrograms(t, 'lighttpd')) return;
  const tree = makeTree(t);
  const stack = await lighttpdStack(t, tree);
  await everything(t, stack, tree);
});

test('nginx (internal location, X-Accel-Redirect) -> lodestone scripts: downloads, ranges, traversal, stat', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const tree = makeTree(t);
  const stack = await nginxStack(t, tree);
  // The internal location is not reachable from outside.
  assert.equal((await httpRequest(stack.server.url(`${ACCEL_PREFIX}/plain.txt`))).status, 404);
  await everything(t, stack, tree);
});

// nginx cannot take a range from the backend, so Lodestone sends those bytes itself; they are
// file bytes, not script output, and a resumable download of a big file must not hit the
// script's output limit: the range streams out after the run, chunk by chunk with backpressure.
test(
  'nginx: a script-chosen range larger than scriptLimits.outputBytes is still delivered',
  { timeout },
  async (t) => {
    if (!havePrograms(t, 'nginx')) return;
    const tree = makeTree(t);
    const huge = randomBytes(3 * 1024 * 1024);
    fs.writeFileSync(path.join(tree.files, 'huge.bin'), huge);
    const lodestone = await startLodestone(t, {
      diagnostic: false,
      args: ['--root', tree.scripts],
      config: {
        files: { roots: [tree.files], accel: { [tree.files]: ACCEL_PREFIX } },
        // A small limit stands in for the default 16 MiB, so the file can stay small.
        scriptLimits: { outputBytes: 1024 * 1024 },
      },
    });
    const nginx = await startNginx(t, {
      fastcgiPass: `127.0.0.1:${lodestone.port}`,
      scriptRoot: tree.scripts,
      server: `location ${ACCEL_PREFIX}/ { internal; alias ${tree.files}/; }`,
    });
    const reply = await httpRequest(nginx.url(`/download.lua?${queryString({ file: 'huge.bin', offset: '10', length: String(2 * 1024 * 1024) })}`), {
      headers: KEY,
    });
    assert.equal(reply.status, 206, `${reply.status}: ${lodestone.log().split('\n').filter((l) => / error /.test(l)).join('\n')}`);
    assert.ok(reply.body.equals(huge.subarray(10, 10 + 2 * 1024 * 1024)));
  },
);

// ---------------------------------------------------------------------------------------------
// fcgi-stat-accel behind lighttpd, configured as the original

/**
 * lighttpd with the seed's setup for every URL but the helper's readiness file: fastcgi for
 * `""`, check-local disable, x-sendfile enable (no x-sendfile-docroot: lighttpd trusts the
 * backend entirely), document root = the files root.
 */
function seedLighttpd(t: TestContext, files: string, port: number): Promise<WebServer> {
  return startLighttpd(t, {
    // The helper's own fastcgi.server entry; never requested.
    prefix: '/lodestone-unused/',
    backend: { host: '127.0.0.1', port },
    config: `
$HTTP["url"] !~ "^/peer-ready\\.txt$" {
  server.document-root = ${lighttpdString(files)}
  fastcgi.server = ( "" => ( "fastcgi-stat-local" => (
    "host" => "127.0.0.1",
    "port" => ${port},
    "check-local" => "disable",
    "x-sendfile" => "enable",
  )))
}
`,
  });
}

const STAT_ACCEL_MODES: Array<[string, (tree: Tree) => string[]]> = [
  ['--stat-accel', (tree) => ['--stat-accel', '--file-root', tree.files]],
  [
    'scripts/stat-accel.lua',
    (tree) => ['--root', path.join(repoRoot, 'scripts'), '--script', path.join(repoRoot, 'scripts/stat-accel.lua'), '--file-root', tree.files],
  ],
];

function openFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

for (const [mode, args] of STAT_ACCEL_MODES) {
  test(`stat-accel behind lighttpd as in the seed (${mode})`, { timeout }, async (t) => {
    if (!havePrograms(t, 'lighttpd')) return;
    const tree = makeTree(t);
    const lodestone = await startLodestone(t, { diagnostic: false, args: args(tree) });
    const lighttpd = await seedLighttpd(t, tree.files, lodestone.port);
    const get = (p: string, headers?: Record<string, string>): Promise<HttpReply> =>
      httpRequest(lighttpd.url(p), headers ? { headers } : {});

    await t.test('files: the bytes, Content-Type, the client Range', async () => {
      const plain = await get('/plain.txt');
      assert.equal(plain.status, 200, plain.body.toString());
      assert.equal(plain.body.toString(), PLAIN);
      assert.equal(plain.headers['content-type'], 'text/plain; charset=utf-8');
      noEscalationLeak(plain, '/plain.txt');
      const big = await get('/big.bin');
      assert.ok(big.body.equals(tree.big));
      const range = await get('/big.bin', { Range: 'bytes=1000-1999' });
      assert.equal(range.status, 206);
      assert.equal(range.headers['content-range'], `bytes 1000-1999/${tree.big.length}`);
      assert.ok(range.body.equals(tree.big.subarray(1000, 2000)));
      // lighttpd decodes the URL into SCRIPT_FILENAME; the X-Sendfile must be encoded again.
      assert.equal((await get('/a%20b.txt')).body.toString(), 'space name\n');
      assert.equal((await get('/a%2520b.txt')).body.toString(), 'literal percent name\n');
      assert.equal((await get(`/${encodeURIComponent(WEIRD)}`)).body.toString(), 'weird name\n');
      const decoy = await get('/%252e%252e/outside/secret.txt');
      noSecret(decoy, tree, 'literal %2e%2e directory');
      assert.equal(decoy.body.toString(), 'DECOY\n');
      assert.equal((await get('/link-in.txt')).body.toString(), PLAIN);
    });

    await t.test('missing 404, directory 403', async () => {
      for (const p of ['/nope.txt', '/sub/nope.txt', '/plain.txt/x']) assert.equal((await get(p)).status, 404, p);
      for (const p of ['/sub', '/sub/', '/']) assert.equal((await get(p)).status, 403, p);
    });

    await t.test('traversal through lighttpd: the URL cannot leave the docroot, a symlink is stopped by Lodestone', async () => {
      // lighttpd resolves ".." (plain or encoded) in the URL before it builds SCRIPT_FILENAME:
      // these name files/outside/secret.txt, which does not exist.
      for (const p of ['/../outside/secret.txt', '/%2e%2e/outside/secret.txt', '/sub/%2E%2E/%2e%2e/outside/secret.txt', '/..%2foutside%2fsecret.txt']) {
        const reply = await get(p);
        noSecret(reply, tree, p);
        assert.equal(reply.status, 404, p);
      }
      // lighttpd itself refuses an encoded NUL.
      const nul = await get('/plain.txt%00.jpg');
      noSecret(nul, tree, '%00');
      assert.equal(nul.status, 400);
      // Symlinks inside the docroot that point out: lighttpd would follow them (no
      // x-sendfile-docroot here, and it does not resolve links anyway); Lodestone refuses.
      for (const p of ['/link-out.txt', '/link-dir-out/secret.txt']) {
        const reply = await get(p);
        noSecret(reply, tree, p);
        assert.equal(reply.status, 403, p);
      }
      assert.match(lodestone.log(), /LS_FILE_FORBIDDEN/);
    });

    await t.test('traversal over raw FastCGI: SCRIPT_FILENAME outside the roots is 403', async () => {
      const attempts = [
        path.join(tree.outside, 'secret.txt'),
        `${tree.files}/../outside/secret.txt`,
        `${tree.files}/sub/../..//outside/secret.txt`,
        path.join(tree.dir, 'files2', 'secret.txt'),
        '/etc/passwd',
        `${tree.files}/plain.txt\0.jpg`,
        // Relative: resolved against the first files root, so this one climbs out of it.
        '../outside/secret.txt',
      ];
      const client = await RawClient.connect({ port: lodestone.port });
      t.after(() => client.close());
      let id = 0;
      for (const file of attempts) {
        id++;
        await client.write(
          fcgiRequest(id, { SCRIPT_FILENAME: file, REQUEST_METHOD: 'GET', SERVER_SOFTWARE: 'lighttpd/1.4.69' }, { keepConn: true }),
        );
        const reply = await client.reply(id);
        const cgi = parseCgi(reply.stdout);
        const what = JSON.stringify(file);
        assert.equal(cgi.status, 403, `${what}: ${cgi.status}`);
        assert.equal(cgi.headers['x-sendfile'], undefined, what);
        assert.ok(!cgi.body.toString('latin1').includes(tree.secret), what);
      }
    });

    await t.test('no descriptor leak (the seed leaked a FILE* per request)', async () => {
      const pid = lodestone.child.pid!;
      await get('/plain.txt');
      const before = openFds(pid);
      for (let i = 0; i < 200; i++) {
        const reply = await get(i % 2 ? '/plain.txt' : '/big.bin');
        assert.equal(reply.status, 200);
      }
      const after = openFds(pid);
      assert.ok(after <= before + 5, `open descriptors went from ${before} to ${after} over 200 requests`);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// stat never blocks: a slow stat (strace delays one file's statx) and an unrelated request

/** How long strace holds the slow file's statx. Only order is asserted; this only has to be long. */
const SLOW_STAT = '4s';

function traceSlow(file: string): string[] {
  // -P: only calls on this path are traced, so only they are delayed.
  return ['-e', 'trace=statx,newfstatat,stat', '-e', `inject=statx:delay_exit=${SLOW_STAT}`, '-P', file];
}

test('a slow stat does not delay an unrelated request (strace-injected statx delay)', { timeout }, async (t) => {
  if (!havePrograms(t, 'lighttpd', 'strace')) return;
  const tree = makeTree(t);
  const slowFile = path.join(tree.files, 'big.bin');

  await t.test('--stat-accel through lighttpd: a stat of another file finishes first', async (t) => {
    const lodestone = await startTracedLodestone(t, { strace: traceSlow(slowFile), args: ['--stat-accel', '--file-root', tree.files] });
    const lighttpd = await seedLighttpd(t, tree.files, lodestone.port);
    let slowDone = false;
    const slow = httpRequest(lighttpd.url('/big.bin')).then((r) => {
      slowDone = true;
      return r;
    });
    // Lodestone is inside the slow stat once one of its threads is stopped by the tracer.
    await waitFor(() => lodestone.stoppedThreads() > 0, 15_000, 'the slow statx to start');
    const fast = await httpRequest(lighttpd.url('/plain.txt'));
    assert.equal(fast.status, 200);
    assert.equal(fast.body.toString(), PLAIN);
    assert.equal(slowDone, false, 'the slow request finished before the unrelated one');
    const done = await slow;
    assert.equal(done.status, 200);
    assert.ok(done.body.equals(tree.big));
    // The delay really hit the slow file's stat (strace marks injected calls DELAYED).
    assert.match(fs.readFileSync(lodestone.traceFile, 'utf8'), /statx\(.*big\.bin.*\(DELAYED\)/);
    await lodestone.stop();
  });

  await t.test('scripts through lighttpd: a Lua stat() waits, a JS page and another stat() do not', async (t) => {
    const lodestone = await startTracedLodestone(t, {
      strace: traceSlow(slowFile),
      args: ['--root', tree.scripts, '--file-root', tree.files],
    });
    const lighttpd = await startLighttpd(t, { prefix: '/s/', backend: { host: '127.0.0.1', port: lodestone.port, docroot: tree.dir } });
    let slowDone = false;
    const slow = httpRequest(lighttpd.url('/s/stat-only.lua?path=big.bin')).then((r) => {
      slowDone = true;
      return r;
    });
    await waitFor(() => lodestone.stoppedThreads() > 0, 15_000, 'the slow statx to start');
    const quick = await httpRequest(lighttpd.url('/s/quick.js'));
    assert.equal(quick.body.toString(), 'quick\n');
    const other = await httpRequest(lighttpd.url('/s/stat-only.lua?path=plain.txt'));
    assert.equal(other.body.toString(), `size=${PLAIN.length}\n`);
    assert.equal(slowDone, false, 'the slow stat finished before the unrelated requests');
    const done = await slow;
    assert.equal(done.status, 200);
    assert.equal(done.body.toString(), `size=${tree.big.length}\n`);
    await lodestone.stop();
  });
});

// ---------------------------------------------------------------------------------------------
// --stat-threads sizes libuv's pool

test('--stat-threads 20 gives the process at least 20 threads, 16 more than the default pool of 4', { timeout }, async (t) => {
  const root = tempDir(t);
  fs.writeFileSync(path.join(root, 'f.txt'), 'f\n');
  const threadsAfterAStat = async (extra: string[], env: NodeJS.ProcessEnv = {}): Promise<number> => {
    const lodestone = await startLodestone(t, { diagnostic: false, args: ['--stat-accel', '--file-root', root, ...extra], env });
    const client = await RawClient.connect({ port: lodestone.port });
    await client.write(fcgiRequest(1, { SCRIPT_FILENAME: path.join(root, 'f.txt'), REQUEST_METHOD: 'GET' }));
    const cgi = parseCgi((await client.reply(1)).stdout);
    client.close();
    assert.equal(cgi.status, 200);
    assert.match(cgi.headers['x-sendfile'] ?? '', /f\.txt$/);
    const count = threadCount(lodestone.child.pid!);
    assert.doesNotMatch(lodestone.log(), /statThreads cannot take effect/);
    await lodestone.stop();
    return count;
  };
  // UV_THREADPOOL_SIZE from the caller's environment must not decide the default run
  // (spawn leaves out variables whose value is undefined).
  const base = await threadsAfterAStat([], { UV_THREADPOOL_SIZE: undefined });
  const twenty = await threadsAfterAStat(['--stat-threads', '20'], { UV_THREADPOOL_SIZE: undefined });
  t.diagnostic(`threads: default ${base}, --stat-threads 20: ${twenty}`);
  assert.ok(twenty >= 20, `${twenty} threads with --stat-threads 20`);
  assert.ok(twenty - base >= 16, `--stat-threads 20 added ${twenty - base} threads to the default's ${base}`);
});
