/**
 * The request pipeline: find the script a request names (SCRIPT_FILENAME, or the configured
 * front controller), run it in its engine with a fresh ScriptHost, and turn the outcome into a
 * response. Engine-neutral: it only sees the ScriptEngine interface and the script store.
 */
import { errorPage } from './error-page.js';
import type { ContentCache } from '../content-cache/content-cache.js';
import { tooLargeMessage } from '../engines/script-cache-config.js';
import type { Lookup, ScriptStore } from '../engines/script-store.js';
import { ScriptError, type ScriptErrorKind, type ScriptLimits } from '../engines/engine.js';
import { DEFAULT_CONTENT_TYPE, ScriptHost, noServices, passFailureLine, type CacheFiles, type HostServices } from '../engines/host.js';
import { runScript, type RunOutcome } from '../engines/run.js';
import { httpStatus, type Code } from '../errors.js';
import type { Handler } from '../fastcgi/server/connection.js';
import { BackendError, type BackendPool, type BackendResponse } from '../fastcgi/client/pool.js';
import { sendRange, type Files } from '../files/files.js';
import type { Logger } from '../log.js';
import type { Request } from '../fastcgi/server/request.js';
import type { RunCounters } from './status.js';
import type { Response } from '../fastcgi/server/response.js';
import type { SlowLog } from '../engines/slow-log.js';
import type { FetchClient } from '../fetch/fetch-client.js';

/** What {@link createScriptHandler} needs. */
export interface PipelineOptions {
  readonly store: ScriptStore;
  readonly root: string;
  readonly limits: ScriptLimits;
  readonly log: Logger;
  /** A front-controller script that handles every request, instead of SCRIPT_FILENAME. */
  readonly script: string | null;
  /** Whether a script (by real path) runs in raw-output mode. */
  readonly raw: (file: string) => boolean;
  /** File access for stat() and sendfile(); null leaves scripts without them. */
  readonly files?: Files | null;
  /** The content cache behind the script API's `cache`; null leaves scripts without it. */
  readonly cache?: ContentCache | null;
  /** FastCGI backend pools for pass(), by name. */
  readonly backends?: ReadonlyMap<string, BackendPool>;
  /** Where cache.set() puts large response bodies (sent with sendfile on a hit). */
  readonly cacheFiles?: CacheFiles | null;
  /** Counts limit hits and script errors for the status page. */
  readonly counters?: RunCounters;
  /**
   * The development server's FastCGI side (cli.ts sets it only with `--http`). A script error's
   * 500 page then shows the message and `file:line`, as `php -S` with display_errors does; and the
   * lines this pipeline logs are not also sent on FCGI_STDERR, since the dev front end relays
   * FCGI_STDERR into the same log and each would appear twice. Off, the client sees only the
   * generic page: file paths and code are for the operator.
   */
  readonly dev?: boolean;
  /** Logs runs still going after slowRequestMs, with where their script is; null: off. */
  readonly slowLog?: SlowLog | null;
  /** The worker's outbound HTTP client for fetch(); null: every origin is denied. */
  readonly fetch?: FetchClient | null;
}

/**
 * Builds the handler that serves requests with scripts.
 *
 * A cached script whose run never waits (the common request) is served synchronously: the
 * store's peek, the engine's run and the response all happen in the socket's data event,
 * with no promise or microtask turn in between (they cost more than a small Lua run). Only a
 * store miss or a run that waits goes async.
 *
 * @example
 *   const handler = createScriptHandler({ store, root, limits: defaultScriptLimits, log, script: null, raw: () => false });
 *   new FastcgiServer({ limits: defaultLimits, handler, log });
 */
export function createScriptHandler(options: PipelineOptions): Handler {
  const { store, log } = options;
  const files = options.files ?? null;
  const prefetch = files?.config.prefetch ? files : null;
  const services: HostServices = {
    files,
    cache: options.cache ?? null,
    backends: options.backends ?? noServices.backends,
    cacheFiles: options.cacheFiles ?? null,
    slowLog: options.slowLog ?? null,
    fetch: options.fetch ?? null,
  };
  return (req, res) => {
    prefetch?.prefetch(req);
    const requested = options.script ?? req.param('SCRIPT_FILENAME');
    if (!requested) {
      log.warn('LS_SCRIPT_NOT_FOUND', 'request without SCRIPT_FILENAME', { request: req.id });
      return errorPage(res, httpStatus.LS_SCRIPT_NOT_FOUND);
    }
    const found = store.peek(requested);
    if (found) return serve(options, services, req, res, found);
    return store.get(requested).then((lookup) => serve(options, services, req, res, lookup));
  };
}

/** Answers a request with what the store found: an error page, or the script's run. */
function serve(options: PipelineOptions, services: HostServices, req: Request, res: Response, found: Lookup): void | Promise<void> {
  const log = options.log;
  switch (found.kind) {
    case 'missing':
      log.info('LS_SCRIPT_NOT_FOUND', 'no such script', { script: found.file });
      return errorPage(res, httpStatus.LS_SCRIPT_NOT_FOUND);
    case 'forbidden':
      log.warn('LS_SCRIPT_FORBIDDEN', found.reason, { script: found.file });
      return errorPage(res, httpStatus.LS_SCRIPT_FORBIDDEN);
    case 'error':
      return scriptFailed(options, res, found.error);
    case 'too-large': {
      // The server's own configuration refuses the file (as PHP-FPM's 500 for a script it will
      // not run): the operator needs the path and both sizes; the client only sees the 500.
      const message = `${tooLargeMessage(found.size, found.max)}; not read`;
      log.error('LS_SCRIPT_TOO_LARGE', message, { script: found.file });
      alsoToStderr(options, res, `lodestone: ${found.file}: ${message}`);
      return errorPage(res, httpStatus.LS_SCRIPT_TOO_LARGE);
    }
  }
  const { lease } = found;
  const host = new ScriptHost(req, res, options.limits, lease.file, options.root, options.raw(lease.file), services);
  host.modules = lease.modules;
  const outcome = runScript(lease.engine, lease.script, host);
  const later = outcome instanceof Promise ? outcome.then((o) => answer(options, req, res, o, lease.file)) : answer(options, req, res, outcome, lease.file);
  if (later) return later.finally(() => lease.release());
  lease.release();
}

/** Finishes the response as the run's outcome says; a range or a relay still streams (a promise). */
function answer(options: PipelineOptions, req: Request, res: Response, outcome: RunOutcome, script: string): void | Promise<void> {
  switch (outcome.kind) {
    case 'done':
      return;
    case 'aborted':
      options.log.info('LS_REQUEST_ABORTED', 'script stopped: request aborted', { script });
      return;
    case 'failed':
      return scriptFailed(options, res, outcome.error);
    case 'page': {
      const { status, code, error } = outcome;
      if (code) {
        const level = status === 404 ? 'info' : status >= 500 ? 'error' : 'warn';
        options.log[level](code, error.message, { script: error.location });
        if (status !== 404) alsoToStderr(options, res, `lodestone: ${error.location}: ${error.message}`);
      }
      // Output already went out (flush() before the refusal): end what was sent.
      if (res.headersSent) return res.end();
      return errorPage(res, status);
    }
    case 'range':
      return sendRange(res, req, outcome.path, outcome.start, outcome.end).catch((err: unknown) => {
        // Opening or reading failed after the headers may have gone: end what was sent.
        options.log.error('LS_HANDLER_FAILED', `sending ${outcome.path}: ${(err as Error).message}`, { script: outcome.error.location });
        if (res.headersSent) res.end();
        else errorPage(res, 500);
      });
    case 'relay':
      return relay(options, req, res, outcome.pool, outcome.params, outcome.body, script);
  }
}

/**
 * pass() with emit, after the run: forwards the request to `pool` and streams the backend's
 * response to the client as it arrives, headers first, waiting for the web server to take it
 * (socket backpressure) before reading more. What has arrived is written without a flush while
 * more is known to come; once END_REQUEST is in, the rest goes out with our own END_REQUEST, so
 * a small response is one write. A backend that fails before its headers gets the error page
 * pass() without emit would (502, 504 for a timeout), and the line in the web server's log.
 */
async function relay(options: PipelineOptions, req: Request, res: Response, pool: BackendPool, params: Buffer, given: Buffer | null, script: string): Promise<void> {
  let got: BackendResponse;
  try {
    const body = given ?? (await req.readBody());
    got = await pool.request({ params, body, cancel: req });
  } catch (err) {
    // The pool has logged it (once, with its LS_BACKEND_* code), so the line goes only to the web
    // server's log. A failed body read is the web server aborting the request (nobody is left
    // to answer) or the connection refusing the body (it answered already).
    if (!(err instanceof BackendError)) {
      if (req.aborted || res.finished) return;
      options.log.error('LS_HANDLER_FAILED', `pass(${JSON.stringify(pool.name)}): reading the request body: ${(err as Error).message}`, { script });
      return errorPage(res, 500);
    }
    if (err.kind !== 'aborted') res.log(passFailureLine(script, pool.name, err));
    if (res.headersSent) return res.end();
    return errorPage(res, err.status);
  }
  res.status = got.status;
  for (const [name, value] of got.headers) res.addHeader(name, value);
  try {
    for (;;) {
      let chunk: Buffer | null;
      while ((chunk = got.read()) !== null) res.write(chunk);
      if (got.error) throw got.error;
      if (got.ended) break;
      res.flush();
      await res.drain();
      if (req.aborted) break;
      await new Promise<void>((resolve) => got.whenReadable(resolve));
    }
  } catch (err) {
    // The backend failed after its headers: end what was sent, as nginx does.
    options.log.error('LS_BACKEND_PROTOCOL', `pass(${JSON.stringify(pool.name)}): ${(err as Error).message}`, { script });
  } finally {
    got.destroy();
  }
  // As a script's own response: a backend that named no type gets the default (an empty body
  // never flushed the headers).
  if (!res.headersSent && res.getHeader('Content-Type') === undefined) res.setHeader('Content-Type', DEFAULT_CONTENT_TYPE);
  res.end();
}

/**
 * The log code of a failed run, by its ScriptError kind: the one table that turns a kind into a
 * code (the status follows from the code, {@link httpStatus}). An `exit` that is a refusal
 * carries its own code (ScriptExit.code).
 */
const failureCodes = {
  compile: 'LS_SCRIPT_COMPILE',
  runtime: 'LS_SCRIPT_ERROR',
  limit: 'LS_SCRIPT_LIMIT',
  exit: 'LS_SCRIPT_ERROR',
} as const satisfies Record<ScriptErrorKind, Code>;

// The message goes to the log and to FCGI_STDERR (the web server's error log), never to the
// client, who could learn file paths and code from it; the development server alone shows it.
function scriptFailed(options: PipelineOptions, res: Response, error: ScriptError): void {
  if (options.counters) {
    if (error.kind === 'limit') options.counters.limitHits++;
    else options.counters.scriptErrors++;
  }
  const code = failureCodes[error.kind];
  options.log.error(code, error.message, { script: error.location });
  alsoToStderr(options, res, `lodestone: ${error.location}: ${error.message}`);
  if (res.headersSent) {
    // Output already streamed: the status cannot change any more; end what was sent.
    res.end();
    return;
  }
  errorPage(res, httpStatus[code], options.dev ? `${error.location}: ${error.message}` : null);
}

// A line this pipeline has logged, for the web server's error log too; not under the dev front
// end, which relays FCGI_STDERR into this same log and would show it twice.
function alsoToStderr(options: PipelineOptions, res: Response, line: string): void {
  if (!options.dev) res.log(line);
}

