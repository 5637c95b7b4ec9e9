/**
 * A worker's side of the process manager: how a process knows it is a managed worker, and the
 * messages it exchanges with its primary over the IPC channel (listening, retiring, stop, log
 * reopening, the status page's snapshots). Apart from manager.ts, which is the primary, because
 * every worker loads this and none of them runs the primary.
 */
import type { StatusSnapshot } from '../handlers/status.js';
import { describeTarget, type ListenTarget } from '../listen.js';

/**
 * Marks a process forked by the manager and carries its listen target. (Workers are plain
 * child_process forks, not node:cluster workers: in a cluster worker Node routes even
 * listen({ fd }) through the primary, ignoring `exclusive`.)
 */
export const WORKER_LISTEN_ENV = 'LODESTONE_WORKER_LISTEN';
/** The fd a worker finds the shared listening socket on (0-2 are stdio, 3 the IPC channel). */
export const WORKER_FD = 4;
/**
 * Set (to the fd, {@link BOARD_FD}) when the primary watches the worker: the worker then beats
 * and writes its scoreboard there instead of starting a watchdog thread (process/watchdog.ts).
 */
export const WATCHDOG_BOARD_ENV = 'LODESTONE_WATCHDOG_BOARD';
/** The fd a watched worker finds its scoreboard on. */
export const BOARD_FD = 5;

/** Messages between primary and worker over the IPC channel. */
export type WorkerMessage =
  | { readonly type: 'listening'; readonly address: string }
  | { readonly type: 'retiring'; readonly served: number }
  | { readonly type: 'status-request'; readonly seq: number }
  | { readonly type: 'status-reply'; readonly seq: number; readonly snapshot: StatusSnapshot | null }
  | { readonly type: 'beat' };
export type PrimaryMessage =
  | { readonly type: 'stop' }
  | { readonly type: 'reopen-logs' }
  | { readonly type: 'status-query'; readonly seq: number }
  | { readonly type: 'status-result'; readonly seq: number; readonly snapshots: StatusSnapshot[] };

/** How long the primary waits for the workers' status snapshots. */
export const STATUS_WAIT_MS = 1000;

/** True in a worker forked by the process manager. */
export function isManagedWorker(env: NodeJS.ProcessEnv = process.env): boolean {
  return process.send !== undefined && env[WORKER_LISTEN_ENV] !== undefined;
}

/** Tells the primary this worker is listening (the first one's address goes into the banner). */
export function reportListening(target: ListenTarget): void {
  const msg: WorkerMessage = { type: 'listening', address: describeTarget(target) };
  process.send?.(msg);
}

const BEAT: WorkerMessage = { type: 'beat' };

/** Tells the primary's watchdog this worker's event loop turned. */
export function reportBeat(): void {
  process.send?.(BEAT);
}

/** Tells the primary this worker reached max requests, so it forks the replacement now. */
export function reportRetiring(served: number): void {
  const msg: WorkerMessage = { type: 'retiring', served };
  process.send?.(msg);
}

/**
 * Wires a worker to its primary: `stop` when asked to stop or when the primary goes away,
 * `reopenLogs` when the primary got SIGUSR2.
 */
export function onPrimary(handlers: { stop: () => void; reopenLogs?: () => void }): void {
  process.on('message', (msg: PrimaryMessage) => {
    switch (msg?.type) {
      case 'stop':
        return handlers.stop();
      case 'reopen-logs':
        return handlers.reopenLogs?.();
      case 'status-query':
        return void process.send?.({ type: 'status-reply', seq: msg.seq, snapshot: statusProvider?.() ?? null } satisfies WorkerMessage);
      case 'status-result':
        statusWaiters.get(msg.seq)?.(msg.snapshots);
        statusWaiters.delete(msg.seq);
    }
  });
  // A primary killed outright must not leave orphan workers serving an unmanaged socket.
  process.on('disconnect', handlers.stop);
}

let statusProvider: (() => StatusSnapshot) | null = null;
const statusWaiters = new Map<number, (all: StatusSnapshot[]) => void>();
let statusSeq = 0;

/** In a worker: the function the primary's status queries are answered with. */
export function provideStatus(snapshot: () => StatusSnapshot): void {
  statusProvider = snapshot;
}

/** In a worker: every worker's status snapshot, through the primary; rejects if it does not answer. */
export function gatherStatus(): Promise<StatusSnapshot[]> {
  return new Promise((resolve, reject) => {
    const seq = ++statusSeq;
    const timer = setTimeout(() => {
      statusWaiters.delete(seq);
      reject(new Error('the primary did not answer'));
    }, 2 * STATUS_WAIT_MS);
    statusWaiters.set(seq, (all) => {
      clearTimeout(timer);
      resolve(all);
    });
    process.send?.({ type: 'status-request', seq } satisfies WorkerMessage);
  });
}
