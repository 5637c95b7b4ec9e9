/**
 * Running as an unprivileged user (issue 17, item 2), as php-fpm's pool `user`: started as root,
 * Lodestone binds its socket and prepares its files, then every process that runs scripts is
 * `--user` (checked in /proc/PID/status), a file that user cannot read is not reached through
 * stat() or sendfile(), log files and the bytecode directory stay writable (after a logrotate
 * too), and a root start without a user says LS_RUNNING_AS_ROOT once. These tests need root, as
 * CI is; elsewhere they skip (in CI a non-root run fails them).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { parseCgi, RawClient, request } from '../helpers/fcgi-client.js';
import { cliPath, startLodestone, tempDir, type Lodestone } from '../helpers/lodestone.js';
import { signalPid } from '../helpers/peers.js';
import { waitFor } from '../shared/poll.js';

const timeout = 30_000;

/** True when running as root; else skips the test (fails it in CI, which runs as root). */
function asRoot(t: TestContext): boolean {
  if (process.getuid?.() === 0) return true;
  if (process.env.CI === 'true') throw new Error('CI runs as root: these tests must run');
  t.skip('needs root');
  return false;
}

/** The unprivileged user the tests switch to, with its ids from the system's own tools. */
const user = 'nobody';
const ids = (): { uid: number; gid: number } => ({
  uid: Number(execFileSync('id', ['-u', user], { encoding: 'utf8' })),
  gid: Number(execFileSync('id', ['-g', user], { encoding: 'utf8' })),
});

/** Real, effective, saved and filesystem ids of a process, from /proc/PID/status. */
function credentials(pid: number): { uid: number[]; gid: number[]; groups: number[] } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number[] =>
    (new RegExp(`^${name}:(.*)$`, 'm').exec(status)?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
  return { uid: field('Uid'), gid: field('Gid'), groups: field('Groups') };
}

/** The live children of `pid` (the primary's workers). */
function children(pid: number): number[] {
  const out: number[] = [];
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    const text = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    if (text !== '') out.push(...text.split(/\s+/).map(Number));
  }
  return out;
}

/** A site the unprivileged user can read (tempDir is 0755), with a script that stats or sends `f`. */
function site(t: TestContext): { dir: string; www: string } {
  const dir = tempDir(t, 'lodestone-priv-');
  const www = path.join(dir, 'www');
  fs.mkdirSync(www, { mode: 0o755 });
  fs.writeFileSync(
    path.join(www, 'file.lua'),
    ['local st = stat(request.query.f)', 'print(st and ("found " .. st.size) or "none")', 'if request.query.send then sendfile(request.query.f) end'].join('\n'),
    { mode: 0o644 },
  );
  fs.writeFileSync(path.join(www, 'fail.lua'), 'error("boom")\n', { mode: 0o644 });
  fs.writeFileSync(path.join(www, 'public.txt'), 'public\n', { mode: 0o644 });
  fs.writeFileSync(path.join(www, 'secret.txt'), 'root only\n', { mode: 0o600 });
  return { dir, www };
}

async function get(ls: Lodestone, script: string, query = ''): Promise<{ status: number; body: string; headers: Record<string, string> }> {
  const client = await RawClient.connect({ path: ls.socketPath! });
  try {
    await client.write(request(1, { SCRIPT_FILENAME: script, REQUEST_METHOD: 'GET', QUERY_STRING: query }));
    const cgi = parseCgi((await client.reply(1)).stdout);
    return { status: cgi.status, body: cgi.body.toString(), headers: cgi.headers };
  } finally {
    client.close();
  }
}

/** Starts `serve` with its log in `errorLog`; resolves once the banner is there. Always stopped. */
async function startLogged(t: TestContext, args: string[], errorLog: string): Promise<{ pid: number; socket: string }> {
  const child = spawn(process.execPath, [cliPath, 'serve', ...args, '--log-file', errorLog], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(killer);
  });
  const banner = await waitFor(
    () => {
      if (child.exitCode !== null) throw new Error(`lodestone exited ${child.exitCode}: ${stderr}`);
      return /lodestone listening listen=unix:(\S+)/.exec(fs.existsSync(errorLog) ? fs.readFileSync(errorLog, 'utf8') : '')?.[1];
    },
    10_000,
    () => `no banner in ${errorLog}; stderr: ${stderr}`,
  );
  return { pid: child.pid!, socket: banner };
}

async function getFrom(socket: string, script: string, query = ''): Promise<{ status: number; body: string }> {
  const client = await RawClient.connect({ path: socket });
  try {
    await client.write(request(1, { SCRIPT_FILENAME: script, REQUEST_METHOD: 'GET', QUERY_STRING: query }));
    const cgi = parseCgi((await client.reply(1)).stdout);
    return { status: cgi.status, body: cgi.body.toString() };
  } finally {
    client.close();
  }
}

test('--user: every worker is the user (real, effective, saved ids; groups), the primary stays root; socket, logs and bytecode are the user\'s, and stay so after a logrotate', { timeout }, async (t) => {
  if (!asRoot(t)) return;
  const { uid, gid } = ids();
  const { dir, www } = site(t);
  const logDir = path.join(dir, 'log');
  fs.mkdirSync(logDir, { mode: 0o755 });
  const errorLog = path.join(logDir, 'error.log');
  const accessLog = path.join(logDir, 'access.log');
  const cacheDir = path.join(dir, 'bytecode');
  const { pid, socket } = await startLogged(
    t,
    ['--listen', `unix:${path.join(dir, 'ls.sock')}`, '--root', www, '--workers', '2', '--user', user, '--access-log', accessLog, '--cache-dir', cacheDir],
    errorLog,
  );
  // A worker switches before it listens: once both say so, their ids are final.
  await waitFor(() => ((fs.readFileSync(errorLog, 'utf8').match(/worker listening/g) ?? []).length === 2 ? true : undefined), 10_000, () => fs.readFileSync(errorLog, 'utf8'));
  const workers = children(pid);
  assert.equal(workers.length, 2);
  for (const w of workers) {
    const c = credentials(w);
    assert.deepEqual(c.uid, [uid, uid, uid, uid], `worker ${w} Uid`);
    assert.deepEqual(c.gid, [gid, gid, gid, gid], `worker ${w} Gid`);
    assert.ok(!c.groups.includes(0), `worker ${w} keeps no root group: ${c.groups.join(' ')}`);
  }
  assert.equal(credentials(pid).uid[1], 0, 'the primary keeps root (it rebinds nothing, but reopens logs and forks)');
  const owner = (file: string): string => `${fs.statSync(file).uid}:${fs.statSync(file).gid}`;
  assert.equal(owner(socket), `${uid}:${gid}`, 'the socket belongs to the user by default (php-fpm listen.owner)');

  const ok = await getFrom(socket, path.join(www, 'file.lua'), `f=${path.join(www, 'public.txt')}`);
  assert.equal(ok.status, 200);
  assert.equal(ok.body, 'found 7\n');
  const bytecode = fs.readdirSync(cacheDir);
  assert.ok(bytecode.length > 0, 'the worker wrote bytecode');
  for (const f of bytecode) assert.equal(owner(path.join(cacheDir, f)), `${uid}:${gid}`);
  await waitFor(() => (fs.readFileSync(accessLog, 'utf8').includes('file.lua') ? true : undefined), 5000, () => 'access line');
  assert.equal(owner(accessLog), `${uid}:${gid}`);

  // logrotate: rename, then SIGUSR2; the primary recreates the files for the workers to reopen.
  fs.renameSync(errorLog, `${errorLog}.1`);
  fs.renameSync(accessLog, `${accessLog}.1`);
  signalPid(pid, 'SIGUSR2');
  await waitFor(() => (fs.existsSync(errorLog) && fs.readFileSync(errorLog, 'utf8').includes('log files reopened') ? true : undefined), 5000, () => 'reopen line');
  // A worker reopens when the primary's message reaches it: ask until a failing run's line (a
  // worker's write, as the user) is in the new file. A worker that could not reopen would keep
  // writing to error.log.1 and say "cannot reopen" on stderr.
  // Each worker says it reopened, in the new file: written as the user, after its reopen.
  await waitFor(() => ((fs.readFileSync(errorLog, 'utf8').match(/worker reopened its log files/g) ?? []).length === 2 ? true : undefined), 10_000, () => fs.readFileSync(errorLog, 'utf8'));
  for (let i = 0; i < 4; i++) assert.equal((await getFrom(socket, path.join(www, 'fail.lua'))).status, 500);
  await waitFor(() => (/LS_SCRIPT_ERROR.*fail\.lua/.test(fs.readFileSync(errorLog, 'utf8')) ? true : undefined), 5000, () => fs.readFileSync(errorLog, 'utf8'));
  await waitFor(() => (fs.existsSync(accessLog) && fs.readFileSync(accessLog, 'utf8').includes('fail.lua') ? true : undefined), 5000, () => 'access line after the rotation');
  assert.doesNotMatch(fs.readFileSync(`${errorLog}.1`, 'utf8'), /fail\.lua/, 'nothing went to the rotated file');
  assert.equal(owner(errorLog), `${uid}:${gid}`);
  assert.equal(owner(accessLog), `${uid}:${gid}`);
  assert.doesNotMatch(fs.readFileSync(errorLog, 'utf8'), /cannot (re)?open|EACCES/);
});

test('--user with --workers 0: the one process binds, then drops; a root-only file is not reached through stat() or sendfile(), which root reaches', { timeout }, async (t) => {
  if (!asRoot(t)) return;
  const { uid } = ids();
  const { dir, www } = site(t);
  const secret = path.join(www, 'secret.txt');
  const asUser = await startLodestone(t, { listen: `unix:${path.join(dir, 'user.sock')}`, diagnostic: false, args: ['--root', www, '--user', user] });
  assert.equal(credentials(asUser.child.pid!).uid[0], uid);
  assert.deepEqual(credentials(asUser.child.pid!).uid, [uid, uid, uid, uid]);
  const script = path.join(www, 'file.lua');
  assert.equal((await get(asUser, script, `f=${path.join(www, 'public.txt')}&send=1`)).headers['x-sendfile'], path.join(www, 'public.txt'));
  assert.equal((await get(asUser, script, `f=${secret}`)).status, 403);
  const sent = await get(asUser, script, `f=${secret}&send=1`);
  assert.equal(sent.status, 403);
  assert.equal(sent.headers['x-sendfile'], undefined);
  await asUser.waitForLog(/LS_FILE_FORBIDDEN .*secret\.txt.*not readable/);

  // The control: the same site served as root reaches the file, so the refusal above is the user's.
  const asRootLs = await startLodestone(t, { listen: `unix:${path.join(dir, 'root.sock')}`, diagnostic: false, args: ['--root', www] });
  const control = await get(asRootLs, script, `f=${secret}&send=1`);
  assert.equal(control.status, 200);
  assert.equal(control.headers['x-sendfile'], secret);
});

test('a root start without --user logs LS_RUNNING_AS_ROOT once (the primary, not each worker); with --user it does not', { timeout }, async (t) => {
  if (!asRoot(t)) return;
  const { dir, www } = site(t);
  const plain = await startLodestone(t, { listen: `unix:${path.join(dir, 'a.sock')}`, diagnostic: false, args: ['--root', www, '--workers', '2'] });
  await plain.waitForLog(/worker listening/);
  await waitFor(() => ((plain.log().match(/worker listening/g) ?? []).length === 2 ? true : undefined), 10_000, () => plain.log());
  assert.equal((plain.log().match(/LS_RUNNING_AS_ROOT/g) ?? []).length, 1, plain.log());
  const dropped = await startLodestone(t, { listen: `unix:${path.join(dir, 'b.sock')}`, diagnostic: false, args: ['--root', www, '--workers', '2', '--user', user] });
  await waitFor(() => ((dropped.log().match(/worker listening/g) ?? []).length === 2 ? true : undefined), 10_000, () => dropped.log());
  assert.doesNotMatch(dropped.log(), /LS_RUNNING_AS_ROOT/);
});
