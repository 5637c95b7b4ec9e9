/**
 * The in-flight half of the slow log, like php-fpm's `request_slowlog_timeout`: a script run
 * still going `slowRequestMs` after it started logs ONE `LS_SLOW_REQUEST` line saying where the
 * script is at that moment: its stack (innermost frame first) while it executes, or the host
 * call it waits in (and the script line that made the call) while it waits. The line with the
 * request's total time, when it ends, is the status handler's (status.ts).
 *
 * Nothing runs per request for it but one clock read when the run starts (ScriptHost.start):
 * the check is a number comparison against ScriptHost.slowAt in code that already runs
 * periodically and already reads the clock: Lua's count hook, QuickJS's interrupt handler, and,
 * for a run waiting on the host, the process-wide wall-time tick (host.ts). No timer per run.
 */
import path from 'node:path';
import type { Logger } from '../log.js';

/**
 * What a slow line names of a run: the ScriptHost has these (a structural type, so this module
 * need not import the host, which imports it).
 */
export interface SlowRun {
  readonly request: { readonly id: number; readonly connection: { readonly id: number } };
  readonly scriptFilename: string;
  readonly uri: string | undefined;
}

/** One frame of a script's stack, as an engine found it. */
export interface Frame {
  /** The function's name when the engine knows it; null for the main chunk or an anonymous function. */
  readonly name: string | null;
  /** The script's path, or how the engine names code that is not the script's ('[JS]' for a Lua library function, '[native]', '<lodestone>'). */
  readonly file: string;
  /** The line in `file`, or null when there is none (host code, a frame QuickJS has no line for). */
  readonly line: number | null;
}

/** Frames a slow line shows at most; engines collect one more, to know whether to add `...`. */
export const MAX_FRAMES = 10;

/** A part of the engine that can say where its waiting script made the host call it waits in. */
export interface WaitLocator {
  /** The script's frames at the host call it waits in, innermost first; [] when not known. */
  waitFrames(): Frame[];
}

/**
 * Writes the in-flight slow lines of one process. Made by the CLI when `slowRequestMs` is set,
 * and handed to every run through the host services.
 *
 * @example
 *   const slowLog = new SlowLog(1000, log); // services: { ...services, slowLog }
 */
export class SlowLog {
  constructor(
    /** slowRequestMs: how long a run may go before its line is written. */
    readonly ms: number,
    private readonly log: Logger,
  ) {}

  /** Logs that `host`'s script is still executing, at `frames` (innermost first). */
  running(host: SlowRun, elapsedMs: number, frames: readonly Frame[]): void {
    this.log.warn('LS_SLOW_REQUEST', 'slow request still running', {
      ...requestFields(host, elapsedMs),
      stack: formatStack(frames, host.scriptFilename) || undefined,
    });
  }

  /** Logs that `host`'s script is still waiting in the host calls `calls`, made at `frames`. */
  waiting(host: SlowRun, elapsedMs: number, calls: readonly string[], frames: readonly Frame[]): void {
    this.log.warn('LS_SLOW_REQUEST', 'slow request still waiting', {
      ...requestFields(host, elapsedMs),
      waiting: calls.join(', '),
      stack: formatStack(frames, host.scriptFilename) || undefined,
    });
  }
}

// The request as the connection's own lines name it (conn, request), plus what an operator
// looks for first: the script and the URI.
function requestFields(host: SlowRun, elapsedMs: number): Record<string, string | number | undefined> {
  const req = host.request;
  return { conn: req.connection.id, request: req.id, script: host.scriptFilename, uri: host.uri, ms: Math.round(elapsedMs) };
}

/**
 * A stack as one log field: `name file:line` per frame (a frame in the script itself shows the
 * file's base name: the line already names the script), innermost first, joined by ` < `, at
 * most {@link MAX_FRAMES} frames then `...`.
 *
 * @example
 *   formatStack([{ name: 'inner', file: '/srv/a.lua', line: 4 }, { name: null, file: '/srv/a.lua', line: 9 }], '/srv/a.lua')
 *   // 'inner a.lua:4 < a.lua:9'
 */
export function formatStack(frames: readonly Frame[], script: string): string {
  const shown = frames.slice(0, MAX_FRAMES).map((f) => {
    const file = f.file === script ? path.basename(f.file) : f.file;
    const where = f.line === null ? file : `${file}:${f.line}`;
    return f.name ? `${f.name} ${where}` : where;
  });
  if (frames.length > MAX_FRAMES) shown.push('...');
  return shown.join(' < ');
}
