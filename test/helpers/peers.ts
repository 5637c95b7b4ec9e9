/**
 * Launches the real peer programs Lodestone sits behind (nginx, lighttpd, systemd-socket-activate)
 * for integration tests, and the small HTTP client that talks to them. Every peer runs on a
 * loopback port picked at start, in its own process group, with all its files in a scratch dir;
 * it is stopped (and its whole group killed if need be) in `t.after`, even when the test fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { requireProgram } from './lodestone.js';
import { waitFor } from '../shared/poll.js';
import { findProgram } from '../shared/programs.js';

/** How long a peer may take to answer its first request; generous for a loaded CI machine. */
const READY_TIMEOUT_MS = 30_000;
/** Attempts at a fresh port when another process grabbed the one picked (EADDRINUSE). */
const PORT_ATTEMPTS = 5;
const ADDRESS_IN_USE = /Address already in use/i;
/** A static file in every docroot that answers readiness polls. */
const READY_FILE = 'peer-ready.txt';

/**
 * True when every program is installed. Otherwise the test is marked skipped (locally) or fails
 * (CI=true), as {@link requireProgram} does; callers return early on false.
 */
export function havePrograms(t: TestContext, ...programs: string[]): boolean {
  return programs.every((program) => requireProgram(t, program) !== null);
}

/**
 * A TCP port free on 127.0.0.1 right now, for programs that cannot listen on port 0 and report
 * the port. Another process may take it before the caller binds it: callers retry on EADDRINUSE.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** What an HTTP request got back. */
export interface HttpReply {
  status: number;
  /** Header names in lower case. */
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface HttpOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  timeoutMs?: number;
}

/**
 * One HTTP/1.1 request on its own connection (no agent, so no pooled socket outlives the test),
 * resolving to the status, headers and the exact body bytes.
 */
export function httpRequest(url: string, opts: HttpOptions = {}): Promise<HttpReply> {
  const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body;
  const headers: Record<string, string> = { ...opts.headers };
  if (body !== undefined) headers['Content-Length'] = String(body.length);
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'GET', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.setTimeout(opts.timeoutMs ?? 30_000, () => req.destroy(new Error(`HTTP request to ${url} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Reads a file that may not exist yet. */
export function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------------------------------------
// Processes

/** A program running in its own process group, with its stdout and stderr collected. */
interface Spawned {
  readonly child: ChildProcess;
  output(): string;
  /** Sends `signal`, waits for exit, then makes sure nothing is left in the process group. */
  stop(signal: NodeJS.Signals): Promise<void>;
}

function spawnInGroup(program: string, args: string[]): Spawned {
  // Its own process group: a SIGKILL to the group also reaches what it forked (nginx workers,
  // a lodestone lighttpd spawned), which would otherwise outlive a master killed outright.
  const child = spawn(program, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('error', () => {});
  let stopping: Promise<void> | null = null;
  const stop = (signal: NodeJS.Signals): Promise<void> => {
    stopping ??= (async () => {
      const pgid = child.pid;
      if (pgid === undefined) return;
      if (child.exitCode === null && child.signalCode === null) signalPid(pgid, signal);
      if (!(await within(exited, 10_000))) signalPid(-pgid, 'SIGKILL');
      await exited;
      // Children the leader left behind get a moment to follow it, then are killed.
      if (!(await groupEmpty(pgid, 5_000))) {
        signalPid(-pgid, 'SIGKILL');
        await groupEmpty(pgid, 5_000);
      }
    })();
    return stopping;
  };
  return { child, output: () => output, stop };
}

/** Sends `signal` to `pid` (negative: a process group), ignoring one that is already gone. */
export function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** True when `promise` settles within `ms`, false on timeout. */
export async function within(promise: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

interface ProcInfo {
  pid: number;
  pgid: number;
  zombie: boolean;
  args: string[];
}

// Linux /proc, because the processes to find may have been forked by a peer (cgi-fcgi -start,
// lighttpd's bin-path) and never been our children. Zombies count as gone: an init that does not
// reap orphans must not make cleanup wait forever.
function processes(): ProcInfo[] {
  const out: ProcInfo[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return out;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command name is in parentheses and may contain spaces; the fields after it are fixed.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const args = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
      out.push({ pid: Number(entry), pgid: Number(fields[2]), zombie: fields[0] === 'Z', args });
    } catch {
      // exited while we looked
    }
  }
  return out;
}

async function groupEmpty(pgid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!processes().some((p) => p.pgid === pgid && !p.zombie)) return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}

/** True while a process of group `pgid` is alive (not a zombie). */
export function groupAlive(pgid: number): boolean {
  return processes().some((p) => p.pgid === pgid && !p.zombie);
}

/**
 * Pids of live processes (not this one) with an argument containing `marker`; give them a unique
 * temp path as an argument to find them again. For processes a peer started on our behalf.
 */
export function pidsWithArg(marker: string): number[] {
  return processes()
    .filter((p) => p.pid !== process.pid && !p.zombie && p.args.some((a) => a.includes(marker)))
    .map((p) => p.pid);
}

/**
 * Stops every process whose arguments contain `marker` at the end of the test: SIGTERM, then
 * SIGKILL after 5 s. Found by pid through /proc, never by a name pattern.
 */
export function killAfter(t: TestContext, marker: string): void {
  t.after(async () => {
    const pids = pidsWithArg(marker);
    for (const pid of pids) signalPid(pid, 'SIGTERM');
    const deadline = Date.now() + 5_000;
    while (pidsWithArg(marker).length > 0 && Date.now() < deadline) await sleep(50);
    for (const pid of pidsWithArg(marker)) signalPid(pid, 'SIGKILL');
  });
}

// ---------------------------------------------------------------------------------------------
// Web servers

/** A running web server in front of Lodestone. */
export interface WebServer {
  readonly child: ChildProcess;
  readonly port: number;
  /** Scratch dir with the config, logs and temp files; removed after the server stops. */
  readonly dir: string;
  /** The document root, inside `dir`; holds only the readiness file at first. */
  readonly docRoot: string;
  readonly configFile: string;
  readonly errorLogFile: string;
  /** `http://127.0.0.1:PORT` + `pathAndQuery`. */
  url(pathAndQuery: string): string;
  /** The server's stdout and stderr so far (lighttpd passes its bin-path children's stderr on). */
  output(): string;
  errorLog(): string;
  /** Resolves to the first error log line matching `pattern`. */
  waitForErrorLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

interface Flavor {
  program: string;
  stopSignal: NodeJS.Signals;
  config(port: number, dir: string, docRoot: string): string;
  args(configFile: string, dir: string): string[];
}

async function startWebServer(t: TestContext, flavor: Flavor, prefix: string): Promise<WebServer> {
  const program = findProgram(flavor.program);
  if (!program) throw new Error(`${flavor.program} is not installed (call havePrograms first)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  // Workers may run as another user and must reach the docroot and temp dirs.
  fs.chmodSync(dir, 0o755);
  const docRoot = path.join(dir, 'www');
  fs.mkdirSync(docRoot);
  // Readiness is this file served statically, without Lodestone; its random content tells our
  // server from another one that took the port in the meantime.
  const readyToken = `ready ${randomBytes(8).toString('hex')}\n`;
  fs.writeFileSync(path.join(docRoot, READY_FILE), readyToken);
  const configFile = path.join(dir, `${flavor.program}.conf`);
  const errorLogFile = path.join(dir, 'error.log');

  let current: Spawned | null = null;
  // One hook stops the server, then removes its dir: hooks run in order, and a dir removed
  // under a running server could fail on files it is still writing.
  t.after(async () => {
    await current?.stop(flavor.stopSignal);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    fs.writeFileSync(configFile, flavor.config(port, dir, docRoot));
    fs.rmSync(errorLogFile, { force: true });
    const spawned = spawnInGroup(program, flavor.args(configFile, dir));
    current = spawned;
    const url = (p: string): string => `http://127.0.0.1:${port}${p}`;
    const ready = await untilReady(spawned, url(`/${READY_FILE}`), readyToken, errorLogFile);
    if (ready === 'in-use' && attempt < PORT_ATTEMPTS) {
      await spawned.stop(flavor.stopSignal);
      continue;
    }
    if (ready !== 'ready') {
      await spawned.stop(flavor.stopSignal);
      const logs = `${spawned.output()}\n${readText(errorLogFile)}`;
      throw new Error(`${flavor.program} did not start (${ready}):\n${logs}\n--- config:\n${readText(configFile)}`);
    }
    const errorLog = (): string => readText(errorLogFile);
    return {
      child: spawned.child,
      port,
      dir,
      docRoot,
      configFile,
      errorLogFile,
      url,
      output: () => spawned.output(),
      errorLog,
      waitForErrorLog: (pattern, timeoutMs = 10_000) =>
        waitFor(
          () => errorLog().split('\n').find((line) => pattern.test(line)),
          timeoutMs,
          () => `${pattern} in ${flavor.program} error log:\n${errorLog()}`,
        ),
      stop: () => spawned.stop(flavor.stopSignal),
    };
  }
}

async function untilReady(
  spawned: Spawned,
  url: string,
  token: string,
  errorLogFile: string,
): Promise<'ready' | 'in-use' | `failed: ${string}`> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const { child } = spawned;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const text = spawned.output() + readText(errorLogFile);
      return ADDRESS_IN_USE.test(text) ? 'in-use' : `failed: exited with ${child.exitCode ?? child.signalCode}`;
    }
    try {
      const reply = await httpRequest(url, { timeoutMs: 2_000 });
      if (reply.status === 200 && reply.body.toString() === token) return 'ready';
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) return `failed: no answer on ${url} after ${READY_TIMEOUT_MS} ms`;
    await sleep(100);
  }
}

export interface NginxOptions {
  /** Upstream address: `127.0.0.1:PORT` or `unix:/path.sock`. */
  fastcgiPass: string;
  /** Idle upstream connections nginx keeps (`keepalive N;`); also turns on fastcgi_keep_conn. */
  keepalive?: number;
  /** `fastcgi_keep_conn` (default: on exactly when `keepalive` is given). */
  keepConn?: boolean;
  /** Extra directives inside the FastCGI `location /` (e.g. fastcgi_buffering off). */
  location?: string;
  /** Extra directives inside `server` (e.g. an internal location for X-Accel-Redirect). */
  server?: string;
  /** Extra directives inside `http`. */
  http?: string;
  /** Directory SCRIPT_FILENAME points into (default: nginx's own document root). */
  scriptRoot?: string;
}

/**
 * Starts nginx in the foreground (master plus one worker) on a free loopback port, proxying
 * `location /` to Lodestone with the distribution's fastcgi_params and SCRIPT_FILENAME set as
 * php-fpm setups do. `/peer-ready.txt` is a static file, served without Lodestone.
 */
export function startNginx(t: TestContext, opts: NginxOptions): Promise<WebServer> {
  const keepConn = opts.keepConn ?? opts.keepalive !== undefined;
  return startWebServer(
    t,
    {
      program: 'nginx',
      // Fast shutdown; SIGQUIT would wait for kept-alive client connections.
      stopSignal: 'SIGTERM',
      args: (configFile, dir) => ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', configFile],
      config: (port, dir, docRoot) => `
daemon off;
master_process on;
worker_processes 1;
${process.getuid?.() === 0 ? 'user root;' : ''}
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
lock_file ${dir}/nginx.lock;
events { worker_connections 256; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/client_body;
  fastcgi_temp_path ${dir}/fastcgi;
  proxy_temp_path ${dir}/proxy;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  client_max_body_size 64m;
  upstream lodestone {
    server ${opts.fastcgiPass};
    ${opts.keepalive !== undefined ? `keepalive ${opts.keepalive};` : ''}
  }
  server {
    listen 127.0.0.1:${port};
    server_name localhost;
    root ${docRoot};
    location = /${READY_FILE} { }
    location / {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME ${opts.scriptRoot ?? '$document_root'}$fastcgi_script_name;
      fastcgi_pass lodestone;
      fastcgi_keep_conn ${keepConn ? 'on' : 'off'};
      ${opts.location ?? ''}
    }
    ${opts.server ?? ''}
  }
  ${opts.http ?? ''}
}
`,
    },
    'lodestone-nginx-',
  );
}

export interface LighttpdOptions {
  /**
   * The backend's entry in `fastcgi.server`, e.g. `{ host: '127.0.0.1', port: 9000 }` or
   * `{ socket: '/tmp/x.sock', 'bin-path': '...', 'max-procs': 1 }`. `check-local` is disabled
   * unless given, since the scripts do not exist in the docroot.
   */
  backend: Record<string, LighttpdValue>;
  /** URL prefix routed to the backend (default `/app`); must not cover `/peer-ready.txt`. */
  prefix?: string;
  /** Extra lighttpd.conf text, appended. */
  config?: string;
}

/** A value in lighttpd.conf: a string, a number or a list of strings (e.g. x-sendfile-docroot). */
export type LighttpdValue = string | number | readonly string[];

function lighttpdValue(value: LighttpdValue): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return lighttpdString(value);
  return `( ${value.map(lighttpdString).join(', ')} )`;
}

/** A lighttpd config string literal. */
export function lighttpdString(value: string): string {
  if (/["\\\n]/.test(value)) throw new Error(`cannot quote ${JSON.stringify(value)} for lighttpd.conf`);
  return `"${value}"`;
}

/**
 * Starts lighttpd in the foreground (`-D`) on a free loopback port with mod_fastcgi routing
 * `prefix` to one backend. `/peer-ready.txt` is a static file, served without Lodestone.
 */
export function startLighttpd(t: TestContext, opts: LighttpdOptions): Promise<WebServer> {
  const backend: Record<string, LighttpdValue> = { 'check-local': 'disable', ...opts.backend };
  const entries = Object.entries(backend)
    .map(([k, v]) => `${lighttpdString(k)} => ${lighttpdValue(v)}`)
    .join(',\n      ');
  return startWebServer(
    t,
    {
      program: 'lighttpd',
      stopSignal: 'SIGTERM',
      args: (configFile) => ['-D', '-f', configFile],
      config: (port, dir, docRoot) => `
server.document-root = ${lighttpdString(docRoot)}
server.bind = "127.0.0.1"
server.port = ${port}
server.errorlog = ${lighttpdString(path.join(dir, 'error.log'))}
server.pid-file = ${lighttpdString(path.join(dir, 'lighttpd.pid'))}
server.upload-dirs = ( ${lighttpdString(dir)} )
server.modules += ( "mod_fastcgi" )
fastcgi.server = (
  ${lighttpdString(opts.prefix ?? '/app')} => ((
      ${entries}
  ))
)
${opts.config ?? ''}
`,
    },
    'lodestone-lighttpd-',
  );
}

// ---------------------------------------------------------------------------------------------
// systemd socket activation

/** A command started by systemd-socket-activate on a loopback port. */
export interface SocketActivated {
  readonly child: ChildProcess;
  readonly port: number;
  /** systemd-socket-activate's messages, then the command's stdout and stderr. */
  output(): string;
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Runs `systemd-socket-activate -l 127.0.0.1:PORT -- command...` on a free port. It holds the
 * listening socket and execs the command (same pid, socket on fd 3, LISTEN_PID/LISTEN_FDS set)
 * on the first connection, so the command starts only once a client connects.
 */
export async function startSocketActivate(t: TestContext, command: string[]): Promise<SocketActivated> {
  const program = findProgram('systemd-socket-activate');
  if (!program) throw new Error('systemd-socket-activate is not installed (call havePrograms first)');
  let current: Spawned | null = null;
  t.after(() => current?.stop('SIGTERM'));
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const spawned = spawnInGroup(program, ['-l', `127.0.0.1:${port}`, '--', ...command]);
    current = spawned;
    const waitForOutput = (pattern: RegExp, timeoutMs = 15_000): Promise<string> =>
      waitFor(
        () => {
          const line = spawned.output().split('\n').find((l) => pattern.test(l));
          if (line !== undefined) return line;
          if (spawned.child.exitCode !== null || spawned.child.signalCode !== null) return null;
          return undefined;
        },
        timeoutMs,
        () => `${pattern} in output of systemd-socket-activate:\n${spawned.output()}`,
      ).then((line) => {
        if (line === null) throw new Error(`systemd-socket-activate exited before ${pattern}:\n${spawned.output()}`);
        return line;
      });
    try {
      await waitForOutput(/Listening on/);
    } catch (err) {
      await spawned.stop('SIGTERM');
      if (ADDRESS_IN_USE.test(spawned.output()) && attempt < PORT_ATTEMPTS) continue;
      throw err;
    }
    return {
      child: spawned.child,
      port,
      output: () => spawned.output(),
      waitForOutput,
      stop: () => spawned.stop('SIGTERM'),
    };
  }
}
