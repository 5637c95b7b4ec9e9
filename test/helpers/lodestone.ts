/**
 * Starts the real `lodestone` CLI as a child process for integration tests, on port 0 or a unix
 * socket in a temp dir, and always stops it. Also the check that a peer program is installed:
 * skipped locally when missing, a failure in CI (CI=true), so a missing install step in
 * `.ci/run` cannot pass unnoticed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { findProgram } from '../shared/programs.js';
import { repoRoot } from '../shared/repo.js';

export const cliPath = path.join(repoRoot, 'bin/lodestone.js');

/** A temp dir removed at the end of the test. */
export function tempDir(t: TestContext, prefix = 'lodestone-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  // Peers such as nginx workers may run as another user and must reach sockets in here.
  fs.chmodSync(dir, 0o755);
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Returns the path of `program` (searched on PATH and in /usr/sbin), or null after marking the
 * test skipped. In CI a missing program fails the test instead.
 */
export function requireProgram(t: TestContext, program: string): string | null {
  const found = findProgram(program);
  if (found) return found;
  if (process.env.CI === 'true') throw new Error(`${program} is not installed; .ci/run must install it`);
  t.skip(`${program} is not installed`);
  return null;
}

/** A running lodestone process. */
export interface Lodestone {
  child: ChildProcess;
  /** The TCP port when listening on TCP. */
  port: number;
  /** The unix socket path when listening on one. */
  socketPath: string | null;
  /** Everything written to stderr so far (the log). */
  log(): string;
  /** Resolves when a log line matching `pattern` appears. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends SIGTERM and waits for exit; resolves to the exit code. */
  stop(): Promise<number | null>;
}

export interface StartOptions {
  /** `--listen` value; default tcp:127.0.0.1:0. */
  listen?: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Config object written to a temp file and passed with --config. */
  config?: Record<string, unknown>;
  /** Pass --diagnostic (default true); false serves scripts. */
  diagnostic?: boolean;
}

/** Starts `lodestone serve` (with --diagnostic unless told otherwise) and waits for its "listening" line. */
export async function startLodestone(t: TestContext, opts: StartOptions = {}): Promise<Lodestone> {
  const listen = opts.listen ?? 'tcp:127.0.0.1:0';
  const args = [cliPath, 'serve', '--listen', listen, ...(opts.diagnostic === false ? [] : ['--diagnostic']), ...(opts.args ?? [])];
  // One process unless the test asks for workers: per-process counters and caches stay
  // deterministic and a test costs one Node process. The manager's own tests, and those that
  // start Lodestone the way lighttpd, spawn-fcgi or systemd do, run it managed.
  const asksForWorkers =
    args.includes('--workers') || opts.env?.PHP_FCGI_CHILDREN !== undefined || opts.config?.workers !== undefined;
  if (!asksForWorkers) args.push('--workers', '0');
  if (opts.config) {
    const dir = tempDir(t, 'lodestone-config-');
    const file = path.join(dir, 'lodestone.json');
    fs.writeFileSync(file, JSON.stringify(opts.config));
    args.push('--config', file);
  }
  const child = spawn(process.execPath, args, {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  const listeners: Array<() => void> = [];
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s: string) => {
    stderr += s;
    for (const l of listeners.splice(0)) l();
  });
  child.stdout.resume();
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.once('exit', () => {
    for (const l of listeners.splice(0)) l();
  });

  const waitForLog = async (pattern: RegExp, timeoutMs = 10_000): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = stderr.split('\n').find((l) => pattern.test(l));
      if (line !== undefined) return line;
      if (child.exitCode !== null) throw new Error(`lodestone exited (${child.exitCode}) before logging ${pattern}:\n${stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern} in lodestone log:\n${stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 100);
        listeners.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  };

  let stopped: Promise<number | null> | null = null;
  const stop = (): Promise<number | null> => {
    if (!stopped) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      stopped = exited.finally(() => clearTimeout(killer));
    }
    return stopped;
  };
  t.after(stop);

  const line = await waitForLog(/lodestone listening/);
  const tcp = /listen=tcp:\S*:(\d+)/.exec(line);
  const unix = /listen=unix:(\S+)/.exec(line);
  return {
    child,
    port: tcp ? Number(tcp[1]) : 0,
    socketPath: unix ? unix[1]! : null,
    log: () => stderr,
    waitForLog,
    stop,
  };
}

/**
 * The warn and error lines of a Lodestone log, less the LS_RUNNING_AS_ROOT line every root start
 * without --user logs (CI runs as root; privileges.test.ts checks that line itself).
 */
export function complaints(log: string): string[] {
  return log.split('\n').filter((line) => /^\S+ (warn|error) /.test(line) && !/^\S+ warn LS_RUNNING_AS_ROOT /.test(line));
}

/** Runs a program to completion; for cgi-fcgi and friends. */
export function run(
  program: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: Buffer | string; timeoutMs?: number } = {},
): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(program, args, {
    env: opts.env,
    input: opts.input,
    timeout: opts.timeoutMs ?? 10_000,
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}
