/**
 * What an engine hands back for a source, apart from the engine interface (engine.ts) so that
 * the host side (host.ts, host/modules.ts, modules.ts) can name a compiled script without
 * importing the engine contract, which itself names the host.
 */

export type EngineName = 'lua' | 'js';

/**
 * What a source is compiled as: a script a request runs, or a module a script requires (its
 * top level runs when a run first requires it, once per sandbox or afresh in each run: see
 * modules.ts).
 */
export type SourceKind = 'script' | 'module';

/** A script compiled by an engine, ready to run for many requests. */
export interface CompiledScript {
  readonly engine: EngineName;
  /** Absolute path of the source file (for error messages). */
  readonly path: string;
  /** Estimated bytes the compiled form holds, for the store's byte bound. */
  readonly size: number;
  /**
   * For a module the engine decided at compile time will run per request rather than be shared
   * (the JS engine: js/share.ts), why; otherwise undefined (lua54 decides at its first load).
   */
  readonly perRequestBecause?: string;
  /** Frees what the engine holds for it (a QuickJS function handle). Idempotent. */
  dispose(): void;
}
