/**
 * The one interface both script engines implement, like hono's Router interface with several
 * routers behind it: the pipeline (handlers/pipeline.ts) and the script store (script-store.ts) only know
 * this file, never fengari or QuickJS.
 */
import type { CompiledScript, EngineName, SourceKind } from './compiled.js';
import type { ScriptHost } from './host.js';

export { defaultScriptLimits, ScriptError, type ScriptErrorKind, type ScriptExit, type ScriptLimits } from './script-error.js';

export type { CompiledScript, EngineName, SourceKind } from './compiled.js';

/**
 * The status a script's return value names, mod_magnet style: an integer from 100 to 999; any
 * other value is no status (the response keeps its own). Both engines judge it here.
 */
export function returnedStatus(value: number): number | undefined {
  return Number.isInteger(value) && value >= 100 && value <= 999 ? value : undefined;
}

/**
 * A script engine: compiles source once, runs it per request in a fresh sandbox.
 *
 * Contract for `run`: the script sees the API of {@link ScriptHost} under the names documented
 * in README ("Script API"); its top level runs once per request with fresh globals; async host
 * calls (`sleep`, `request.body()`) never block the event loop; the promise resolves with the
 * script's return value when it is an integer status code (mod_magnet style), else undefined;
 * it rejects only with a {@link ScriptError} (runtime error or limit), and the engine stays
 * usable for the next request whatever happened.
 */
export interface ScriptEngine {
  readonly name: EngineName;
  /** File extension this engine serves, with the dot. */
  readonly extension: string;
  /** Number of compilations so far: tests prove cache reuse with it, not with timings. */
  readonly compiles: number;
  /** Compiles source as a script (default) or a module; throws ScriptError('compile') naming file:line. */
  compile(source: string, path: string, kind?: SourceKind): CompiledScript;
  /**
   * Runs a compiled script for one request; callers go through runScript (run.ts). An engine
   * that can run a script synchronously until it ends or first waits returns the status (or
   * throws its ScriptError) at once when the run never waits, so the request is answered
   * without a promise or a microtask turn; a run that waits returns a promise. Either form may
   * fail, synchronously or by rejecting. A run the host ended with an exit (host.fatal of kind
   * `exit`: pass() with emit, sendfile()) may also just return: runScript reads host.fatal.
   */
  run(script: CompiledScript, host: ScriptHost): number | undefined | Promise<number | undefined>;
  /** Serialised bytecode for the on-disk cache; absent when the engine cannot serialise. */
  dump?(script: CompiledScript): Uint8Array;
  /** Loads what {@link dump} produced; throws when the bytes are not usable. */
  load?(bytecode: Uint8Array, path: string): CompiledScript;
  /** A string that changes when compiled output would (engine and its version): cache key part. */
  readonly version: string;
}
