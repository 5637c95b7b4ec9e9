/**
 * A real PHP-FPM for tests: the newest `php-fpm` installed, with a config generated into a temp
 * dir (pm = static, a unix socket there or a loopback port), the test's PHP scripts in a docroot
 * beside it, in its own process group, always stopped in `t.after`. Without php.ini (`-n`), so
 * what a test sees does not depend on the distribution's settings: log_errors is on and no
 * error_log is set, which sends PHP's log lines to the client as FCGI_STDERR.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { accepts } from '../../runtime/listen.js';
import { waitFor } from '../shared/poll.js';
import { findPhpFpm } from '../shared/programs.js';
import { freePort, groupAlive, readText, signalPid, within } from './peers.js';

export interface PhpFpmOptions {
  /** pm.max_children (pm = static); default 2. */
  maxChildren?: number;
  /** pm.max_requests: a child exits after this many requests (0, the default: never). */
  maxRequests?: number;
  /** Listen on a free 127.0.0.1 port instead of a unix socket. */
  tcp?: boolean;
  /** Scripts written into the docroot: file name -> PHP source. */
  scripts?: Record<string, string>;
  /** php.ini settings passed as `-d name=value`. */
  ini?: Record<string, string>;
  /** Extra lines for the pool section of php-fpm.conf. */
  pool?: string[];
}

/** A running php-fpm. */
export interface PhpFpm {
  /** The unix socket path (also when stopped); '' with `tcp`. */
  readonly socket: string;
  /** The TCP port with `tcp`, else 0. */
  readonly port: number;
  /** As a backend server spec: `unix:/path` or `127.0.0.1:PORT`. */
  readonly address: string;
  /** The temp dir with config, socket, logs and the docroot. */
  readonly dir: string;
  readonly docRoot: string;
  /** The master's pid (changes on start()). */
  readonly pid: number;
  /** Absolute path of a script in the docroot, for SCRIPT_FILENAME. */
  script(name: string): string;
  /** php-fpm's own log (start-up, children's exits; not the scripts' error_log lines). */
  errorLog(): string;
  /** Stops php-fpm (SIGTERM, then SIGKILL to the group). */
  stop(): Promise<void>;
  /** Starts it again, on the same socket or port, after stop(). */
  start(): Promise<void>;
}

const READY_TIMEOUT_MS = 20_000;
const PORT_ATTEMPTS = 5;

/**
 * The php-fpm binary, or null after marking the test skipped (a failure under CI=true), as
 * `requireProgram` does for other peers; callers return early on null.
 */
export function requirePhpFpm(t: TestContext): string | null {
  const found = findPhpFpm();
  if (found) return found;
  if (process.env.CI === 'true') throw new Error('php-fpm is not installed; .ci/run must install it');
  t.skip('php-fpm is not installed');
  return null;
}

/** Starts php-fpm and resolves once its socket accepts connections. */
export async function startPhpFpm(t: TestContext, opts: PhpFpmOptions = {}): Promise<PhpFpm> {
  const program = findPhpFpm();
  if (!program) throw new Error('php-fpm is not installed (call requirePhpFpm first)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lodestone-php-fpm-'));
  // Children may run as another user and must reach the socket and scripts.
  fs.chmodSync(dir, 0o755);
  const docRoot = path.join(dir, 'www');
  fs.mkdirSync(docRoot);
  for (const [name, source] of Object.entries(opts.scripts ?? {})) fs.writeFileSync(path.join(docRoot, name), source);
  const socket = opts.tcp ? '' : path.join(dir, 'php-fpm.sock');
  const configFile = path.join(dir, 'php-fpm.conf');
  const logFile = path.join(dir, 'php-fpm.log');
  const root = process.getuid?.() === 0;
  const args = ['-F', ...(root ? ['-R'] : []), '-n', '-y', configFile];
  for (const [name, value] of Object.entries(opts.ini ?? {})) args.push('-d', `${name}=${value}`);

  let port = 0;
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();

  const writeConfig = (): void => {
    const lines = [
      '; Written by test/helpers/php-fpm.ts.',
      '[global]',
      `pid = ${path.join(dir, 'php-fpm.pid')}`,
      `error_log = ${logFile}`,
      'daemonize = no',
      '[test]',
      // As root php-fpm wants a user for its children, and -R to accept root itself.
      ...(root ? ['user = root'] : []),
      `listen = ${opts.tcp ? `127.0.0.1:${port}` : socket}`,
      'pm = static',
      `pm.max_children = ${opts.maxChildren ?? 2}`,
      `pm.max_requests = ${opts.maxRequests ?? 0}`,
      'catch_workers_output = yes',
      ...(opts.pool ?? []),
      '',
    ];
    fs.writeFileSync(configFile, lines.join('\n'));
  };

  const stop = async (): Promise<void> => {
    const c = child;
    child = null;
    if (c?.pid === undefined) return;
    const pgid = c.pid;
    if (c.exitCode === null && c.signalCode === null) signalPid(pgid, 'SIGTERM');
    if (!(await within(exited, 5_000))) signalPid(-pgid, 'SIGKILL');
    await exited;
    // Children the master left behind still hold the group id, so it cannot have been reused.
    if (groupAlive(pgid)) {
      signalPid(-pgid, 'SIGKILL');
      const deadline = Date.now() + 5_000;
      while (groupAlive(pgid) && Date.now() < deadline) await sleep(20);
    }
  };

  const start = async (): Promise<void> => {
    if (child !== null) throw new Error('php-fpm is already running');
    for (let attempt = 1; ; attempt++) {
      if (opts.tcp) port = await freePort();
      writeConfig();
      fs.rmSync(logFile, { force: true });
      // Its own process group, so a SIGKILL to the group also reaches the children.
      const c = spawn(program, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      c.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
      c.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
      c.once('error', () => {});
      exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
      child = c;
      const ready = await untilAccepting(c, opts.tcp ? { host: '127.0.0.1', port } : { path: socket });
      if (ready) return;
      await stop();
      const log = `${output}\n${readText(logFile)}`;
      if (opts.tcp && /Address already in use/i.test(log) && attempt < PORT_ATTEMPTS) continue;
      throw new Error(`php-fpm did not start:\n${log}\n--- config:\n${readText(configFile)}`);
    }
  };

  // One hook stops php-fpm, then removes its dir: hooks run in order, and the dir must outlive it.
  t.after(async () => {
    await stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await start();
  return {
    socket,
    get port() {
      return port;
    },
    get address() {
      return opts.tcp ? `127.0.0.1:${port}` : `unix:${socket}`;
    },
    dir,
    docRoot,
    get pid() {
      return child?.pid ?? 0;
    },
    script: (name) => path.join(docRoot, name),
    errorLog: () => readText(logFile),
    stop,
    start,
  };
}

// False when php-fpm exited first or never accepted. A connection that php-fpm accepts is closed
// at once; the child that took it goes back to accept().
async function untilAccepting(child: ChildProcess, target: net.NetConnectOpts): Promise<boolean> {
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null;
  try {
    await waitFor(async () => exited() || (await accepts(target)), READY_TIMEOUT_MS, 'php-fpm to accept');
  } catch {
    return false;
  }
  return !exited();
}
