/**
 * Every process the benchmark starts goes through here, so that none outlives it: each runs in
 * its own process group (nginx workers and pre-forked libfcgi workers included) and the whole
 * group is killed on the way out, on normal exit, on errors and on SIGINT alike.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { accepts } from '../../runtime/listen.js';
import { waitFor } from '../../test/shared/poll.js';

/** A started process (the leader of its own process group). */
export interface Managed {
  readonly name: string;
  readonly child: ChildProcess;
  /** Pid of the leader, and so also the process group id. */
  readonly pid: number;
  /** Where the process's stderr (and stdout, unless captured) goes. */
  readonly logFile: string;
  /** Resolves when the leader has exited. */
  readonly exited: Promise<void>;
  /** "code N" or "signal SIG" once the leader has exited, else null. */
  exitInfo(): string | null;
}

export interface StartOptions {
  /** Pin to this CPU list with taskset (all threads and children inherit it). */
  cpus?: string;
  cwd?: string;
  /** Capture stdout through a pipe (wrk's report) instead of sending it to the log file. */
  captureStdout?: boolean;
}

const live = new Map<number, Managed>();

/** Starts `command args` in a new process group, pinned with taskset when `cpus` is given. */
export function start(name: string, command: string, args: string[], logFile: string, opts: StartOptions = {}): Managed {
  const fd = fs.openSync(logFile, 'a');
  const [cmd, argv] = opts.cpus !== undefined ? ['taskset', ['-c', opts.cpus, command, ...args]] : [command, args];
  let child: ChildProcess;
  try {
    // detached: setsid(), so the child leads a process group we can kill as a whole, and a
    // terminal's Ctrl-C reaches only us (we then kill the groups ourselves, in order).
    child = spawn(cmd, argv, {
      cwd: opts.cwd,
      detached: true,
      stdio: ['ignore', opts.captureStdout ? 'pipe' : fd, fd],
    });
  } finally {
    fs.closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error(`cannot start ${name} (${cmd})`);
  let info: string | null = null;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      info = signal !== null ? `signal ${signal}` : `code ${String(code)}`;
      resolve();
    });
  });
  const managed: Managed = { name, child, pid, logFile, exited, exitInfo: () => info };
  live.set(pid, managed);
  return managed;
}

function groupExists(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

/** Stops a process group: `signal` to all of it, SIGKILL after `graceMs`, then waits until empty. */
export async function stop(m: Managed, signal: NodeJS.Signals = 'SIGTERM', graceMs = 3000): Promise<void> {
  if (!live.has(m.pid)) return;
  killGroup(m.pid, signal);
  await Promise.race([m.exited, sleep(graceMs)]);
  // The leader may be gone while members are not (a worker slow to notice); no survivors.
  killGroup(m.pid, 'SIGKILL');
  const deadline = Date.now() + 2000;
  while (groupExists(m.pid) && Date.now() < deadline) await sleep(20);
  live.delete(m.pid);
}

/** Synchronous last resort for process.on('exit') and signal handlers. */
export function killAllSync(): void {
  for (const pgid of live.keys()) killGroup(pgid, 'SIGKILL');
  live.clear();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The last `lines` lines of a log file, for error messages. */
export function tail(file: string, lines = 20): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * Resolves once `at` (a port on 127.0.0.1, or a unix socket path) accepts a connection; fails
 * early if `m` exits, and with the end of its log either way.
 */
export async function waitForListen(at: number | string, m: Managed, timeoutMs = 10_000): Promise<void> {
  const where = typeof at === 'number' ? `port ${at}` : at;
  await waitFor(
    async () => {
      if (await accepts(typeof at === 'number' ? { host: '127.0.0.1', port: at } : at)) return true;
      const info = m.exitInfo();
      if (info !== null) throw new Error(`${m.name} exited (${info}) before listening on ${where}:\n${tail(m.logFile)}`);
      return false;
    },
    timeoutMs,
    () => `${m.name} to listen on ${where}:\n${tail(m.logFile)}`,
  );
}

/**
 * `count` distinct free loopback ports. All are held open until all are picked, so the kernel
 * cannot hand out the same one twice; another program could still take one before we bind it,
 * which the start-up checks would then report.
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
      });
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}
