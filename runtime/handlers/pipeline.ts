/**
 * The request pipeline: find the script a request names (SCRIPT_FILENAME, or the configured
 * front controller), run it in its engine with a fresh ScriptHost, and turn the outcome into a
 * response. Engine-neutral: it only sees the ScriptEngine interface and the script store.
 */
import { errorPage } from './error-page.js';
import type { ContentCache } from '../content-cache/content-cache.js';
import { tooLargeMessage, type Lease, type Lookup, type ScriptStore } from '../engines/script-store.js';
import { ScriptError, type ScriptErrorKind, type ScriptLimits } from '../engines/engine.js';
import { ScriptHost, noServices, type CacheFiles, type HostServices } from '../engines/host.js';
import { httpStatus, type Code } from '../errors.js';
import type { Handler } from '../fastcgi/server/connection.js';
import type { BackendPool, BackendResponse } from '../fastcgi/client/pool.js';
import { sendRange, type Files } from '../files/files.js';
import type { Logger } from '../log.js';
import type { Request } from '../fastcgi/server/request.js';
import type { RunCounters } from './status.js';
import type { Response } from '../fastcgi/server/response.js';
import type { SlowLog } from '../engines/slow-log.js';

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
}

/**
 * Builds the handler that serves requests with scripts.
 *
 * A cached script whose run never waits (the common request) is served synchronously: the
 * store's peek, the engine's runNow and the response all happen in the socket's data event,
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
  host.start();
  let later: Promise<void> | void;
  try {
    const engine = lease.engine;
    const outcome = engine.runNow ? engine.runNow(lease.script, host) : engine.run(lease.script, host);
    later = typeof outcome === 'object' ? finishLater(options, lease, host, outcome) : succeeded(host, outcome);
  } catch (err) {
    later = failed(options, lease, host, err);
  }
  if (later) {
    return later.finally(() => {
      host.finish();
      lease.release();
    });
  }
  host.finish();
  lease.release();
}

/** The end of a run that waited. */
async function finishLater(options: PipelineOptions, lease: Lease, host: ScriptHost, outcome: Promise<number | undefined>): Promise<void> {
  try {
    succeeded(host, await outcome);
  } catch (err) {
    await failed(options, lease, host, err);
  }
}

/** The script returned: its output ends (raw mode's head applied), then the response is sent. */
function succeeded(host: ScriptHost, status: number | undefined): void {
  host.endOutput();
  if (host.fatal) throw host.fatal;
  host.end(status);
}

/** The run failed or ended itself; only an exit that streams a range returns a promise. */
function failed(options: PipelineOptions, lease: Lease, host: ScriptHost, err: unknown): void | Promise<void> {
  const error = err instanceof ScriptError ? err : new ScriptError('runtime', String(err), lease.file, null);
  if (error.exit) return exited(options, host, error);
  if (host.request.aborted) {
    options.log.info('LS_REQUEST_ABORTED', 'script stopped: request aborted', { script: lease.file });
    return;
  }
  scriptFailed(options, host.response, error);
}

// The run ended itself (sendfile(), a refused file access): its response stands.
function exited(options: PipelineOptions, host: ScriptHost, error: ScriptError): void | Promise<void> {
  const res = host.response;
  const { status, page, code } = error.exit!;
  if (code) {
    const level = status === 404 ? 'info' : status >= 500 ? 'error' : 'warn';
    options.log[level](code, error.message, { script: error.location });
    if (status !== 404) alsoToStderr(options, res, `lodestone: ${error.location}: ${error.message}`);
  }
  if (page && !res.headersSent) return errorPage(res, status);
  if (host.relay) return relay(options, host, host.relay.pool, host.relay.response);
  const direct = host.direct;
  if (!direct) return host.end(undefined);
  return sendRange(res, host.request, direct.path, direct.start, direct.end).catch((err: unknown) => {
    // Opening or reading failed after the headers may have gone: end what was sent.
    options.log.error('LS_HANDLER_FAILED', `sending ${direct.path}: ${(err as Error).message}`, { script: error.location });
    if (res.headersSent) res.end();
    else errorPage(res, httpStatus.LS_HANDLER_FAILED);
  });
}

/**
 * Streams a backend's response to the client as it arrives: headers first, then each chunk,
 * waiting for the web server to take it (socket backpressure) before reading more.
 */
async function relay(options: PipelineOptions, host: ScriptHost, pool: string, got: BackendResponse): Promise<void> {
  const res = host.response;
  res.status = got.status;
  for (const [name, value] of got.headers) res.addHeader(name, value);
  try {
    for await (const chunk of got.body) {
      res.write(chunk as Buffer);
      res.flush();
      await res.drain();
      if (host.request.aborted) break;
    }
  } catch (err) {
    // The backend failed after its headers: end what was sent, as nginx does.
    options.log.error('LS_BACKEND_PROTOCOL', `pass(${JSON.stringify(pool)}): ${(err as Error).message}`, { script: host.scriptFilename });
  } finally {
    got.body.destroy();
  }
  host.end(undefined);
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

