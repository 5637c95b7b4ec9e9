/**
 * pass(): forwarding the request to a FastCGI backend pool (PHP-FPM and the like), either
 * buffered into a response value the script can inspect, cache or emit, or relayed to the
 * client as it arrives after the run. Separate because it is the one capability that talks to
 * another server: its failures end the run with 502/504, and a stopped run must free the
 * backend connection.
 */
import { encodePairs, decodePairs } from '../../fastcgi/pairs.js';
import { BackendError, readBody, type BackendPool, type BackendResponse } from '../../fastcgi/client/pool.js';
import type { ScriptError } from '../script-error.js';
import type { HostCore } from './core.js';
import { bodyBytes } from './request.js';
import type { ScriptResponse } from './script-response.js';

/** How pass() forwards the request. */
export interface PassOptions {
  /** Params to set (a string) or remove (null) before forwarding, e.g. SCRIPT_FILENAME for PHP. */
  readonly params?: Readonly<Record<string, string | null>>;
  /** A body to send instead of the request's own. */
  readonly body?: Buffer;
}

/**
 * pass(backend): forwards this request (params as received, with `options.params` applied,
 * and the body) to a FastCGI pool and returns the whole response, bounded by the output
 * limit. A backend failure ends the run with 502/504 and a log line: the script cannot
 * serve a half answer, and the pool already tried every server it could.
 */
export async function pass(host: HostCore, name: string, options: PassOptions = {}): Promise<ScriptResponse> {
  const got = await forward(host, name, options);
  try {
    const body = await host.guard(readBody(got, host.limits.outputBytes), passName(name));
    return { status: got.status, headers: got.headers, body };
  } catch (err) {
    got.destroy();
    if (err instanceof BackendError) throw backendFailed(host, name, err);
    throw err;
  }
}

/**
 * pass(backend, { emit = true }): ends the run at once; the server then forwards the request
 * and streams the backend's response to the client as it arrives, outside the script's limits
 * (the pool's timeouts bound the wait, as nginx's fastcgi_read_timeout does). The run never
 * waits here: nothing the script could do after the call would run, so holding its Lua state
 * or QuickJS context through the backend's round trip only cost a yield, a resume and the
 * promises around them (issue 23). Throws the exit, which the script cannot catch.
 */
export function passThrough(host: HostCore, name: string, options: PassOptions = {}): never {
  throw relayExit(host, name, options);
}

/**
 * What {@link passThrough} throws, recorded as the run's end but not thrown: for an engine that
 * stops the script its own way (lua54 ends it at its next instruction, since a Lua error is a
 * longjmp and costs a JS exception through wasm). Throws only for a bad call.
 */
export function relayExit(host: HostCore, name: string, options: PassOptions = {}): ScriptError {
  if (host.response.headersSent) throw new Error('pass() with emit after flush(): the headers are already sent');
  const pool = poolNamed(host, name);
  const params = paramsFor(host, options);
  host.rawHead = null;
  // The status is the backend's, set by the relay once its header block is in.
  return host.exit(200, false, null, 'exit', { kind: 'relay', pool, params, body: options.body ?? null });
}

function poolNamed(host: HostCore, name: string): BackendPool {
  const pool = host.services.backends.get(name);
  if (!pool) throw new Error(`pass(): no backend named ${JSON.stringify(name)} (see config "backends")`);
  return pool;
}

// The PARAMS block to forward: the request's own, with the script's changes applied.
function paramsFor(host: HostCore, options: PassOptions): Buffer {
  // A replaced body needs its own CONTENT_LENGTH, or PHP reads the wrong number of bytes.
  const changes = options.body ? { ...options.params, CONTENT_LENGTH: String(options.body.length) } : options.params;
  return changes ? paramsWith(host, changes) : (host.request.paramsBlock ?? Buffer.alloc(0));
}

async function forward(host: HostCore, name: string, options: PassOptions): Promise<BackendResponse> {
  const pool = poolNamed(host, name);
  const body = options.body ?? (await host.guard(bodyBytes(host), passName(name)));
  const params = paramsFor(host, options);
  const asked = pool.request({ params, body, cancel: host.request });
  try {
    return await host.guard(asked, passName(name));
  } catch (err) {
    if (err instanceof BackendError) throw backendFailed(host, name, err);
    // The run was stopped (a limit, an abort) while waiting: nobody will read the answer, so
    // it must not hold its backend connection.
    asked.then((late) => late.destroy(), () => undefined);
    throw err;
  }
}

// The params block with the script's changes; CONTENT_LENGTH follows a replaced body.
function paramsWith(host: HostCore, changes: Readonly<Record<string, string | null>>): Buffer {
  const params = Object.create(null) as Record<string, string>;
  const block = host.request.paramsBlock;
  if (block) decodePairs(block, Infinity, params);
  for (const name of Object.keys(changes)) {
    const value = changes[name];
    if (value === null || value === undefined) delete params[name];
    else params[name] = value;
  }
  return encodePairs(Object.entries(params));
}

/**
 * The web server's error-log line (FCGI_STDERR) for a pass() whose backend failed: the same
 * whether the run waited for it or the relay of pass() with emit met it after the run.
 */
export function passFailureLine(script: string, pool: string, err: Error): string {
  return `lodestone: ${script}: pass(${JSON.stringify(pool)}): ${err.message}`;
}

// The pool has logged the failure (once per request, with its LS_BACKEND_* code); the run
// ends with the error page, and the web server's error log gets the line too.
function backendFailed(host: HostCore, name: string, err: BackendError): ScriptError {
  host.response.log(passFailureLine(host.scriptFilename, name, err));
  return host.exit(err.status, true, null, `pass(${JSON.stringify(name)}): ${err.message}`);
}

/**
 * How the slow log names a pass() call: with its backend, which is what an operator looks for
 * (a name from the configuration: pass() refuses any other before it waits).
 */
function passName(backend: string): string {
  return `pass(${backend})`;
}
