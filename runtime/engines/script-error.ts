/**
 * What ends a run besides its own return, and what bounds it: the script error (with its
 * place) and the per-request limits. Engines, the host and the pipeline all use these; they live
 * apart from engine.ts so the host, which raises them, need not import the engine interface
 * that names the host.
 */
import type { Code } from '../errors.js';

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
}

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
    super(message);
    this.name = 'ScriptError';
  }

  /** `file:line`, or just the file when the line is unknown. */
  get location(): string {
    return this.line !== null ? `${this.file}:${this.line}` : this.file;
  }
}

/** Per-request limits; exceeding one ends the script with a ScriptError of kind 'limit'. */
export interface ScriptLimits {
  /** CPU time the script may spend running (not waiting), in ms. */
  readonly cpuMs: number;
  /**
   * Memory the script may allocate. Lua: the worker heap's growth during the run (approximate).
   * JS: passed to QuickJS's memory limit, which in this build counts allocations rather than
   * bytes, so it only stops single huge allocations; the real JS bound is the engine's capped
   * wasm heap (createJsEngine's maxHeapBytes, 256 MiB by default).
   */
  readonly memoryBytes: number;
  /** Wall-clock time for the whole run, async waits included, in ms. */
  readonly wallMs: number;
  /** Response body bytes the script may produce. */
  readonly outputBytes: number;
  /**
   * Bytes log() may send to the web server's error log (FCGI_STDERR) in one run; past it the
   * line is cut with a marker and later lines are dropped (the run goes on).
   */
  readonly logBytes: number;
  /** Bytes one log() line may carry; a longer line is cut with a marker. */
  readonly logLineBytes: number;
}

/** Defaults: generous for edge logic, tight enough that a runaway script cannot hurt the worker. */
export const defaultScriptLimits: ScriptLimits = Object.freeze({
  cpuMs: 1000,
  memoryBytes: 64 * 1024 * 1024,
  wallMs: 30_000,
  outputBytes: 16 * 1024 * 1024,
  // An error log is read by people and rotated by size: 64 KiB a run is a long stack dump, and
  // a line of 8 KiB is four times nginx's own error line (NGX_MAX_ERROR_STR, 2048).
  logBytes: 64 * 1024,
  logLineBytes: 8 * 1024,
});
