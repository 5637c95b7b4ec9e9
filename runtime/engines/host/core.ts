/**
 * The run core of a script host: one run's state, its limits and how it ends (fatal, abort,
 * exit), the wall clock, waits (guard, sleep) and the slow-log hooks. Every capability
 * (request.ts, output.ts, files.ts, cache.ts, pass.ts) works on this state and ends or waits
 * through it, so it is the one part all of them share.
 *
 * The state is {@link HostCore}, an interface that ScriptHost (../host.ts) implements: one
 * object per run holds every capability's state, and ScriptHost's methods delegate to the
 * functions here and in the capability modules. (Not a base class: a derived class cost ~20 ns
 * more per construction on Node 20, measured; not an object per capability: an allocation each.)
 *
 * It holds the run's fatal error: a limit hit or an abort is recorded once in
 * {@link HostCore.fatal}, and engines must stop the script when it is set, even if the script
 * catches errors (Lua's pcall, JS try/catch): a limit is not the script's to swallow.
 */
import type { Request } from '../../fastcgi/server/request.js';
import type { Response } from '../../fastcgi/server/response.js';
import type { Frame, WaitLocator } from '../slow-log.js';
import { ScriptError, type ExitRest, type ScriptLimits } from '../script-error.js';
import type { Code } from '../../errors.js';
import type { HostServices } from './services.js';

/**
 * Wall-time limits of all running scripts, checked by one process-wide interval. A Node timer
 * per run (setTimeout + clearTimeout) cost ~10 us of CPU per request under load, a sixth of a
 * Lua request; a Set add/delete costs almost nothing. A limit fires up to WALL_TICK_MS late.
 * (Code that runs synchronously is bounded by the CPU limit; this one bounds waits.)
 */
const WALL_TICK_MS = 25;
/** The longest delay setTimeout honours (2^31-1 ms); a longer one fires after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const running = new Set<HostCore>();
let wallClock: NodeJS.Timeout | null = null;
let idleTicks = 0;

function watchWallTime(host: HostCore): void {
  running.add(host);
  if (wallClock) return;
  wallClock = setInterval(() => {
    const now = Date.now();
    const clock = performance.now();
    for (const h of running) {
      checkWallTime(h, now);
      // Only runs that wait are here, and while this tick runs no script executes: a slow one
      // is waiting for the host (the engines' own checks catch a script that executes).
      if (clock >= h.slowAt) slowWhileWaiting(h, clock);
    }
    // Stop after a quiet second, not at once: a busy server would otherwise start and stop the
    // interval around every request, which is the cost this avoids.
    idleTicks = running.size === 0 ? idleTicks + 1 : 0;
    if (idleTicks * WALL_TICK_MS >= 1000 && wallClock) {
      clearInterval(wallClock);
      wallClock = null;
    }
  }, WALL_TICK_MS);
  wallClock.unref();
}

/**
 * One script run's state, as ScriptHost holds it. The capability modules read and write it
 * through this interface; engines use ScriptHost's methods. Fields documented on ScriptHost.
 */
export interface HostCore {
  readonly request: Request;
  readonly response: Response;
  readonly limits: ScriptLimits;
  readonly scriptFilename: string;
  readonly services: HostServices;
  /** REQUEST_URI, for the slow log's line. */
  readonly uri: string;
  fatal: ScriptError | null;
  slowAt: number;
  waitLocator: WaitLocator | null;
  /** The host calls the run waits in now ('sleep()', 'pass(php)'), for the slow log. */
  waits: string[] | null;
  /**
   * Called once when the run is stopped. Plain functions, not an AbortController: creating
   * one and its listeners per run cost more than a whole Lua run (measured under load).
   */
  stopWaiters: Set<() => void> | null;
  offRequestAbort: (() => void) | null;
  deadline: number;
  /** 0: not started; 1: started, not watched yet; 2: watched (wall clock and abort listener). */
  watch: number;
  /** output.ts: body bytes written so far this run. */
  outputBytes: number;
  /** request.ts: the decoded query, made on first use. */
  queryCache: Record<string, string> | null;
  /** request.ts: the request headers, made on first use. */
  headerCache: Record<string, string> | null;
  /** cookies.ts: the request's cookies, parsed on first use. */
  cookieCache: Record<string, string> | null;
  /**
   * output.ts (files.ts and pass.ts drop it): in raw-output mode, what the script printed
   * until its CGI header block is complete; null otherwise.
   */
  rawHead: Buffer[] | null;
  /** request.ts: the request body, read once. */
  bodyRead: Promise<Buffer> | null;
  /** output.ts: log() bytes sent so far this run. */
  logged: number;
  /** output.ts: the log budget is spent (the marker went out). */
  logDropping: boolean;
  // The run-core calls the capabilities make (ScriptHost's methods, delegating here).
  abort(kind: 'limit' | 'runtime', message: string, line?: number | null): ScriptError;
  exit(status: number, page: boolean, code?: Code | null, message?: string, rest?: ExitRest | null): ScriptError;
  guard<T>(work: Promise<T>, what: string): Promise<T>;
}

/**
 * Starts the wall-clock limit and the watch for the web server aborting; call before running.
 * Both only matter once the run waits (sleep, body): while a script runs synchronously no
 * timer and no socket event can fire, and the CPU limit bounds it. So the run is registered
 * with the wall clock and the request's abort listeners at its first wait ({@link sleep}, {@link guard}),
 * and most requests, which never wait, skip both (a Set entry, a listener array, a closure).
 */
export function start(host: HostCore): void {
  host.deadline = Date.now() + host.limits.wallMs;
  host.watch = 1;
  const slow = host.services.slowLog;
  if (slow) host.slowAt = performance.now() + slow.ms;
  if (host.request.aborted) abortedByWebServer(host);
}

/** Stops the timers of this run; call when the run is over, however it ended. */
export function finish(host: HostCore): void {
  if (host.watch === 2) {
    running.delete(host);
    host.offRequestAbort?.();
    host.offRequestAbort = null;
  }
  host.watch = 0;
}

// At the run's first wait: from now on the wall clock and an abort can stop it.
function watchWaits(host: HostCore): void {
  host.watch = 2;
  watchWallTime(host);
  if (host.request.aborted) abortedByWebServer(host);
  else host.offRequestAbort = host.request.onAbort(() => abortedByWebServer(host));
}

function abortedByWebServer(host: HostCore): void {
  abort(host, 'limit', 'request aborted by the web server');
}

/** Stops the run when its wall-time limit has passed; called by the process-wide clock. */
export function checkWallTime(host: HostCore, now: number): void {
  if (now >= host.deadline) abort(host, 'limit', `wall time over ${host.limits.wallMs} ms`);
}

/**
 * The engine found the run past slowAt while its script executes (`now`: the clock it
 * read): logs the slow line with the script's stack, once per run.
 */
export function slowWhileRunning(host: HostCore, now: number, frames: readonly Frame[]): void {
  const slow = host.services.slowLog;
  if (!slow || now < host.slowAt) return;
  const elapsed = now - (host.slowAt - slow.ms);
  host.slowAt = Infinity;
  slow.running(host, elapsed, frames);
}

/**
 * The wall-time tick found the run past slowAt between its slices: logs the slow line
 * with the host calls it waits in and where the script made them, once per run. No call in
 * progress: the script has ended and the response is still going out (a relay, a range),
 * which the end-of-request line times; nothing is logged.
 */
export function slowWhileWaiting(host: HostCore, now: number): void {
  const slow = host.services.slowLog;
  const waits = host.waits;
  if (!slow || now < host.slowAt || waits === null || waits.length === 0) return;
  const elapsed = now - (host.slowAt - slow.ms);
  host.slowAt = Infinity;
  slow.waiting(host, elapsed, [...new Set(waits)], host.waitLocator?.waitFrames() ?? []);
}

// Records that the run waits in host call `what` until the returned function is called (once).
function waitIn(host: HostCore, what: string): () => void {
  const waits = (host.waits ??= []);
  waits.push(what);
  let open = true;
  return () => {
    if (!open) return;
    open = false;
    const i = waits.lastIndexOf(what);
    if (i >= 0) waits.splice(i, 1);
  };
}

// Registers `fn` to run when the run is stopped; returns a function that unregisters it.
function onStop(host: HostCore, fn: () => void): () => void {
  (host.stopWaiters ??= new Set()).add(fn);
  return () => host.stopWaiters?.delete(fn);
}

/**
 * Records a fatal error (the first one wins) and aborts pending async calls. Engines call this
 * for their own limits (CPU, memory) so every limit takes one path.
 */
export function abort(host: HostCore, kind: 'limit' | 'runtime', message: string, line: number | null = null): ScriptError {
  return stop(host, new ScriptError(kind, message, host.scriptFilename, line));
}

/**
 * Gives the fatal error the script line an engine found after the stop (a JS limit is raised
 * by the interrupt handler, which does not know where the script is; the error it leaves does).
 */
export function locate(host: HostCore, line: number): void {
  const f = host.fatal;
  if (f !== null && f.line === null) host.fatal = new ScriptError(f.kind, f.message, f.file, line, f.exit);
}

// Records the run's end (the first one wins) and wakes whatever waits on it.
function stop(host: HostCore, error: ScriptError): ScriptError {
  if (!host.fatal) {
    host.fatal = error;
    const waiters = host.stopWaiters;
    host.stopWaiters = null;
    if (waiters) for (const fn of waiters) fn();
  }
  return host.fatal;
}

/**
 * Ends the run from the host side (see ScriptErrorKind `exit`): the response keeps what was
 * prepared, or becomes the error page for `status` when `page` is set. Returns the error to
 * throw at the script, which cannot catch it.
 */
export function exit(host: HostCore, status: number, page: boolean, code: Code | null = null, message = 'exit', rest: ExitRest | null = null): ScriptError {
  return stop(host, new ScriptError('exit', message, host.scriptFilename, null, { status, page, code, rest }));
}

/**
 * Rejects with the fatal error as soon as the run is stopped, whatever `work` does. `what`
 * names the script's host call for the slow log while the run waits for it. Every host call a
 * script waits in goes through here.
 */
export function guard<T>(host: HostCore, work: Promise<T>, what: string): Promise<T> {
  if (host.watch === 1) watchWaits(host);
  if (host.fatal) return Promise.reject(host.fatal);
  const waited = waitIn(host, what);
  return new Promise<T>((resolve, reject) => {
    const off = onStop(host, () => {
      waited();
      reject(host.fatal!);
    });
    work.then(
      (value) => {
        off();
        waited();
        resolve(value);
      },
      (err: unknown) => {
        off();
        waited();
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/**
 * Waits `ms` milliseconds without blocking the event loop; rejects when the run is stopped.
 * NaN and negative waits are 0 (as setTimeout does); a wait that would outlast the run's wall
 * limit (Infinity included) ends the run with that limit when the limit is reached, as the
 * wall clock would: Node's timers cannot wait longer than 2^31-1 ms and fire at once instead.
 */
export function sleep(host: HostCore, ms: number): Promise<void> {
  const wait = ms > 0 ? ms : 0;
  if (host.watch === 1) watchWaits(host);
  if (host.fatal) return Promise.reject(host.fatal);
  const left = host.deadline - Date.now();
  const clamped = wait >= left;
  const waited = waitIn(host, 'sleep()');
  // The timer is cleared on abort: a stopped run must not keep the process busy for the
  // rest of a long sleep.
  return new Promise<void>((resolve, reject) => {
    let timer: NodeJS.Timeout;
    const off = onStop(host, () => {
      clearTimeout(timer);
      waited();
      reject(host.fatal!);
    });
    const done = (): void => {
      off();
      waited();
      resolve();
    };
    // Ends the wait at the deadline: the wall limit's own error, not a return to the script.
    const overrun = (): void => void abort(host, 'limit', `wall time over ${host.limits.wallMs} ms`);
    const arm = (until: number): void => {
      const rest = until - Date.now();
      // Node fires a timer above MAX_TIMER_MS after 1 ms; a longer wait re-arms in steps.
      if (rest > MAX_TIMER_MS) timer = setTimeout(() => arm(until), MAX_TIMER_MS);
      else timer = setTimeout(clamped ? overrun : done, Math.max(0, rest));
    };
    if (!clamped && wait <= MAX_TIMER_MS) timer = setTimeout(done, wait);
    else arm(clamped ? host.deadline : Date.now() + wait);
  });
}
