/**
 * What a running script can touch, engine-neutral. The Lua and JS engines are thin adapters
 * that expose this object under the script API names (README, "Script API"); anything not here
 * (files, processes, modules) a script cannot reach.
 *
 * It also holds the run's fatal error: a limit hit or an abort is recorded once in
 * {@link ScriptHost.fatal}, and engines must stop the script when it is set, even if the script
 * catches errors (Lua's pcall, JS try/catch): a limit is not the script's to swallow.
 */
import { createHash, randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import nodePath from 'node:path';
import { CacheValueError, type CachedResponse, type CacheValue, type ContentCache } from '../content-cache/content-cache.js';
import { parseCgiHead } from '../cgi.js';
import { httpStatus, type AnswerCode, type Code } from '../errors.js';
import { encodePairs, decodePairs } from '../fastcgi/pairs.js';
import { BackendError, readBody, type BackendPool, type BackendResponse } from '../fastcgi/client/pool.js';
import type { FileInfo, Files, SendOptions } from '../files/files.js';
import type { Request } from '../fastcgi/server/request.js';
import { checkHeader, type Response } from '../fastcgi/server/response.js';
import type { Frame, SlowLog, WaitLocator } from './slow-log.js';
import { ScriptError, type ExitRest, type ScriptLimits } from './script-error.js';

/**
 * Wall-time limits of all running scripts, checked by one process-wide interval. A Node timer
 * per run (setTimeout + clearTimeout) cost ~10 us of CPU per request under load, a sixth of a
 * Lua request; a Set add/delete costs almost nothing. A limit fires up to WALL_TICK_MS late.
 * (Code that runs synchronously is bounded by the CPU limit; this one bounds waits.)
 */
const WALL_TICK_MS = 25;
/** The longest delay setTimeout honours (2^31-1 ms); a longer one fires after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const running = new Set<ScriptHost>();
let wallClock: NodeJS.Timeout | null = null;
let idleTicks = 0;

function watchWallTime(host: ScriptHost): void {
  running.add(host);
  if (wallClock) return;
  wallClock = setInterval(() => {
    const now = Date.now();
    const clock = performance.now();
    for (const h of running) {
      h.checkWallTime(now);
      // Only runs that wait are here, and while this tick runs no script executes: a slow one
      // is waiting for the host (the engines' own checks catch a script that executes).
      if (clock >= h.slowAt) h.slowWhileWaiting(clock);
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

/** What the server lends a run beyond the request itself; each part may be absent. */
export interface HostServices {
  /** File access for stat() and sendfile(). */
  readonly files: Files | null;
  /** The content cache behind cache.get/set/delete/incr. */
  readonly cache: ContentCache | null;
  /** FastCGI backend pools by name, for pass(). */
  readonly backends: ReadonlyMap<string, BackendPool>;
  /** Where cache.set() writes large response bodies, to be sent with sendfile; null: kept inline. */
  readonly cacheFiles?: CacheFiles | null;
  /** The in-flight slow log (slowRequestMs); null or absent: off. */
  readonly slowLog?: SlowLog | null;
}

/** Large cached bodies go to files (seed 001's trick: tmpfs, then X-Sendfile / X-Accel-Redirect). */
export interface CacheFiles {
  /** A directory inside files.roots (real path), ideally on tmpfs. */
  readonly dir: string;
  /** Bodies of at least this many bytes are written there. */
  readonly minBytes: number;
}

/**
 * The pseudo-header under which a cached response keeps the path of its body file. Not an HTTP
 * token (the colon), so no real header can collide with it; scripts see it as `res.file`.
 */
export const BODY_FILE = ':file';

/** No files, no cache, no backends: what a bare host (tests, benches) gets. */
export const noServices: HostServices = Object.freeze({ files: null, cache: null, backends: new Map<string, BackendPool>() });

/** A response as scripts build, cache and emit it (storedAt is set when it is cached). */
export interface ScriptResponse {
  readonly status: number;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Buffer;
  /** The body is this file (a large cached body): emit() sends it with sendfile(). */
  readonly file?: string;
}

/** Splits a cached response's body-file pseudo-header off its real headers. */
export function bodyFile(value: ScriptResponse): { headers: ScriptResponse['headers']; file: string | undefined } {
  let file = value.file;
  if (!value.headers.some(([name]) => name === BODY_FILE)) return { headers: value.headers, file };
  const headers = value.headers.filter(([name, v]) => (name === BODY_FILE ? ((file ??= v), false) : true));
  return { headers, file };
}

/** How pass() forwards the request. */
export interface PassOptions {
  /** Params to set (a string) or remove (null) before forwarding, e.g. SCRIPT_FILENAME for PHP. */
  readonly params?: Readonly<Record<string, string | null>>;
  /** A body to send instead of the request's own. */
  readonly body?: Buffer;
}

/** Longest cache key accepted from a script (Redis allows more; a long key is a script bug). */
export const MAX_CACHE_KEY = 1024;

/** Response content type when a script sets none (mod_magnet and PHP do the same). */
export const DEFAULT_CONTENT_TYPE = 'text/html; charset=utf-8';

/** One script run for one request. */
export class ScriptHost {
  /** The first fatal error of this run (a limit or an abort); engines stop when it is set. */
  fatal: ScriptError | null = null;
  /**
   * performance.now() from which the run is slow (services.slowLog's ms after {@link start}):
   * the engines compare it with the clock they read anyway in their periodic checks and then
   * call {@link slowWhileRunning}. Infinity: no slow log, or the run's slow line is written.
   */
  slowAt = Infinity;
  /** Where a waiting script made its host call, for the slow log: set by the engine when the run waits. */
  waitLocator: WaitLocator | null = null;
  // The host calls the run waits in now ('sleep()', 'pass(php)'), for the slow log.
  private waits: string[] | null = null;
  // Called once when the run is stopped. Plain functions, not an AbortController: creating
  // one and its listeners per run cost more than a whole Lua run (measured under load).
  private stopWaiters: Set<() => void> | null = null;
  private offRequestAbort: (() => void) | null = null;
  private output = 0;
  private queryCache: Record<string, string> | null = null;
  private headerCache: Record<string, string> | null = null;
  private deadline = Infinity;
  // 0: not started; 1: started, not watched yet; 2: watched (wall clock and abort listener).
  private watch = 0;
  // Raw-output mode: what the script printed until its CGI header block is complete.
  private rawHead: Buffer[] | null;
  private bodyRead: Promise<Buffer> | null = null;
  // log(): bytes sent so far this run, and whether the budget is spent (the marker went out).
  private logged = 0;
  private logDropping = false;

  constructor(
    readonly request: Request,
    readonly response: Response,
    readonly limits: ScriptLimits,
    /** Absolute path of the script (after resolving symlinks). */
    readonly scriptFilename: string,
    /** The root the script was found under. */
    readonly documentRoot: string,
    /**
     * Raw-output mode (lua-fastcgi-magnet scripts): the script prints its own CGI header block
     * (`Status:`, headers, blank line) before the body.
     */
    raw = false,
    /** Files, cache and backends this run may use. */
    readonly services: HostServices = noServices,
  ) {
    this.rawHead = raw ? [] : null;
  }

  /**
   * Starts the wall-clock limit and the watch for the web server aborting; call before running.
   * Both only matter once the run waits (sleep, body): while a script runs synchronously no
   * timer and no socket event can fire, and the CPU limit bounds it. So the run is registered
   * with the wall clock and the request's abort listeners at its first wait ({@link sleep}, {@link body}),
   * and most requests, which never wait, skip both (a Set entry, a listener array, a closure).
   */
  start(): void {
    this.deadline = Date.now() + this.limits.wallMs;
    this.watch = 1;
    const slow = this.services.slowLog;
    if (slow) this.slowAt = performance.now() + slow.ms;
    if (this.request.aborted) this.abortedByWebServer();
  }

  /** Stops the timers of this run; call when the run is over, however it ended. */
  finish(): void {
    if (this.watch === 2) {
      running.delete(this);
      this.offRequestAbort?.();
      this.offRequestAbort = null;
    }
    this.watch = 0;
  }

  // At the run's first wait: from now on the wall clock and an abort can stop it.
  private watchWaits(): void {
    this.watch = 2;
    watchWallTime(this);
    if (this.request.aborted) this.abortedByWebServer();
    else this.offRequestAbort = this.request.onAbort(() => this.abortedByWebServer());
  }

  private abortedByWebServer(): void {
    this.abort('limit', 'request aborted by the web server');
  }

  /** Stops the run when its wall-time limit has passed; called by the process-wide clock. */
  checkWallTime(now: number): void {
    if (now >= this.deadline) this.abort('limit', `wall time over ${this.limits.wallMs} ms`);
  }

  /**
   * The engine found the run past {@link slowAt} while its script executes (`now`: the clock it
   * read): logs the slow line with the script's stack, once per run.
   */
  slowWhileRunning(now: number, frames: readonly Frame[]): void {
    const slow = this.services.slowLog;
    if (!slow || now < this.slowAt) return;
    const elapsed = now - (this.slowAt - slow.ms);
    this.slowAt = Infinity;
    slow.running(this, elapsed, frames);
  }

  /**
   * The wall-time tick found the run past {@link slowAt} between its slices: logs the slow line
   * with the host calls it waits in and where the script made them, once per run. No call in
   * progress: the script has ended and the response is still going out (a relay, a range),
   * which the end-of-request line times; nothing is logged.
   */
  slowWhileWaiting(now: number): void {
    const slow = this.services.slowLog;
    const waits = this.waits;
    if (!slow || now < this.slowAt || waits === null || waits.length === 0) return;
    const elapsed = now - (this.slowAt - slow.ms);
    this.slowAt = Infinity;
    slow.waiting(this, elapsed, [...new Set(waits)], this.waitLocator?.waitFrames() ?? []);
  }

  // Records that the run waits in host call `what` until the returned function is called (once).
  private waitIn(what: string): () => void {
    const waits = (this.waits ??= []);
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
  private onStop(fn: () => void): () => void {
    (this.stopWaiters ??= new Set()).add(fn);
    return () => this.stopWaiters?.delete(fn);
  }

  /**
   * Records a fatal error (the first one wins) and aborts pending async calls. Engines call this
   * for their own limits (CPU, memory) so every limit takes one path.
   */
  abort(kind: 'limit' | 'runtime', message: string, line: number | null = null): ScriptError {
    return this.stop(new ScriptError(kind, message, this.scriptFilename, line));
  }

  /**
   * Gives the fatal error the script line an engine found after the stop (a JS limit is raised
   * by the interrupt handler, which does not know where the script is; the error it leaves does).
   */
  locate(line: number): void {
    const f = this.fatal;
    if (f !== null && f.line === null) this.fatal = new ScriptError(f.kind, f.message, f.file, line, f.exit);
  }

  // Records the run's end (the first one wins) and wakes whatever waits on it.
  private stop(error: ScriptError): ScriptError {
    if (!this.fatal) {
      this.fatal = error;
      const waiters = this.stopWaiters;
      this.stopWaiters = null;
      if (waiters) for (const fn of waiters) fn();
    }
    return this.fatal;
  }

  /**
   * Ends the run from the host side (see ScriptErrorKind `exit`): the response keeps what was
   * prepared, or becomes the error page for `status` when `page` is set. Returns the error to
   * throw at the script, which cannot catch it.
   */
  exit(status: number, page: boolean, code: Code | null = null, message = 'exit', rest: ExitRest | null = null): ScriptError {
    return this.stop(new ScriptError('exit', message, this.scriptFilename, null, { status, page, code, rest }));
  }

  /** Ends the run with the error page of `code`'s status, logged with `code` (a refused file access). */
  private refuse(code: AnswerCode, message: string): ScriptError {
    return this.exit(httpStatus[code], true, code, message);
  }

  // ---- request ---------------------------------------------------------------------------

  /** REQUEST_METHOD. */
  get method(): string {
    return this.request.param('REQUEST_METHOD') ?? 'GET';
  }

  /** REQUEST_URI as the client sent it (path and query, not decoded). */
  get uri(): string {
    return this.request.param('REQUEST_URI') ?? '';
  }

  /** The decoded path of the URI, without the query string. */
  get path(): string {
    const uri = this.uri;
    const q = uri.indexOf('?');
    const raw = q < 0 ? uri : uri.slice(0, q);
    try {
      return decodeURIComponent(raw);
    } catch {
      return raw;
    }
  }

  /** QUERY_STRING, not decoded. */
  get queryString(): string {
    return this.request.param('QUERY_STRING') ?? '';
  }

  /** The decoded query arguments; for a repeated name the last value wins (as in PHP's $_GET). */
  get query(): Readonly<Record<string, string>> {
    if (!this.queryCache) {
      const out = Object.create(null) as Record<string, string>;
      for (const [name, value] of new URLSearchParams(this.queryString)) out[name] = value;
      this.queryCache = out;
    }
    return this.queryCache;
  }

  /** Request headers with lower-case names, from the HTTP_* params and CONTENT_TYPE/LENGTH. */
  get headers(): Readonly<Record<string, string>> {
    if (!this.headerCache) {
      const out = Object.create(null) as Record<string, string>;
      const params = this.request.params;
      for (const name in params) {
        if (name.startsWith('HTTP_')) out[name.slice(5).toLowerCase().replaceAll('_', '-')] = params[name]!;
      }
      if (params.CONTENT_TYPE) out['content-type'] = params.CONTENT_TYPE;
      if (params.CONTENT_LENGTH) out['content-length'] = params.CONTENT_LENGTH;
      this.headerCache = out;
    }
    return this.headerCache;
  }

  /** REMOTE_ADDR: the client's address as the web server saw it. */
  get remoteAddr(): string {
    return this.request.param('REMOTE_ADDR') ?? '';
  }

  /** The request body, read on demand (once; pass() reuses it); rejects when the run is stopped. */
  body(): Promise<Buffer> {
    return this.guard(this.bodyBytes(), 'request.body()');
  }

  // The body is read once: pass() forwards the bytes request.body() gave, or reads them itself.
  private bodyBytes(): Promise<Buffer> {
    return (this.bodyRead ??= this.request.readBody());
  }

  // ---- response --------------------------------------------------------------------------

  /** The response status. */
  get status(): number {
    return this.response.status;
  }

  set status(code: number) {
    if (!Number.isInteger(code) || code < 100 || code > 999) throw new TypeError(`invalid status ${String(code)}`);
    this.response.status = code;
  }

  /** A response header, or undefined. */
  getHeader(name: string): string | undefined {
    return this.response.getHeader(name);
  }

  /** Sets a response header; null or undefined removes it. Throws TypeError on CR/LF. */
  setHeader(name: string, value: string | number | null | undefined): void {
    if (value === null || value === undefined) this.response.removeHeader(name);
    else this.response.setHeader(name, value);
  }

  /** Appends to the body; past limits.outputBytes the run is stopped. */
  write(chunk: string | Uint8Array): void {
    const bytes = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
    this.output += bytes;
    if (this.output > this.limits.outputBytes) throw this.abort('limit', `output over ${this.limits.outputBytes} bytes`);
    if (this.rawHead) this.rawHead.push(typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk));
    else this.response.write(chunk);
  }

  /**
   * Ends the script's output: in raw mode, applies the CGI header block it printed. A missing
   * or malformed block is a script error (recorded in {@link fatal}).
   */
  endOutput(): void {
    if (this.rawHead && !this.applyRawHead()) {
      this.abort('runtime', 'raw output mode: the script printed no complete CGI header block');
    }
  }

  // Moves a complete printed header block into the response; false while it is incomplete.
  private applyRawHead(): boolean {
    const printed = Buffer.concat(this.rawHead!);
    const head = parseCgiHead(printed);
    if (head === 'incomplete') return false;
    if ('error' in head) {
      this.abort('runtime', `raw output mode: ${head.error}`);
      return true;
    }
    this.rawHead = null;
    this.response.status = head.status;
    for (const [name, value] of head.headers) this.response.addHeader(name, value);
    if (head.bodyOffset < printed.length) this.response.write(printed.subarray(head.bodyOffset));
    return true;
  }

  /** Sends the headers and body so far (streaming), adding the default Content-Type if unset. */
  flush(): void {
    // In raw mode nothing can be sent before the script has printed its whole header block.
    if (this.rawHead && !this.applyRawHead()) return;
    if (this.fatal) return;
    this.defaultContentType();
    this.response.flush();
  }

  /**
   * Ends a run that succeeded: a returned status applies (unless headers were already sent),
   * the default Content-Type is added if unset, and the response is sent.
   */
  end(status: number | undefined): void {
    if (status !== undefined && !this.response.headersSent) this.status = status;
    this.defaultContentType();
    this.response.end();
  }

  private defaultContentType(): void {
    if (!this.response.headersSent && this.response.getHeader('Content-Type') === undefined) {
      this.response.setHeader('Content-Type', DEFAULT_CONTENT_TYPE);
    }
  }

  /**
   * How many bytes of log text the next log() line may keep: the per-line bound, or less when
   * the run's log budget is nearly spent; 0 once it is spent. Engines cut a long line to this
   * inside the VM, so a huge string is never copied out only to be dropped.
   */
  get logRoom(): number {
    if (this.logDropping) return 0;
    return Math.max(0, Math.min(this.limits.logLineBytes, this.limits.logBytes - this.logged));
  }

  /**
   * A line for the web server's error log (FCGI_STDERR), bounded by limits.logLineBytes per line
   * and limits.logBytes per run. A longer line is cut (at a UTF-8 character boundary) and ends
   * with a marker saying how much was cut; `cut` is what the engine already cut off before the
   * call (see {@link logRoom}), in `unit`s. The first line past the run's budget is replaced
   * by one marker; later lines are dropped silently. Never stops the run.
   */
  log(message: string, cut = 0, unit: 'bytes' | 'characters' = 'bytes'): void {
    if (this.logDropping) return;
    const room = this.logRoom;
    if (room === 0) {
      this.logDropping = true;
      this.response.log(`lodestone: log budget of this run spent (scriptLimits.logBytes = ${this.limits.logBytes}): this and later log lines dropped`);
      return;
    }
    let line = message;
    let bytes = Buffer.byteLength(line);
    if (bytes > room) {
      const kept = utf8Prefix(line, room);
      cut += unit === 'bytes' ? bytes - kept.length : line.length - kept.text.length;
      line = kept.text;
      bytes = kept.length;
    }
    this.logged += bytes;
    if (cut > 0) line += ` [lodestone: log line cut, ${cut} more ${unit} not logged]`;
    this.response.log(line);
  }

  /**
   * Waits `ms` milliseconds without blocking the event loop; rejects when the run is stopped.
   * NaN and negative waits are 0 (as setTimeout does); a wait that would outlast the run's wall
   * limit (Infinity included) ends the run with that limit when the limit is reached, as the
   * wall clock would: Node's timers cannot wait longer than 2^31-1 ms and fire at once instead.
   */
  sleep(ms: number): Promise<void> {
    const wait = ms > 0 ? ms : 0;
    if (this.watch === 1) this.watchWaits();
    if (this.fatal) return Promise.reject(this.fatal);
    const left = this.deadline - Date.now();
    const clamped = wait >= left;
    const waited = this.waitIn('sleep()');
    // The timer is cleared on abort: a stopped run must not keep the process busy for the
    // rest of a long sleep.
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout;
      const off = this.onStop(() => {
        clearTimeout(timer);
        waited();
        reject(this.fatal!);
      });
      const done = (): void => {
        off();
        waited();
        resolve();
      };
      // Ends the wait at the deadline: the wall limit's own error, not a return to the script.
      const overrun = (): void => void this.abort('limit', `wall time over ${this.limits.wallMs} ms`);
      const arm = (until: number): void => {
        const rest = until - Date.now();
        // Node fires a timer above MAX_TIMER_MS after 1 ms; a longer wait re-arms in steps.
        if (rest > MAX_TIMER_MS) timer = setTimeout(() => arm(until), MAX_TIMER_MS);
        else timer = setTimeout(clamped ? overrun : done, Math.max(0, rest));
      };
      if (!clamped && wait <= MAX_TIMER_MS) timer = setTimeout(done, wait);
      else arm(clamped ? this.deadline : Date.now() + wait);
    });
  }

  // ---- files -----------------------------------------------------------------------------

  private get fileAccess(): Files {
    if (!this.services.files) throw new Error('file access is not configured on this server');
    return this.services.files;
  }

  /**
   * stat(path): null when missing. A path outside the configured roots ends the run with 403
   * (a script probing the filesystem is refused, not answered).
   */
  async stat(path: string): Promise<FileInfo | null> {
    const found = await this.guard(this.fileAccess.lookup(path), 'stat()');
    if (found.kind === 'refused') throw this.refuse('LS_FILE_FORBIDDEN', `stat(${JSON.stringify(path)}): ${found.reason}`);
    return found.kind === 'missing' ? null : found.info;
  }

  /**
   * sendfile(path[, offset, length]): ends the run with the web server sending the file (an
   * escalation header), or with Lodestone sending a range the web server cannot take. Missing
   * gives 404; a directory, anything else not a regular file (a FIFO) or a path outside the
   * roots 403. Never resolves: the run ends.
   */
  async sendfile(path: string, options: SendOptions = {}): Promise<never> {
    const files = this.fileAccess;
    for (const [name, v] of [['offset', options.offset], ['length', options.length]] as const) {
      if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) throw new TypeError(`sendfile(): ${name} must be a non-negative integer`);
    }
    if (this.response.headersSent) throw new Error('sendfile() after flush(): the headers are already sent');
    const found = await this.guard(files.lookup(path), 'sendfile()');
    const what = `sendfile(${JSON.stringify(path)})`;
    if (found.kind === 'refused') throw this.refuse('LS_FILE_FORBIDDEN', `${what}: ${found.reason}`);
    if (found.kind === 'missing') throw this.refuse('LS_FILE_NOT_FOUND', `${what}: no such file`);
    if (found.kind === 'dir') throw this.refuse('LS_FILE_FORBIDDEN', `${what}: a directory`);
    // A FIFO, socket or device: the web server (or Lodestone) would block opening or reading it.
    if (found.kind === 'special') throw this.refuse('LS_FILE_FORBIDDEN', `${what}: not a regular file`);
    // Raw-output mode: a header block half printed before sendfile() is dropped with the body.
    this.rawHead = null;
    const delivery = files.deliver(this.request, this.response, found, options);
    if (delivery.kind === 'no-mapping') {
      throw this.refuse('LS_SENDFILE_NO_MAPPING', `${what}: no files.accel mapping covers ${found.path}`);
    }
    // The bytes are the server's to send, after the run: the script's limits (wall time,
    // output) cover the script, not a large range streaming out to a slow client.
    const rest: ExitRest | null = delivery.kind === 'direct' ? { kind: 'range', path: found.path, start: delivery.start, end: delivery.end } : null;
    throw this.exit(this.response.status, false, null, 'exit', rest);
  }

  // ---- cache -----------------------------------------------------------------------------

  private get contentCache(): ContentCache {
    if (!this.services.cache) throw new Error('the content cache is not configured on this server');
    return this.services.cache;
  }

  private static checkKey(key: string): void {
    if (key.length === 0 || Buffer.byteLength(key) > MAX_CACHE_KEY) throw new TypeError(`cache key must be 1 to ${MAX_CACHE_KEY} bytes`);
  }

  private static checkTtl(ttl: number): void {
    if (!Number.isFinite(ttl) || ttl < 0) throw new TypeError('cache ttl must be a number of seconds >= 0');
  }

  /**
   * cache.get(key): the value, or null on a miss (or when a shared cache is down). The
   * embedded cache answers at once (a value, not a promise), so the script need not wait.
   */
  cacheGet(key: string): CacheValue | null | Promise<CacheValue | null> {
    ScriptHost.checkKey(key);
    const cache = this.contentCache;
    const found = cache.now ? cache.now.get(key) : this.guard(cache.get(key), 'cache.get()');
    if (found instanceof Promise) return found.then((value) => this.checkBodyFile(value));
    return found !== null && !Buffer.isBuffer(found) && bodyFile(found).file !== undefined ? this.checkBodyFile(found) : found;
  }

  // A response whose body file is gone (tmpfs after a reboot, another host's file in a shared
  // Redis) is a miss, not a hit that sends nothing. The check is the confined lookup sendfile()
  // uses, so a reference planted in a shared cache cannot probe outside files.roots.
  private async checkBodyFile(value: CacheValue | null): Promise<CacheValue | null> {
    if (value === null || Buffer.isBuffer(value)) return value;
    const file = bodyFile(value).file;
    if (file === undefined) return value;
    if (!this.services.files) return null;
    const found = await this.guard(this.services.files.lookup(file), 'cache.get()');
    return found.kind === 'file' ? value : null;
  }

  /**
   * cache.set(key, value, ttl): false when not stored (too large, shared cache down). A response
   * body of at least cacheFiles.minBytes is written to a file in cacheFiles.dir and cached as a
   * reference, so a hit is sent by the web server (sendfile) instead of through Lodestone.
   */
  cacheSet(key: string, value: Buffer | ScriptResponse, ttl: number): boolean | Promise<boolean> {
    ScriptHost.checkKey(key);
    ScriptHost.checkTtl(ttl);
    const cache = this.contentCache;
    let stored: CacheValue;
    if (Buffer.isBuffer(value)) stored = value;
    else {
      const checked = checkResponse(value);
      const { headers, file } = bodyFile(checked);
      const files = this.services.cacheFiles;
      if (file === undefined && files && checked.body.length >= files.minBytes) {
        return this.guard(this.storeBodyFile(files, key, checked, ttl), 'cache.set()');
      }
      // Only a reference this server made (re-caching a hit) may name a file.
      if (file !== undefined && !(files && nodePath.dirname(file) === files.dir)) {
        throw new TypeError('cache.set(): a response file must be one cache.set() wrote into cache.fileDir');
      }
      stored = { status: checked.status, headers: file === undefined ? headers : [...headers, [BODY_FILE, file]], body: checked.body, storedAt: Date.now() };
    }
    return cache.now ? cache.now.set(key, stored, ttl) : this.guard(cache.set(key, stored, ttl), 'cache.set()');
  }

  // One file per key (a hash of it), replaced atomically: a web server still sending the old
  // one keeps its open file. Expired entries leave their file until the key is stored again.
  private async storeBodyFile(files: CacheFiles, key: string, value: ScriptResponse, ttl: number): Promise<boolean> {
    const final = nodePath.join(files.dir, `${createHash('sha256').update(key).digest('hex')}.body`);
    const temp = `${final}.${process.pid}.${randomBytes(6).toString('hex')}`;
    try {
      await fsp.writeFile(temp, value.body, { mode: 0o644 });
      await fsp.rename(temp, final);
    } catch (err) {
      await fsp.rm(temp, { force: true }).catch(() => undefined);
      // Lodestone's own line: not charged to the script's log budget.
      this.response.log(`lodestone: cache.set(${JSON.stringify(key)}): cannot write ${final}: ${(err as Error).message}`);
      return false;
    }
    const stored: CachedResponse = { status: value.status, headers: [...value.headers, [BODY_FILE, final]], body: Buffer.alloc(0), storedAt: Date.now() };
    const cache = this.contentCache;
    return cache.now ? cache.now.set(key, stored, ttl) : cache.set(key, stored, ttl);
  }

  /** cache.delete(key): whether a value was removed. */
  cacheDelete(key: string): boolean | Promise<boolean> {
    ScriptHost.checkKey(key);
    const cache = this.contentCache;
    return cache.now ? cache.now.delete(key) : this.guard(cache.delete(key), 'cache.delete()');
  }

  /** cache.incr(key, by[, ttl]): the new value, or null when a shared cache is down. */
  cacheIncr(key: string, by: number, ttl?: number): number | null | Promise<number | null> {
    ScriptHost.checkKey(key);
    if (!Number.isSafeInteger(by)) throw new TypeError('cache.incr(): the increment must be an integer');
    if (ttl !== undefined) ScriptHost.checkTtl(ttl);
    const cache = this.contentCache;
    try {
      return cache.now ? cache.now.incr(key, by, ttl) : this.guard(cache.incr(key, by, ttl), 'cache.incr()').catch(scriptError);
    } catch (err) {
      return scriptError(err);
    }
  }

  // ---- pass ------------------------------------------------------------------------------

  /**
   * pass(backend): forwards this request (params as received, with `options.params` applied,
   * and the body) to a FastCGI pool and returns the whole response, bounded by the output
   * limit. A backend failure ends the run with 502/504 and a log line: the script cannot
   * serve a half answer, and the pool already tried every server it could.
   */
  async pass(name: string, options: PassOptions = {}): Promise<ScriptResponse> {
    const got = await this.forward(name, options);
    try {
      const body = await this.guard(readBody(got, this.limits.outputBytes), passName(name));
      return { status: got.status, headers: got.headers, body };
    } catch (err) {
      got.body.destroy();
      if (err instanceof BackendError) throw this.backendFailed(name, err);
      throw err;
    }
  }

  /**
   * pass(backend, { emit = true }): the backend's response goes to the client as it arrives
   * (after the run, outside the script's limits), without buffering the body. Ends the run.
   */
  async passThrough(name: string, options: PassOptions = {}): Promise<never> {
    if (this.response.headersSent) throw new Error('pass() with emit after flush(): the headers are already sent');
    const got = await this.forward(name, options);
    this.rawHead = null;
    throw this.exit(got.status, false, null, 'exit', { kind: 'relay', pool: name, response: got });
  }

  private async forward(name: string, options: PassOptions): Promise<BackendResponse> {
    const pool = this.services.backends.get(name);
    if (!pool) throw new Error(`pass(): no backend named ${JSON.stringify(name)} (see config "backends")`);
    const body = options.body ?? (await this.guard(this.bodyBytes(), passName(name)));
    // A replaced body needs its own CONTENT_LENGTH, or PHP reads the wrong number of bytes.
    const changes = options.body ? { ...options.params, CONTENT_LENGTH: String(options.body.length) } : options.params;
    const params = changes ? this.paramsWith(changes) : (this.request.paramsBlock ?? Buffer.alloc(0));
    const asked = pool.request({ params, body, signal: this.request.signal });
    try {
      return await this.guard(asked, passName(name));
    } catch (err) {
      if (err instanceof BackendError) throw this.backendFailed(name, err);
      // The run was stopped (a limit, an abort) while waiting: nobody will read the answer, so
      // it must not hold its backend connection.
      asked.then((late) => late.body.destroy(), () => undefined);
      throw err;
    }
  }

  // The params block with the script's changes; CONTENT_LENGTH follows a replaced body.
  private paramsWith(changes: Readonly<Record<string, string | null>>): Buffer {
    const params = Object.create(null) as Record<string, string>;
    const block = this.request.paramsBlock;
    if (block) decodePairs(block, Infinity, params);
    for (const name of Object.keys(changes)) {
      const value = changes[name];
      if (value === null || value === undefined) delete params[name];
      else params[name] = value;
    }
    return encodePairs(Object.entries(params));
  }

  // The pool has logged the failure (once per request, with its LS_BACKEND_* code); the run
  // ends with the error page, and the web server's error log gets the line too.
  private backendFailed(name: string, err: BackendError): ScriptError {
    this.response.log(`lodestone: ${this.scriptFilename}: pass(${JSON.stringify(name)}): ${err.message}`);
    return this.exit(err.status, true, null, `pass(${JSON.stringify(name)}): ${err.message}`);
  }

  /**
   * emit(response): the response a script got from pass() or the cache becomes this request's:
   * its status, its headers (replacing any of the same name set so far) and its body.
   */
  emit(value: ScriptResponse): void | Promise<never> {
    const checked = checkResponse(value, false);
    if (this.response.headersSent) throw new Error('emit() after flush(): the headers are already sent');
    const { headers, file } = bodyFile(checked);
    this.status = checked.status;
    const seen = new Set<string>();
    for (const [name, v] of headers) {
      const lower = name.toLowerCase();
      if (lower === 'status') continue;
      if (seen.has(lower)) this.response.addHeader(name, v);
      else {
        seen.add(lower);
        this.response.setHeader(name, v);
      }
    }
    // A body in a file: the web server sends it (and handles Range); the run ends there.
    if (file !== undefined) return this.sendfile(file);
    this.write(checked.body);
  }

  /**
   * Rejects with the fatal error as soon as the run is stopped, whatever `work` does. `what`
   * names the script's host call for the slow log while the run waits for it.
   */
  private guard<T>(work: Promise<T>, what: string): Promise<T> {
    if (this.watch === 1) this.watchWaits();
    if (this.fatal) return Promise.reject(this.fatal);
    const waited = this.waitIn(what);
    return new Promise<T>((resolve, reject) => {
      const off = this.onStop(() => {
        waited();
        reject(this.fatal!);
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
}

/**
 * The longest prefix of `text` whose UTF-8 form fits in `max` bytes, never splitting a character
 * (a surrogate pair is one character); `length` is its size in bytes.
 */
export function utf8Prefix(text: string, max: number): { text: string; length: number } {
  // Every UTF-16 unit encodes to at least one byte, so the prefix lies within the first `max`
  // units; a high surrogate cut from its pair there would encode as U+FFFD, so it goes too.
  let units = Math.min(text.length, max);
  if (units < text.length && units > 0 && (text.charCodeAt(units - 1) & 0xfc00) === 0xd800) units--;
  const head = Buffer.from(units < text.length ? text.slice(0, units) : text, 'utf8');
  if (head.length <= max) return { text: head.toString('utf8'), length: head.length };
  const end = utf8Boundary(head, max);
  return { text: head.subarray(0, end).toString('utf8'), length: end };
}

/**
 * Where UTF-8 `bytes` can be cut to at most `max` bytes without splitting a character: backs up
 * over continuation bytes (10xxxxxx) to the start of the character that did not fit.
 */
export function utf8Boundary(bytes: Uint8Array, max: number): number {
  let end = Math.min(max, bytes.length);
  while (end > 0 && end < bytes.length && (bytes[end]! & 0xc0) === 0x80) end--;
  return end;
}

/**
 * How the slow log names a pass() call: with its backend, which is what an operator looks for
 * (a name from the configuration: pass() refuses any other before it waits).
 */
function passName(backend: string): string {
  return `pass(${backend})`;
}

// A counter holding text is the script's mistake: a TypeError it sees, not a cache failure.
function scriptError(err: unknown): never {
  if (err instanceof CacheValueError) throw new TypeError(err.message, { cause: err });
  throw err;
}

/**
 * Validates a response a script built: the status, and with `headers` its header names and
 * values (emit() leaves those to the Response, which checks every header it is given).
 */
function checkResponse(value: ScriptResponse, headers = true): ScriptResponse {
  const { status, body } = value;
  if (!Number.isInteger(status) || status < 100 || status > 999) throw new TypeError(`invalid response status ${String(status)}`);
  if (headers) checkHeaders(value.headers);
  if (!Buffer.isBuffer(body)) throw new TypeError('response body must be bytes');
  return value;
}

function checkHeaders(headers: ScriptResponse['headers']): void {
  for (const [name, v] of headers) {
    if (name !== BODY_FILE) checkHeader(name, v);
  }
}
