/**
 * What ends a run besides its own return, and what bounds it: the script error (with its
 * place) and the per-request limits. Engines, the host and the pipeline all use these; they live
 * apart from engine.ts so the host, which raises them, need not import the engine interface
 * that names the host.
 */
import { defaults, positive, section, type ValueOf } from '../config-schema.js';
import type { Code } from '../errors.js';
import type { BackendPool } from '../fastcgi/client/pool.js';

/**
 * What went wrong in a script, with its place, for the log line and FCGI_STDERR. `exit` is not
 * a failure: the run ended itself through the host (sendfile(), a refused file access), and the
 * response it prepared stands; it travels the same path as a limit so no pcall or try can
 * swallow it.
 */
export type ScriptErrorKind = 'compile' | 'runtime' | 'limit' | 'exit';

/** How an `exit` ends the response: its status, and an error page and log code when it is a refusal. */
export interface ScriptExit {
  readonly status: number;
  /** Replace the response with the standard error page for `status`. */
  readonly page: boolean;
  /** The log code when the exit is a refusal worth a log line (403, 404, 500). */
  readonly code: Code | null;
  /** What the server still sends after the run, outside the script's limits; null: nothing. */
  readonly rest: ExitRest | null;
}

/**
 * The part of a response an exit leaves to the server: a file range nginx cannot take from an
 * escalation header (sendfile()), or a request to forward to a backend pool whose response is
 * streamed as it arrives (pass with emit): `params` is the PARAMS block to send, `body` the body
 * the script gave, or null for the request's own.
 */
export type ExitRest =
  | { readonly kind: 'range'; readonly path: string; readonly start: number; readonly end: number }
  | { readonly kind: 'relay'; readonly pool: BackendPool; readonly params: Buffer; readonly body: Buffer | null };

/**
 * A script failure. `file:line` points into the script, never into Lodestone. The message is
 * logged and sent on FCGI_STDERR; the client only sees a 500.
 */
export class ScriptError extends Error {
  constructor(
    readonly kind: ScriptErrorKind,
    message: string,
    readonly file: string,
    readonly line: number | null,
    /** Set for kind `exit`. */
    readonly exit: ScriptExit | null = null,
  ) {
    // No stack trace: the place that matters is the script's (file, line), and capturing
    // Lodestone's own frames cost ~7% of a pass() with emit, which ends its run with an exit.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = limit;
    this.name = 'ScriptError';
  }

  /** `file:line`, or just the file when the line is unknown. */
  get location(): string {
    return this.line !== null ? `${this.file}:${this.line}` : this.file;
  }
}

/**
 * Per-request limits, the config's `[scriptLimits]`; exceeding one ends the script with a
 * ScriptError of kind 'limit'. Defaults: generous for edge logic, tight enough that a runaway
 * script cannot hurt the worker.
 */
export const scriptLimitsSection = section({
  /** CPU time the script spends running, not waiting. */
  cpuMs: positive(1000, 'CPU time a script may run per request'),
  /**
   * Lua: the worker heap's growth during the run (approximate). JS: passed to QuickJS's memory
   * limit, which in this build counts allocations rather than bytes, so it only stops single
   * huge allocations; the real JS bound is the engine's capped wasm heap (createJsEngine's
   * maxHeapBytes, 256 MiB by default).
   */
  memoryBytes: positive(64 * 1024 * 1024, 'memory a script may allocate per request'),
  wallMs: positive(30_000, 'wall time per request, waits included'),
  outputBytes: positive(16 * 1024 * 1024, 'response body bytes per request'),
  // What log() sends to the web server's error log (FCGI_STDERR); the run goes on. An error log
  // is read by people and rotated by size: 64 KiB a run is a long stack dump, and a line of
  // 8 KiB is four times nginx's own error line (NGX_MAX_ERROR_STR, 2048).
  logBytes: positive(64 * 1024, 'bytes `log()` may send per request; then lines are dropped (marked once)'),
  logLineBytes: positive(8 * 1024, 'bytes one `log()` line keeps; a longer one is cut (marked)'),
});

export type ScriptLimits = ValueOf<typeof scriptLimitsSection>;

export const defaultScriptLimits: ScriptLimits = defaults(scriptLimitsSection);
