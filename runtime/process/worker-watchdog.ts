/**
 * The primary's watchdog over its workers (watchdog.ts describes the whole design and holds the
 * workers' side: the heartbeat, and the thread of a process without a manager). Apart from it
 * because the primary and the workers run different halves: the manager imports this one only.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../log.js';

/** How often a watchdog looks: a quarter of the limit bounds the detection delay to 1.25 x the limit. */
export function checkEveryMs(limitMs: number): number {
  return Math.max(10, Math.min(1000, Math.floor(limitMs / 4)));
}

interface Watched {
  readonly board: number;
  readonly kill: () => void;
  /** When the last heartbeat came (0: none yet, not watched yet). */
  lastBeat: number;
  killed: boolean;
}

/**
 * The primary's watchdog over its workers: a worker whose heartbeats stopped for the limit is
 * logged (`LS_WATCHDOG`, with the script on its scoreboard) and killed; the manager replaces it.
 * One timer for every worker, running only while some worker is watched.
 */
export class WorkerWatchdog {
  private readonly watched = new Map<number, Watched>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly limitMs: number,
    private readonly log: Logger,
  ) {}

  /**
   * A scoreboard for a worker about to be forked: an unlinked temporary file, read and written
   * through this fd and the worker's inherited copy only (nothing left on disk, nothing another
   * process could open).
   */
  openBoard(): number {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lodestone-board-'));
    try {
      return fs.openSync(path.join(dir, 'board'), 'w+', 0o600);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  /** Watches worker `pid` (from its first heartbeat on), which writes to `board`; `kill` ends it. */
  watch(pid: number, board: number, kill: () => void): void {
    this.watched.set(pid, { board, kill, lastBeat: 0, killed: false });
    if (this.timer === null) {
      this.timer = setInterval(() => this.check(), checkEveryMs(this.limitMs));
      this.timer.unref();
    }
  }

  /** Worker `pid`'s event loop turned. */
  beat(pid: number): void {
    const w = this.watched.get(pid);
    if (w !== undefined) w.lastBeat = Date.now();
  }

  /** Worker `pid` exited: its scoreboard is closed. */
  unwatch(pid: number): void {
    const w = this.watched.get(pid);
    if (w === undefined) return;
    this.watched.delete(pid);
    fs.closeSync(w.board);
    if (this.watched.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private check(): void {
    const now = Date.now();
    for (const [pid, w] of this.watched) {
      if (w.killed || w.lastBeat === 0 || now - w.lastBeat < this.limitMs) continue;
      w.killed = true;
      this.log.error('LS_WATCHDOG', 'event loop stuck; killing the worker', { stuckMs: now - w.lastBeat, limitMs: this.limitMs, script: readBoard(w.board), pid });
      w.kill();
    }
  }
}

/** The script a worker's scoreboard names (the last one a run slice started), or '-'. */
function readBoard(fd: number): string {
  try {
    const buf = Buffer.alloc(4096);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    const line = buf.subarray(0, n).toString('utf8');
    const end = line.indexOf('\n');
    return end > 0 ? line.slice(0, end) : '-';
  } catch {
    return '-';
  }
}
