/**
 * What a running script can touch, engine-neutral. The Lua and JS engines are thin adapters
 * that expose this object under the script API names (README, "Script API"); anything not here
 * (files, processes, modules) a script cannot reach.
 *
 * ScriptHost holds one run's state and delegates every call: the run core to host/core.ts
 * (limits, fatal/stop/exit, wall clock, waits, slow log), the script API to one capability
 * per module under host/: request.ts (the request view), output.ts (status, headers, body,
 * raw CGI mode, emit, log), cookies.ts (request.cookies, response.cookie), form.ts
 * (request.form), files.ts (stat, sendfile), cache.ts (cache.*), pass.ts (pass to a
 * backend), fetch.ts (outbound HTTP), modules.ts (require); script-response.ts and services.ts hold the types they
 * share. Each method only delegates, so adding a script-API call is one function in its
 * capability and one line here, plus one binding per engine. This module also re-exports the
 * public types, so importers need only it.
 */
import type { CacheValue } from '../content-cache/content-cache.js';
import type { Request } from '../fastcgi/server/request.js';
import type { Response } from '../fastcgi/server/response.js';
import type { FileInfo, SendOptions } from '../files/files.js';
import { cacheDelete, cacheGet, cacheIncr, cacheSet } from './host/cache.js';
import { addCookie, cookies } from './host/cookies.js';
import { form, type FormPart } from './host/form.js';
import { abort, checkWallTime, exit, finish, guard, locate, sleep, slowWhileRunning, slowWhileWaiting, start, type HostCore } from './host/core.js';
import { fetch, type FetchOptions } from './host/fetch.js';
import { closeModule, findModule, openModule } from './host/modules.js';
import type { ModuleSlots } from './modules.js';
import { sendfile, stat } from './host/files.js';
import { addHeader, emit, end, endOutput, flush, log, logRoom, setHeader, setStatus, write } from './host/output.js';
import { pass, passThrough, relayExit, type PassOptions } from './host/pass.js';
import { body, headers, method, path, query, queryString, remoteAddr, uri } from './host/request.js';
import type { ScriptResponse } from './host/script-response.js';
import { noServices, type HostServices } from './host/services.js';
import type { Code } from '../errors.js';
import type { ExitRest, ScriptError, ScriptLimits } from './script-error.js';
import type { CompiledScript } from './compiled.js';
import type { Frame, WaitLocator } from './slow-log.js';

export { MAX_CACHE_KEY } from './host/cache.js';
export { cookieLibrarySource, cookieLine, type CookieOptions } from './host/cookies.js';
export { FORM_MAX_FIELD_BYTES, FORM_MAX_PARTS, isFile, type FormField, type FormFile, type FormPart } from './host/form.js';
export { DEFAULT_CONTENT_TYPE, utf8Boundary, utf8Prefix } from './host/output.js';
export type { FetchOptions } from './host/fetch.js';
export type { PassOptions } from './host/pass.js';
export { passFailureLine } from './host/pass.js';
export { BODY_FILE, bodyFile, type ScriptResponse } from './host/script-response.js';
export { noServices, type CacheFiles, type HostServices } from './host/services.js';

/**
 * One script run for one request: the run core (host/core.ts) and the script API. It holds the
 * state of every capability (the fields after `waitLocator`, for host/*.ts only) and delegates
 * each method to its capability.
 */
export class ScriptHost implements HostCore {
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
  // Capability state (host/core.ts describes each field).
  waits: string[] | null = null;
  stopWaiters: Set<() => void> | null = null;
  offRequestAbort: (() => void) | null = null;
  deadline = Infinity;
  watch = 0;
  outputBytes = 0;
  queryCache: Record<string, string> | null = null;
  headerCache: Record<string, string> | null = null;
  cookieCache: Record<string, string> | null = null;
  formRead: Promise<readonly FormPart[]> | null = null;
  rawHead: Buffer[] | null;
  bodyRead: Promise<Buffer> | null = null;
  logged = 0;
  logDropping = false;
  /** The script's modules, by name (the store's lease sets it); null: none. */
  modules: ModuleSlots | null = null;
  moduleChain: string[] | null = null;

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

  // ---- run (host/core.ts) ----------------------------------------------------------------

  /** Starts the wall-clock limit and the watch for the web server aborting; call before running. */
  start(): void {
    start(this);
  }

  /** Stops the timers of this run; call when the run is over, however it ended. */
  finish(): void {
    finish(this);
  }

  /** Stops the run when its wall-time limit has passed; called by the process-wide clock. */
  checkWallTime(now: number): void {
    checkWallTime(this, now);
  }

  /** The engine found the run past {@link slowAt} while its script executes: logs the slow line once. */
  slowWhileRunning(now: number, frames: readonly Frame[]): void {
    slowWhileRunning(this, now, frames);
  }

  /** The wall-time tick found the run past {@link slowAt} between its slices: logs the slow line once. */
  slowWhileWaiting(now: number): void {
    slowWhileWaiting(this, now);
  }

  /** Records a fatal error (the first one wins) and aborts pending async calls; engines use it for their own limits. */
  abort(kind: 'limit' | 'runtime', message: string, line: number | null = null): ScriptError {
    return abort(this, kind, message, line);
  }

  /** Gives the fatal error the script line an engine found after the stop. */
  locate(line: number): void {
    locate(this, line);
  }

  /** Ends the run from the host side (ScriptErrorKind `exit`); returns the error to throw at the script. */
  exit(status: number, page: boolean, code: Code | null = null, message = 'exit', rest: ExitRest | null = null): ScriptError {
    return exit(this, status, page, code, message, rest);
  }

  /** Rejects with the fatal error as soon as the run is stopped, whatever `work` does (for host/*.ts). */
  guard<T>(work: Promise<T>, what: string): Promise<T> {
    return guard(this, work, what);
  }

  /** Waits `ms` milliseconds without blocking the event loop; rejects when the run is stopped. */
  sleep(ms: number): Promise<void> {
    return sleep(this, ms);
  }

  // ---- request (host/request.ts) ---------------------------------------------------------

  /** REQUEST_METHOD. */
  get method(): string {
    return method(this);
  }

  /** REQUEST_URI as the client sent it (path and query, not decoded). */
  get uri(): string {
    return uri(this);
  }

  /** The decoded path of the URI, without the query string. */
  get path(): string {
    return path(this);
  }

  /** QUERY_STRING, not decoded. */
  get queryString(): string {
    return queryString(this);
  }

  /** The decoded query arguments; for a repeated name the last value wins (as in PHP's $_GET). */
  get query(): Readonly<Record<string, string>> {
    return query(this);
  }

  /** Request headers with lower-case names, from the HTTP_* params and CONTENT_TYPE/LENGTH. */
  get headers(): Readonly<Record<string, string>> {
    return headers(this);
  }

  /** REMOTE_ADDR: the client's address as the web server saw it. */
  get remoteAddr(): string {
    return remoteAddr(this);
  }

  /** The request body, read on demand (once; pass() reuses it); rejects when the run is stopped. */
  body(): Promise<Buffer> {
    return body(this);
  }

  // ---- cookies and forms (host/cookies.ts, host/form.ts) ---------------------------------

  /** request.cookies: the request's cookies by name, percent-decoded; a repeated name: the first. */
  get cookies(): Readonly<Record<string, string>> {
    return cookies(this);
  }

  /**
   * response.cookie(name, value, options): adds one Set-Cookie line. A TypeError for a bad
   * name, value (bytes must be UTF-8) or option; an Error once the headers are sent.
   */
  cookie(name: unknown, value: unknown, options: unknown): void {
    addCookie(this, name, value, options);
  }

  /** request.form(): the body's form parts in order (urlencoded or multipart; else none), parsed once. */
  form(): Promise<readonly FormPart[]> {
    return form(this);
  }

  // ---- response (host/output.ts) ---------------------------------------------------------

  /** The response status. */
  get status(): number {
    return this.response.status;
  }

  set status(code: number) {
    setStatus(this, code);
  }

  /** A response header, or undefined. */
  getHeader(name: string): string | undefined {
    return this.response.getHeader(name);
  }

  /** Sets a response header; null or undefined removes it. Throws TypeError on CR/LF. */
  setHeader(name: string, value: string | number | null | undefined): void {
    setHeader(this, name, value);
  }

  /** Adds a header line, keeping others of its name (Set-Cookie). Throws TypeError on CR/LF; an Error once sent. */
  addHeader(name: string, value: string): void {
    addHeader(this, name, value);
  }

  /** Appends to the body; past limits.outputBytes the run is stopped. */
  write(chunk: string | Uint8Array): void {
    write(this, chunk);
  }

  /** Ends the script's output: in raw mode, applies the CGI header block it printed (or records the script error). */
  endOutput(): void {
    endOutput(this);
  }

  /** Sends the headers and body so far (streaming), adding the default Content-Type if unset. */
  flush(): void {
    flush(this);
  }

  /** Ends a run that succeeded: a returned status applies (unless headers were sent), then the response is sent. */
  end(status: number | undefined): void {
    end(this, status);
  }

  /** emit(response): a response from pass() or the cache becomes this request's (status, headers, body). */
  emit(value: ScriptResponse): void | Promise<never> {
    return emit(this, value);
  }

  /** How many bytes of log text the next log() line may keep (0 once the run's log budget is spent). */
  get logRoom(): number {
    return logRoom(this);
  }

  /** A line for the web server's error log, bounded per line and per run (host/output.ts). */
  log(message: string, cut = 0, unit: 'bytes' | 'characters' = 'bytes'): void {
    log(this, message, cut, unit);
  }

  // ---- files (host/files.ts) -------------------------------------------------------------

  /** stat(path): null when missing; a path outside the roots ends the run with 403. */
  stat(path: string): Promise<FileInfo | null> {
    return stat(this, path);
  }

  /** sendfile(path[, offset, length]): ends the run with the file as the response. Never resolves. */
  sendfile(path: string, options: SendOptions = {}): Promise<never> {
    return sendfile(this, path, options);
  }

  // ---- cache (host/cache.ts) -------------------------------------------------------------

  /** cache.get(key): the value, or null on a miss (or when a shared cache is down). */
  cacheGet(key: string): CacheValue | null | Promise<CacheValue | null> {
    return cacheGet(this, key);
  }

  /** cache.set(key, value, ttl): false when not stored (too large, shared cache down). */
  cacheSet(key: string, value: Buffer | ScriptResponse, ttl: number): boolean | Promise<boolean> {
    return cacheSet(this, key, value, ttl);
  }

  /** cache.delete(key): whether a value was removed. */
  cacheDelete(key: string): boolean | Promise<boolean> {
    return cacheDelete(this, key);
  }

  /** cache.incr(key, by[, ttl]): the new value, or null when a shared cache is down. */
  cacheIncr(key: string, by: number, ttl?: number): number | null | Promise<number | null> {
    return cacheIncr(this, key, by, ttl);
  }

  // ---- pass (host/pass.ts) ---------------------------------------------------------------

  /** pass(backend): forwards this request to a FastCGI pool; the whole response, bounded by the output limit. */
  pass(name: string, options: PassOptions = {}): Promise<ScriptResponse> {
    return pass(this, name, options);
  }

  /** pass(backend, { emit = true }): ends the run; the server relays the backend's response to the client as it arrives. Throws the exit. */
  passThrough(name: string, options: PassOptions = {}): never {
    return passThrough(this, name, options);
  }

  /** As {@link passThrough}, but returns the exit (already the run's end) instead of throwing it: the engine stops the script itself. */
  relayExit(name: string, options: PassOptions = {}): ScriptError {
    return relayExit(this, name, options);
  }

  // ---- fetch (host/fetch.ts) -------------------------------------------------------------

  /** fetch(url, options): an allowed origin's whole response; LS_FETCH_* errors the script may catch. */
  fetch(url: string, options: FetchOptions = {}): Promise<ScriptResponse> {
    return fetch(this, url, options);
  }

  // ---- modules (host/modules.ts) ---------------------------------------------------------

  /** The compiled module `name` without entering the chain of requires, or null (host/modules.ts: findModule). */
  findModule(name: string): CompiledScript | null {
    return findModule(this, name);
  }

  /** require(name): the compiled module, entered in the chain; throws the script's error. */
  openModule(name: string, depth?: number): CompiledScript {
    return openModule(this, name, depth);
  }

  /** require(name) ran the module's top level (or it failed): leaves the chain. */
  closeModule(name: string): void {
    closeModule(this, name);
  }
}
