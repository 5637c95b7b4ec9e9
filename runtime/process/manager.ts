/**
 * The process manager: a primary process that forks N workers running the ordinary `serve`
 * path over one shared listening socket, replaces a worker that dies (backing off when they die
 * in a loop), recycles workers after max requests, reloads gracefully and stops gracefully.
 *
 * The primary owns the listening socket, as php-fpm's master does: it binds it (tcp, unix) or
 * holds the inherited one (fd:0 from spawn-fcgi or lighttpd, fd 3 from systemd) and gives every
 * worker a copy as fd {@link WORKER_FD}; each worker accepts on it itself (as nginx's workers
 * do). Node's cluster sharing (the primary accepting and handing connections round-robin) was
 * tried first and is unfit: when
 * the last worker using it exits (one worker and a crash, or all killed by the watchdog) Node
 * closes the shared handle, which unlinks a unix socket, frees a TCP port for anyone, and closes
 * an inherited fd 0 for good, so no replacement could ever listen again. A socket the primary
 * holds outlives every worker; connections wait in its backlog until a worker accepts them.
 * Binding it is shared-socket.ts; what a worker says and hears, worker.ts.
 */
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type { Logger } from '../log.js';
import type { StatusSnapshot } from '../handlers/status.js';
import type { ListenTarget } from '../listen.js';
import { openShared, type Shared, type SocketOwner } from './shared-socket.js';
import { WorkerWatchdog } from './worker-watchdog.js';
import { BOARD_FD, STATUS_WAIT_MS, WATCHDOG_BOARD_ENV, WORKER_FD, WORKER_LISTEN_ENV, type PrimaryMessage, type WorkerMessage } from './worker.js';

const stopSignals = ['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGUSR1'] as const;

/** What {@link runPrimary} needs. */
export interface ManagerOptions {
  readonly workers: number;
  readonly target: ListenTarget;
  readonly socketMode: number | null;
  /** Owner of a unix socket (-1 keeps that id); null leaves it as created. */
  readonly socketOwner: SocketOwner;
  readonly log: Logger;
  /** Runs once the socket is had, before any worker is forked. */
  readonly onBound?: () => void;
  /** Reopens the primary's own log files (SIGUSR2); workers reopen theirs when told. */
  readonly reopenLogs?: () => void;
  /** Unexpected exits within {@link CRASH_WINDOW_MS} beyond this start the backoff; default: workers. */
  readonly crashThreshold?: number;
  /** Runs once, when the first worker listens (the development server prints its URL then). */
  readonly onListening?: () => void;
  /** Runs at the first stop, before the workers are asked to finish (the development server closes its HTTP side). */
  readonly onStop?: () => void;
  /** `watchdogMs`: a worker whose event loop is stuck this long is killed (watchdog.ts); 0: off. */
  readonly watchdogMs?: number;
}

/** Window over which unexpected worker exits are counted for the crash-loop backoff. */
export const CRASH_WINDOW_MS = 10_000;
const FIRST_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 30_000;
/** A worker asked to stop gracefully gets this long (server.close's 5 s grace plus margin) before SIGKILL. */
const STOP_KILL_MS = 10_000;

interface Tracked {
  readonly worker: ChildProcess;
  readonly id: number;
  readonly generation: number;
  listening: boolean;
  /** Asked to stop or retiring by itself: its exit is expected and not replaced (again). */
  leaving: boolean;
  /** Runs once this worker listens: tells the worker it replaces to finish. */
  onListening?: () => void;
}

/**
 * Runs the primary until a stop signal; resolves to the exit code, rejects with a
 * LodestoneError when the socket cannot be had. Signals: SIGHUP reloads, SIGUSR2 reopens the
 * logs, SIGTERM / SIGINT / SIGQUIT / SIGUSR1 stop gracefully, a second stop signal kills the
 * workers at once (see the README's signal table).
 */
export function runPrimary(opts: ManagerOptions): Promise<number> {
  return new Primary(opts).run();
}

class Primary {
  private readonly tracked = new Map<number, Tracked>();
  private generation = 1;
  private everListened = false;
  private stopping = false;
  private reloading: Promise<void> | null = null;
  private crashes: number[] = [];
  private backoffMs = 0;
  private pendingForks = 0;
  private resolveRun: (code: number) => void = () => {};
  private exitCode = 0;
  private nextId = 1;
  private nextSeq = 1;
  private readonly statusReplies = new Map<number, (s: StatusSnapshot | null) => void>();
  private shared: Shared | null = null;
  private readonly watchdog: WorkerWatchdog | null;

  constructor(private readonly opts: ManagerOptions) {
    this.watchdog = (opts.watchdogMs ?? 0) > 0 ? new WorkerWatchdog(opts.watchdogMs!, opts.log) : null;
  }

  async run(): Promise<number> {
    const { target, log } = this.opts;
    // A socket that cannot be had is the same one-line start-up error as without the manager.
    const shared = await openShared(target, this.opts.socketMode, this.opts.socketOwner);
    this.shared = shared;
    this.opts.onBound?.();
    // The workers must not see systemd's variables: LISTEN_PID would not match them anyway.
    delete process.env.LISTEN_FDS;
    delete process.env.LISTEN_PID;
    const done = new Promise<number>((resolve) => (this.resolveRun = resolve));
    for (let i = 0; i < this.opts.workers; i++) this.fork();
    const reload = (signal: NodeJS.Signals): void => void this.reload(signal);
    const stop = (signal: NodeJS.Signals): void => this.stop(signal);
    const reopen = (): void => this.reopenLogs();
    process.on('SIGHUP', reload);
    process.on('SIGUSR2', reopen);
    for (const signal of stopSignals) process.on(signal, stop);
    const code = await done;
    process.off('SIGHUP', reload);
    process.off('SIGUSR2', reopen);
    for (const signal of stopSignals) process.off(signal, stop);
    shared.close();
    log.info('-', 'lodestone stopped', { pid: process.pid });
    return code;
  }

  private fork(): Tracked {
    const env: NodeJS.ProcessEnv = { ...process.env, [WORKER_LISTEN_ENV]: JSON.stringify({ kind: 'fd', fd: WORKER_FD } satisfies ListenTarget) };
    const board = this.watchdog?.openBoard() ?? null;
    if (board !== null) env[WATCHDOG_BOARD_ENV] = String(BOARD_FD);
    // stdin is not the workers' (it may be the listening socket itself: fd:0).
    const worker = fork(process.argv[1]!, process.argv.slice(2), {
      env,
      execArgv: process.execArgv,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc', this.shared!.stdio, ...(board !== null ? [board] : [])],
    });
    const entry: Tracked = { worker, id: this.nextId++, generation: this.generation, listening: false, leaving: false };
    this.tracked.set(entry.id, entry);
    if (board !== null) {
      const pid = worker.pid;
      if (pid === undefined) fs.closeSync(board);
      else {
        this.watchdog!.watch(pid, board, () => worker.kill('SIGKILL'));
        worker.once('exit', () => this.watchdog!.unwatch(pid));
      }
    }
    worker.on('message', (msg: WorkerMessage) => this.onMessage(entry, msg));
    worker.once('exit', (code, signal) => this.onExit(entry, code, signal));
    // A message to a worker that has just died fails with an 'error' event; unheard, it would
    // take the primary down. The exit event handles the worker itself.
    worker.on('error', (err) => this.opts.log.debug('-', 'worker channel error', { worker: worker.pid, error: err.message }));
    return entry;
  }

  /** Every live worker's status snapshot; a worker that does not answer in time is left out. */
  private collectStatus(): Promise<StatusSnapshot[]> {
    const asked = [...this.tracked.values()].filter((e) => e.worker.connected && e.listening);
    return Promise.all(
      asked.map(
        (e) =>
          new Promise<StatusSnapshot | null>((resolve) => {
            const seq = this.nextSeq++;
            const timer = setTimeout(() => done(null), STATUS_WAIT_MS);
            const done = (s: StatusSnapshot | null): void => {
              clearTimeout(timer);
              this.statusReplies.delete(seq);
              resolve(s);
            };
            this.statusReplies.set(seq, done);
            e.worker.send({ type: 'status-query', seq } satisfies PrimaryMessage);
          }),
      ),
    ).then((all) => all.filter((s): s is StatusSnapshot => s !== null));
  }

  /** Log rotation: the primary's own files, then every worker's (by message). */
  private reopenLogs(): void {
    this.opts.reopenLogs?.();
    const msg: PrimaryMessage = { type: 'reopen-logs' };
    for (const e of this.tracked.values()) if (e.worker.connected) e.worker.send(msg);
    this.opts.log.info('-', 'log files reopened', { workers: this.tracked.size });
  }

  private onMessage(entry: Tracked, msg: WorkerMessage): void {
    const { log } = this.opts;
    if (msg.type === 'beat') {
      this.watchdog?.beat(entry.worker.pid!);
      return;
    }
    if (msg.type === 'status-request') {
      void this.collectStatus().then((snapshots) => {
        const reply: PrimaryMessage = { type: 'status-result', seq: msg.seq, snapshots };
        if (entry.worker.connected) entry.worker.send(reply);
      });
      return;
    }
    if (msg.type === 'status-reply') {
      this.statusReplies.get(msg.seq)?.(msg.snapshot);
      return;
    }
    if (msg.type === 'listening') {
      entry.listening = true;
      entry.onListening?.();
      entry.onListening = undefined;
      if (!this.everListened) {
        this.everListened = true;
        log.info('-', 'lodestone listening', { listen: this.shared?.address ?? msg.address, workers: this.opts.workers, pid: process.pid });
        this.opts.onListening?.();
      }
    } else if (msg.type === 'retiring' && !entry.leaving && !this.stopping) {
      // Replacement listening first, then the old one stops, so capacity never drops (workers
      // under even load reach max requests together).
      entry.leaving = true;
      log.info('-', 'worker retiring after max requests', { worker: entry.worker.pid, served: msg.served });
      if (entry.generation === this.generation) this.fork().onListening = () => this.retire(entry);
      else this.retire(entry);
    }
  }

  private onExit(entry: Tracked, code: number | null, signal: string | null): void {
    const worker = entry.worker;
    this.tracked.delete(entry.id);
    if (this.tracked.size === 0 && this.pendingForks === 0 && (this.stopping || !this.everListened)) {
      if (!this.everListened && !this.stopping) {
        this.opts.log.error('LS_LISTEN_FAILED', 'a worker exited before any worker was listening; stopping', { code: code ?? undefined, signal: signal ?? undefined });
        this.exitCode = code !== null && code !== 0 ? code : 1;
      }
      this.resolveRun(this.exitCode);
      return;
    }
    if (entry.leaving || this.stopping) return;
    if (!this.everListened) {
      // Start-up failure (bad listen, bad config): stop the others rather than loop.
      this.stop('SIGTERM');
      this.exitCode = code !== null && code !== 0 ? code : 1;
      return;
    }
    if (entry.generation !== this.generation) return;
    // A new generation's worker that died before listening fails its reload (doReload retires
    // the rest and keeps the running workers); replacing it would fork the same failure again.
    if (this.reloading && !entry.listening) return;
    this.opts.log.warn('LS_WORKER_DIED', 'worker died; replacing it', { worker: worker.pid, code: code ?? undefined, signal: signal ?? undefined });
    this.replace();
  }

  // php-fpm's emergency_restart_threshold in spirit: beyond `threshold` unexpected exits within
  // the window, wait before forking, doubling up to 30 s; a quiet window resets the delay.
  private replace(): void {
    const now = Date.now();
    this.crashes = this.crashes.filter((t) => now - t < CRASH_WINDOW_MS);
    this.crashes.push(now);
    const threshold = this.opts.crashThreshold ?? this.opts.workers;
    if (this.crashes.length <= threshold) {
      this.backoffMs = 0;
      this.fork();
      return;
    }
    this.backoffMs = this.backoffMs === 0 ? FIRST_BACKOFF_MS : Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    this.opts.log.warn('LS_WORKER_CRASH_LOOP', 'workers are crashing in a loop; waiting before the next fork', {
      exits: this.crashes.length,
      windowMs: CRASH_WINDOW_MS,
      delayMs: this.backoffMs,
    });
    this.pendingForks++;
    setTimeout(() => {
      this.pendingForks--;
      if (!this.stopping) this.fork();
    }, this.backoffMs);
  }

  /** New generation up and listening first; only then are the old workers asked to finish. */
  private reload(signal: NodeJS.Signals): Promise<void> {
    if (this.stopping || !this.everListened) return Promise.resolve();
    if (this.reloading) {
      this.opts.log.warn('LS_RELOAD_IN_PROGRESS', 'reload already in progress', { signal });
      return this.reloading;
    }
    this.reloading = this.doReload(signal).finally(() => (this.reloading = null));
    return this.reloading;
  }

  private async doReload(signal: NodeJS.Signals): Promise<void> {
    const { log } = this.opts;
    const old = [...this.tracked.values()].filter((e) => !e.leaving);
    this.generation++;
    log.info('-', 'reloading: starting new workers', { signal, generation: this.generation });
    const fresh = Array.from({ length: this.opts.workers }, () => this.fork());
    const ok = await this.allListening(fresh);
    if (!ok) {
      // A new worker that cannot start (bad config file, broken code on disk) must not take the
      // working generation down with it.
      log.error('LS_CONFIG_INVALID', 'reload failed: a new worker did not start; keeping the running workers');
      this.generation--;
      for (const e of fresh) this.retire(e);
      // An old worker that died meanwhile was left to the new generation: replace it now.
      const running = [...this.tracked.values()].filter((e) => !e.leaving && e.generation === this.generation).length;
      for (let i = running; i < this.opts.workers; i++) this.fork();
      return;
    }
    for (const e of old) this.retire(e);
    log.info('-', 'reloaded: old workers finish their requests and exit', { generation: this.generation, old: old.length });
  }

  private allListening(entries: Tracked[]): Promise<boolean> {
    return new Promise((resolve) => {
      const check = (): void => {
        if (entries.some((e) => !this.tracked.has(e.id))) finish(false);
        else if (entries.every((e) => e.listening)) finish(true);
      };
      const timer = setInterval(check, 20);
      const deadline = setTimeout(() => finish(false), 30_000);
      const finish = (result: boolean): void => {
        clearInterval(timer);
        clearTimeout(deadline);
        resolve(result);
      };
      check();
    });
  }

  private retire(entry: Tracked): void {
    entry.leaving = true;
    const msg: PrimaryMessage = { type: 'stop' };
    if (entry.worker.connected) entry.worker.send(msg);
    const killer = setTimeout(() => entry.worker.kill('SIGKILL'), STOP_KILL_MS);
    killer.unref();
    entry.worker.once('exit', () => clearTimeout(killer));
  }

  private stop(signal: NodeJS.Signals): void {
    const { log } = this.opts;
    if (this.stopping) {
      log.warn('LS_FORCED_STOP', 'second signal: killing the workers now', { signal });
      this.exitCode = 1;
      for (const e of this.tracked.values()) e.worker.kill('SIGKILL');
      return;
    }
    this.stopping = true;
    log.info('-', 'stopping gracefully', { signal, workers: this.tracked.size });
    this.opts.onStop?.();
    if (this.tracked.size === 0) {
      this.resolveRun(this.exitCode);
      return;
    }
    for (const e of this.tracked.values()) this.retire(e);
  }
}
