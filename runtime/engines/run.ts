/**
 * One script run, start to end, and its one outcome. The sequence (start the host, run the
 * engine, end the output, check the run's fatal error, end the response with the returned
 * status, stop the run's timers) exists here only: the pipeline, the bench and the tests all run
 * scripts through {@link runScript} and switch on what it returns, instead of each catching the
 * host's exit error and reading what it left behind.
 */
import type { Code } from '../errors.js';
import type { BackendPool } from '../fastcgi/client/pool.js';
import type { CompiledScript, ScriptEngine } from './engine.js';
import type { ScriptHost } from './host.js';
import { ScriptError } from './script-error.js';

/** How a run ended, for whoever answers the request. */
export type RunOutcome =
  /**
   * The response is complete: the script returned (`returned`: the status it named, if any), or
   * sendfile() escalated to the web server.
   */
  | { readonly kind: 'done'; readonly returned: number | undefined }
  /**
   * The run ended itself with a refusal or a failed pass(): the error page for `status` (or,
   * when output already went out, the end of what was sent); `code` is its log code, if any.
   */
  | { readonly kind: 'page'; readonly status: number; readonly code: Code | null; readonly error: ScriptError }
  /** sendfile() of a range nginx cannot take: the headers are set, these bytes are still to send. */
  | { readonly kind: 'range'; readonly path: string; readonly start: number; readonly end: number; readonly error: ScriptError }
  /** pass() with emit: the request is still to forward to `pool`, and its response to stream to the client. */
  | { readonly kind: 'relay'; readonly pool: BackendPool; readonly params: Buffer; readonly body: Buffer | null }
  /** The script failed (runtime error, limit, raw-mode head): the request gets a 500. */
  | { readonly kind: 'failed'; readonly error: ScriptError }
  /** The web server went away: nothing more to send. */
  | { readonly kind: 'aborted' };

/**
 * Runs `script` on `engine` for the request `host` serves. Synchronous when the script never
 * waits (as the engine's run is; most requests), a promise when it waits. Never rejects: every end
 * is a {@link RunOutcome}. The run's timers are stopped when it returns; what an outcome leaves
 * to send (a range, a relay) is outside the script's limits.
 *
 * @example
 *   const outcome = runScript(lease.engine, lease.script, host);
 *   if (outcome instanceof Promise) outcome.then(answer); else answer(outcome);
 */
export function runScript(engine: ScriptEngine, script: CompiledScript, host: ScriptHost): RunOutcome | Promise<RunOutcome> {
  host.start();
  let outcome: RunOutcome;
  try {
    const returned = engine.run(script, host);
    if (typeof returned === 'object') {
      return returned.then(
        (status) => finished(host, succeeded(host, status)),
        (err: unknown) => finished(host, failed(host, err)),
      );
    }
    outcome = succeeded(host, returned);
  } catch (err) {
    outcome = failed(host, err);
  }
  return finished(host, outcome);
}

function finished(host: ScriptHost, outcome: RunOutcome): RunOutcome {
  host.finish();
  return outcome;
}

// The script returned: its output ends (raw mode's head applied), then the response is sent;
// what fails there (a raw head, a returned status the host refuses) is the run's failure. An
// engine may return from a run the host ended (an exit it did not throw, see ScriptEngine.run).
function succeeded(host: ScriptHost, status: number | undefined): RunOutcome {
  try {
    if (!host.fatal) host.endOutput();
    if (!host.fatal) {
      host.end(status);
      return { kind: 'done', returned: status };
    }
  } catch (err) {
    return failed(host, err);
  }
  return failed(host, host.fatal);
}

function failed(host: ScriptHost, err: unknown): RunOutcome {
  const error = err instanceof ScriptError ? err : new ScriptError('runtime', String(err), host.scriptFilename, null);
  if (error.exit) return exited(host, error);
  if (host.request.aborted) return { kind: 'aborted' };
  return { kind: 'failed', error };
}

// The run ended itself through the host (sendfile(), a refused file access, pass()).
function exited(host: ScriptHost, error: ScriptError): RunOutcome {
  const { status, page, code, rest } = error.exit!;
  if (page) return { kind: 'page', status, code, error };
  if (rest?.kind === 'range') return { kind: 'range', path: rest.path, start: rest.start, end: rest.end, error };
  if (rest?.kind === 'relay') return { kind: 'relay', pool: rest.pool, params: rest.params, body: rest.body };
  host.end(undefined);
  return { kind: 'done', returned: undefined };
}
