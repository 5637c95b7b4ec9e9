/**
 * A real redis-server for integration tests: on a unix socket in a temp dir (and optionally a
 * free loopback port), no persistence, in its own process group, stopped in `t.after` even when
 * the test fails. It can be stopped and started again on the same socket, or paused with
 * SIGSTOP, to play the outages the content cache must survive. `redisRaw` is a minimal RESP
 * client that reads replies as bytes, to check what is really stored, independently of the
 * client library under test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { requireProgram } from './lodestone.js';
import { freePort, signalPid, within } from './peers.js';

/** How long redis-server may take to answer its first PING; generous for a loaded CI machine. */
const READY_TIMEOUT_MS = 15_000;

/** How to start redis-server. */
export interface RedisOptions {
  /** Also listen on a free 127.0.0.1 port and report it as `url`. */
  tcp?: boolean;
}

/** A running (or stopped, or paused) redis-server. */
export interface RedisServer {
  /** The unix socket path; the same across stop() and start(). */
  readonly socket: string;
  /** `redis://127.0.0.1:PORT` with `tcp: true`, else null. */
  readonly url: string | null;
  /** The current server's pid (0 while stopped). */
  readonly pid: number;
  /** SIGTERM (after SIGCONT, should it be paused); waits for exit. */
  stop(): Promise<void>;
  /** Starts a fresh (empty) server on the same socket and port; waits until it answers. */
  start(): Promise<void>;
  /** SIGSTOP: the socket stays open and accepts connections, nothing is answered. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** Server output so far (for failure messages). */
  output(): string;
}

/**
 * Starts redis-server, or returns null after marking the test skipped when it is not installed
 * (a failure under CI=true); callers return early on null.
 */
export async function startRedis(t: TestContext, opts: RedisOptions = {}): Promise<RedisServer | null> {
  const program = requireProgram(t, 'redis-server');
  if (!program) return null;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lodestone-redis-'));
  const socket = path.join(dir, 'redis.sock');
  let port = opts.tcp ? await freePort() : 0;
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--unixsocket', socket,
    '--unixsocketperm', '700',
    '--save', '',
    '--appendonly', 'no',
    '--dir', dir,
    '--logfile', '',
  ];
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  let output = '';

  const stop = async (): Promise<void> => {
    const current = child;
    if (!current?.pid) return;
    const pgid = current.pid;
    if (current.exitCode === null && current.signalCode === null) {
      // A stopped process keeps SIGTERM pending until it runs again.
      signalPid(pgid, 'SIGCONT');
      signalPid(pgid, 'SIGTERM');
    }
    if (!(await within(exited, 10_000))) signalPid(-pgid, 'SIGKILL');
    await exited;
    child = null;
  };

  const start = async (): Promise<void> => {
    if (child) throw new Error('redis-server is already running');
    // Its own process group, so a SIGKILL to the group cannot miss a forked child.
    const spawned = spawn(program, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    child = spawned;
    exited = new Promise<void>((resolve) => spawned.once('exit', () => resolve()));
    spawned.once('error', () => {});
    spawned.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
    spawned.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (spawned.exitCode !== null || spawned.signalCode !== null) {
        child = null;
        throw new Error(`redis-server exited (${spawned.exitCode ?? spawned.signalCode}):\n${output}`);
      }
      try {
        if ((await redisRaw(socket, ['PING'], 1_000)) === 'PONG') return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`redis-server did not answer PING within ${READY_TIMEOUT_MS} ms:\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  };

  t.after(async () => {
    await stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  for (let attempt = 1; ; attempt++) {
    try {
      await start();
      break;
    } catch (err) {
      // Another process took the free port before redis-server bound it: pick another.
      if (!opts.tcp || attempt >= 5 || !/Address already in use/i.test(output)) throw err;
      port = await freePort();
      args[1] = String(port);
      output = '';
    }
  }
  return {
    socket,
    url: opts.tcp ? `redis://127.0.0.1:${port}` : null,
    get pid() {
      return child?.pid ?? 0;
    },
    stop,
    start,
    pause: () => child?.pid && signalPid(child.pid, 'SIGSTOP'),
    resume: () => child?.pid && signalPid(child.pid, 'SIGCONT'),
    output: () => output,
  };
}

/** A RESP2 reply: simple strings as string, bulk strings as Buffer, errors as Error values. */
export type RawReply = string | Buffer | number | null | Error | RawReply[];

/**
 * Sends one command on a fresh connection to the unix socket and resolves its reply, with bulk
 * strings as raw bytes. Rejects on a connection error or after `timeoutMs`.
 */
export function redisRaw(socket: string, args: ReadonlyArray<string | Buffer>, timeoutMs = 5_000): Promise<RawReply> {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = typeof arg === 'string' ? Buffer.from(arg, 'utf8') : arg;
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(socket);
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => conn.destroy(new Error(`no reply to ${String(args[0])} within ${timeoutMs} ms`)), timeoutMs);
    conn.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    conn.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const parsed = parseReply(received, 0);
      if (!parsed) return;
      clearTimeout(timer);
      conn.end();
      resolve(parsed.reply);
    });
    conn.write(Buffer.concat(parts));
  });
}

function parseReply(buf: Buffer, at: number): { reply: RawReply; end: number } | null {
  const lineEnd = buf.indexOf('\r\n', at);
  if (lineEnd < 0) return null;
  const line = buf.toString('utf8', at + 1, lineEnd);
  const next = lineEnd + 2;
  switch (String.fromCharCode(buf[at]!)) {
    case '+':
      return { reply: line, end: next };
    case '-':
      return { reply: new Error(line), end: next };
    case ':':
      return { reply: Number(line), end: next };
    case '$': {
      const length = Number(line);
      if (length < 0) return { reply: null, end: next };
      if (buf.length < next + length + 2) return null;
      return { reply: Buffer.from(buf.subarray(next, next + length)), end: next + length + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { reply: null, end: next };
      const items: RawReply[] = [];
      let end = next;
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, end);
        if (!item) return null;
        items.push(item.reply);
        end = item.end;
      }
      return { reply: items, end };
    }
    default:
      throw new Error(`unexpected RESP reply ${JSON.stringify(buf.toString('latin1', at, lineEnd))}`);
  }
}
