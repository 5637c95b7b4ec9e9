/**
 * A socket that cannot be bound as asked stops Lodestone with LS_LISTEN_FAILED and a non-zero
 * exit, in every mode, and nothing listens anywhere else meanwhile (issue 17, item 1). Before
 * the fix, under the process manager a busy TCP port gave a worker listening on 0.0.0.0 at a
 * random port: libuv defers a bind's EADDRINUSE to listen(), which only the workers called, on
 * an unbound socket. The sockets each process of the run listens on are read from /proc (its fds'
 * inodes against /proc/net/{tcp,tcp6,unix}), polled until it exits, so a listener that existed
 * for a moment counts too.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { procNet } from '../../runtime/listen.js';
import { cliPath, tempDir } from '../helpers/lodestone.js';
import { killAfter, pidsWithArg } from '../helpers/peers.js';

const timeout = 30_000;

/** A TCP port on 127.0.0.1 held by a listener of this test process until the test ends. */
async function busyPort(t: TestContext): Promise<number> {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  return (holder.address() as net.AddressInfo).port;
}

/** A live unix socket (someone answers on it) in a temp dir, until the test ends. */
async function liveUnixSocket(t: TestContext): Promise<string> {
  const file = path.join(tempDir(t), 'live.sock');
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(file, resolve));
  t.after(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  return file;
}

/** Listening sockets of `pid`, as "tcp 0.0.0.0:41803" or "unix /path" lines. */
function listenersOf(pid: number): string[] {
  const inodes = new Set<string>();
  try {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      const m = /^socket:\[(\d+)\]$/.exec(safeReadlink(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    }
  } catch {
    return []; // gone
  }
  const found: string[] = [];
  for (const table of ['tcp', 'tcp6']) {
    for (const f of procNet(table)) {
      if (f[3] === '0A' && inodes.has(f[9]!)) found.push(`${table} ${hexAddress(f[1]!)}`);
    }
  }
  for (const f of procNet('unix')) {
    if ((parseInt(f[3] ?? '0', 16) & 0x10000) !== 0 && inodes.has(f[6]!)) found.push(`unix ${f[7] ?? '(unnamed)'}`);
  }
  return found;
}

function safeReadlink(p: string): string {
  try {
    return fs.readlinkSync(p);
  } catch {
    return '';
  }
}

/** "0100007F:3039" -> "127.0.0.1:12345"; IPv6 addresses are kept in hex. */
function hexAddress(hex: string): string {
  const [ip, port] = hex.split(':');
  const p = parseInt(port!, 16);
  if (ip!.length !== 8) return `[${ip}]:${p}`;
  const b = Buffer.from(ip!, 'hex');
  return `${b[3]}.${b[2]}.${b[1]}.${b[0]}:${p}`;
}

interface Outcome {
  code: number | null;
  stderr: string;
  /** Every listener any process of the run had while it ran. */
  listeners: Set<string>;
}

/** Runs `lodestone serve ARGS` until it exits (at most 15 s), watching its processes' listeners. */
async function serve(t: TestContext, args: string[]): Promise<Outcome> {
  const marker = tempDir(t, 'lodestone-listen-');
  const child = spawn(process.execPath, [cliPath, 'serve', '--root', marker, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  killAfter(t, marker);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const listeners = new Set<string>();
  const deadline = Date.now() + 15_000;
  let code: number | null | undefined;
  while (code === undefined && Date.now() < deadline) {
    for (const pid of pidsWithArg(marker)) for (const l of listenersOf(pid)) listeners.add(l);
    code = await Promise.race([exited, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 50))]);
  }
  if (code === undefined) {
    child.kill('SIGKILL');
    assert.fail(`lodestone ${args.join(' ')} still runs after 15 s; listening on ${[...listeners].join(', ') || 'nothing'}:\n${stderr}`);
  }
  return { code, stderr, listeners };
}

function assertRefused(out: Outcome, what: string): void {
  // 1, as README says: 2 is only for a bad command line or configuration.
  assert.equal(out.code, 1, `exit code: ${out.stderr}`);
  assert.match(out.stderr, /LS_LISTEN_FAILED/, `stderr: ${out.stderr}`);
  assert.match(out.stderr, new RegExp(what.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  assert.deepEqual([...out.listeners], [], 'nothing listened anywhere meanwhile');
}

for (const workers of ['0', '2']) {
  test(`a busy TCP port with --workers ${workers}: LS_LISTEN_FAILED, exit 1, nothing listens`, { timeout }, async (t) => {
    const port = await busyPort(t);
    const out = await serve(t, ['--listen', `tcp:127.0.0.1:${port}`, '--diagnostic', '--workers', workers]);
    assertRefused(out, `127.0.0.1:${port}`);
    assert.match(out.stderr, /EADDRINUSE/);
  });

  test(`a live unix socket with --workers ${workers}: LS_LISTEN_FAILED, exit 1, nothing listens`, { timeout }, async (t) => {
    const file = await liveUnixSocket(t);
    const out = await serve(t, ['--listen', `unix:${file}`, '--diagnostic', '--workers', workers]);
    assertRefused(out, file);
  });

  test(`fd:0 that is not a listening socket with --workers ${workers}: LS_LISTEN_FAILED, nothing listens`, { timeout }, async (t) => {
    const out = await serve(t, ['--listen', 'fd:0', '--diagnostic', '--workers', workers]);
    assertRefused(out, 'fd 0');
  });
}

test('--http on a busy port: LS_LISTEN_FAILED, exit 1, nothing listens, no temp dir left', { timeout }, async (t) => {
  const port = await busyPort(t);
  const before = new Set(fs.readdirSync('/tmp').filter((n) => n.startsWith('lodestone-dev-')));
  const out = await serve(t, ['--http', `127.0.0.1:${port}`]);
  assertRefused(out, `127.0.0.1:${port}`);
  const left = fs.readdirSync('/tmp').filter((n) => n.startsWith('lodestone-dev-') && !before.has(n));
  assert.deepEqual(left, [], 'the dev server removed its temp dir');
});
