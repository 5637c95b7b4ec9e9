/**
 * Lodestone run under strace, to make chosen system calls slow (`-e inject=statx:delay_exit=...`)
 * as a disk seek would, for tests that must show a slow stat does not hold up anything else.
 * strace does not stop what it traces when it is itself stopped (it detaches and the tracee runs
 * on), so this stops Lodestone by its own pid, read from its "listening" line, and only then
 * strace; the whole process group is killed if either lingers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { cliPath, tempDir } from './lodestone.js';
import { signalPid, within } from './peers.js';

export interface TracedLodestone {
  /** The strace process (leader of its own process group). */
  readonly strace: ChildProcess;
  /** Lodestone's own pid (the tracee), from its log. */
  readonly pid: number;
  readonly port: number;
  /** Lodestone's stderr (the log) so far; strace writes its trace to `traceFile`. */
  log(): string;
  readonly traceFile: string;
  /** Lodestone's threads that are stopped by the tracer right now (a delayed syscall). */
  stoppedThreads(): number;
  stop(): Promise<void>;
}

export interface TracedOptions {
  /** strace options before the command, e.g. ['-e', 'trace=statx', '-e', 'inject=statx:delay_exit=2s', '-P', file]. */
  strace: string[];
  /** `lodestone serve` arguments after `--listen tcp:127.0.0.1:0`. */
  args: string[];
}

/** Starts `strace -f --seccomp-bpf -o FILE ...options node bin/lodestone.js serve ...` and waits for "listening". */
export async function startTracedLodestone(t: TestContext, opts: TracedOptions): Promise<TracedLodestone> {
  // Registered before the temp dir's own hook, so strace is stopped before its dir is removed.
  let stopHook: (() => Promise<void>) | null = null;
  t.after(() => stopHook?.());
  const traceFile = path.join(tempDir(t, 'lodestone-strace-'), 'trace');
  const args = ['-f', '--seccomp-bpf', '-o', traceFile, ...opts.strace, process.execPath, cliPath, 'serve', '--listen', 'tcp:127.0.0.1:0', '--workers', '0', ...opts.args];
  const child = spawn('strace', args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdout.resume();
  child.once('error', () => {});
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let pid = 0;

  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (pid > 0) signalPid(pid, 'SIGTERM');
      else if (child.pid !== undefined) signalPid(child.pid, 'SIGTERM');
      if (!(await within(exited, 8000)) && child.pid !== undefined) signalPid(-child.pid, 'SIGKILL');
      await exited;
      // strace is gone; a tracee it left behind (detached) would still be in the group.
      if (child.pid !== undefined) signalPid(-child.pid, 'SIGKILL');
    })();
    return stopping;
  };
  stopHook = stop;

  const deadline = Date.now() + 30_000;
  let line: string | undefined;
  while ((line = stderr.split('\n').find((l) => /lodestone listening/.test(l))) === undefined) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`strace/lodestone exited before listening:\n${stderr}`);
    if (Date.now() > deadline) throw new Error(`traced lodestone did not start:\n${stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  pid = Number(/ pid=(\d+)/.exec(line)?.[1]);
  const port = Number(/listen=tcp:\S*:(\d+)/.exec(line)?.[1]);
  return {
    strace: child,
    pid,
    port,
    log: () => stderr,
    traceFile,
    stoppedThreads: () => threadStates(pid).filter((s) => s === 't').length,
    stop,
  };
}

/** The state letter (R, S, D, t, ...) of every thread of `pid`. */
export function threadStates(pid: number): string[] {
  const out: string[] = [];
  let tasks: string[];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const task of tasks) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${task}/stat`, 'utf8');
      out.push(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]!);
    } catch {
      // the thread ended while we looked
    }
  }
  return out;
}

/** Number of threads of `pid` (entries of /proc/PID/task). */
export function threadCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/task`).length;
}

