/**
 * The script store: SCRIPT_FILENAME -> compiled script, bounded by count and bytes (lru-cache),
 * revalidated against the file (mtime, size, inode) at most once per stat interval, as
 * lighttpd's mod_magnet_cache does. Lua bytecode also goes to an optional on-disk cache keyed by
 * the source's hash and the engine's version, so a restarted worker does not re-parse.
 *
 * Everything that touches the disk is async (libuv's thread pool), so a slow disk never stalls
 * the event loop; within a stat interval a hit costs one map lookup and a clock read.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import { ScriptError, type CompiledScript, type ScriptEngine, type SourceKind } from './engine.js';
import { requiredNames, type ModuleSlot, type ModuleSlots } from './modules.js';
import { DEFAULT_MAX_SCRIPT_BYTES, tooLargeMessage } from './script-cache-config.js';
import { openRegular, readUpTo, type OpenedFile } from '../files/open-regular.js';
import type { Logger } from '../log.js';

/** Options of a {@link ScriptStore}. */
export interface StoreOptions {
  /** Scripts are only served from inside this directory (after resolving symlinks). */
  readonly root: string;
  /**
   * Engines by file extension ('.lua', '.js'), or how to make one: a maker is called when the
   * first script of its extension is compiled, so a site that never runs a `.js` never loads
   * QuickJS (its two wasm instances, ~40 MB).
   */
  readonly engines: ReadonlyMap<string, ScriptEngine | (() => ScriptEngine | Promise<ScriptEngine>)>;
  /** Recheck the file at most this often; 0 checks on every request. */
  readonly statIntervalMs: number;
  readonly maxEntries: number;
  readonly maxBytes: number;
  /** Directory for Lua bytecode; null disables the on-disk cache. */
  readonly cacheDir: string | null;
  /** Scripts larger than this are refused before they are read (default {@link DEFAULT_MAX_SCRIPT_BYTES}). */
  readonly maxScriptBytes?: number;
  /** Where compile and bytecode events go (debug level). */
  readonly log?: Logger;
  /**
   * Directories require() searches, in order (modules.paths); none: no modules. A file inside
   * them is a module and is never run as a script.
   */
  readonly modulePaths?: readonly string[];
}

/** What a lookup found. */
export type Lookup =
  | { readonly kind: 'script'; readonly lease: Lease }
  | { readonly kind: 'missing'; readonly file: string }
  | { readonly kind: 'forbidden'; readonly file: string; readonly reason: string }
  /** The script is larger than maxScriptBytes (a server-side configuration problem): not read. */
  | { readonly kind: 'too-large'; readonly file: string; readonly size: number; readonly max: number }
  | { readonly kind: 'error'; readonly error: ScriptError };

/** What loading a file gave: its entry (compiled, or its compile error), or why there is none. */
type Loaded = { entry: Entry } | Exclude<Lookup, { kind: 'script' | 'error' }>;

/** A compiled script held for one run; release it when the run ends. */
export interface Lease {
  readonly script: CompiledScript;
  readonly engine: ScriptEngine;
  /** The script's real path (symlinks resolved). */
  readonly file: string;
  /** The modules the script may require (its literal requires, and theirs); null: none. */
  readonly modules: ModuleSlots | null;
  release(): void;
}

interface Entry {
  file: string;
  /** Module names the source requires literally (modules.ts: requiredNames). */
  requires: readonly string[];
  /** For a script: its modules, found when it was last checked; null: none. */
  modules: ModuleSlots | null;
  /** The module entries {@link modules} holds (each counted in its `users`, so not freed while held). */
  holds: readonly Entry[];
  engine: ScriptEngine;
  mtimeMs: number;
  size: number;
  ino: number;
  checkedAt: number;
  script: CompiledScript | null;
  error: ScriptError | null;
  users: number;
  evicted: boolean;
}

/**
 * @example
 *   const store = new ScriptStore({ root, engines, statIntervalMs: 1000, maxEntries: 1000,
 *                                   maxBytes: 64 << 20, cacheDir: null });
 *   const found = await store.get(req.param('SCRIPT_FILENAME'));
 */
export class ScriptStore {
  private readonly entries: LRUCache<string, Entry>;
  private rootReal: string | null = null;
  private readonly made = new Map<string, ScriptEngine | Promise<ScriptEngine>>();
  /** Loads in progress, by entry key: requests that arrive meanwhile share one (see load). */
  private readonly loading = new Map<string, Promise<Loaded>>();
  private readonly maxScriptBytes: number;
  private moduleDirsReal: Promise<string[]> | null = null;
  private moduleDirsAt = -Infinity;

  constructor(private readonly options: StoreOptions) {
    this.maxScriptBytes = options.maxScriptBytes ?? DEFAULT_MAX_SCRIPT_BYTES;
    this.entries = new LRUCache<string, Entry>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      sizeCalculation: (entry) => Math.max(1, entry.script?.size ?? 1),
      // A run may still hold the script: free it when the last lease ends.
      dispose: (entry) => {
        entry.evicted = true;
        if (entry.users === 0) entry.script?.dispose();
        hold(entry, []);
      },
    });
  }

  /** Scripts currently cached. */
  get size(): number {
    return this.entries.size;
  }

  /**
   * The answer for a script checked within the stat interval, or null when the disk must be
   * asked ({@link get}). Synchronous, so the common hit costs no promise or microtask.
   */
  peek(requested: string): Lookup | null {
    const cached = this.entries.get(requested);
    return cached && Date.now() - cached.checkedAt < this.options.statIntervalMs ? this.answer(cached) : null;
  }

  /** Looks up (and compiles when needed) the script a request names. */
  async get(requested: string): Promise<Lookup> {
    return this.peek(requested) ?? this.refresh(requested, this.entries.get(requested), Date.now());
  }

  /** Drops every entry (tests, reload). */
  clear(): void {
    this.entries.clear();
  }

  private answer(entry: Entry): Lookup {
    if (entry.error) return { kind: 'error', error: entry.error };
    entry.users++;
    let released = false;
    return {
      kind: 'script',
      lease: {
        script: entry.script!,
        engine: entry.engine,
        file: entry.file,
        modules: entry.modules,
        release: () => {
          if (released) return;
          released = true;
          unuse(entry);
        },
      },
    };
  }

  private async refresh(requested: string, cached: Entry | undefined, now: number): Promise<Lookup> {
    const root = await this.root();
    let real: string;
    try {
      real = await fs.promises.realpath(requested);
    } catch {
      this.entries.delete(requested);
      return { kind: 'missing', file: requested };
    }
    // realpath resolved every symlink, so a prefix check cannot be fooled by one.
    if (!inside(real, root)) {
      return { kind: 'forbidden', file: requested, reason: `${real} is outside the root ${root}` };
    }
    // A module under the root (the default <root>/lib) is code to require, not a page: run as
    // a script it would answer with whatever its top level does, out of context.
    if ((await this.moduleDirs()).some((dir) => inside(real, dir))) {
      return { kind: 'forbidden', file: requested, reason: `${real} is a module (in modules.paths), not a script` };
    }
    const engine = await this.engine(path.extname(real));
    if (!engine) return { kind: 'forbidden', file: requested, reason: `${real} is not a .lua or .js script` };
    const found = await this.load(requested, real, engine, cached, now, 'script');
    if (!('entry' in found)) return found;
    const entry = found.entry;
    if (entry.script !== null) {
      const found = await this.modulesOf(entry, engine, now);
      entry.modules = found?.slots ?? null;
      // An entry evicted while its modules were found (LRU pressure) must not hold them.
      hold(entry, entry.evicted ? [] : (found?.entries ?? []));
    }
    return this.answer(entry);
  }

  /**
   * The entry for the file at `real` (stored under `key`): `cached` when the file is the same
   * (mtime, size, inode), else read and compiled as `kind`. A compile error is an entry too.
   */
  private load(key: string, real: string, engine: ScriptEngine, cached: Entry | undefined, now: number, kind: SourceKind): Promise<Loaded> {
    // Concurrent first requests for a script (a restart under load) each compiled an entry of
    // their own, and storing the next one disposed the one an earlier request was about to run:
    // all but one answered 500. One load per key in flight, shared, compiles once.
    const inflight = this.loading.get(key);
    if (inflight) return inflight;
    const loading = this.loadNow(key, real, engine, cached, now, kind).finally(() => this.loading.delete(key));
    this.loading.set(key, loading);
    return loading;
  }

  private async loadNow(key: string, real: string, engine: ScriptEngine, cached: Entry | undefined, now: number, kind: SourceKind): Promise<Loaded> {
    // Never a blocking open (a FIFO in the root would park a thread-pool thread for good), and
    // the size checked on the descriptor before a byte is read (compiling 400 MB took 1.5 GB).
    let opened: OpenedFile | null;
    try {
      opened = await openRegular(real);
    } catch {
      this.entries.delete(key);
      return { kind: 'missing', file: real };
    }
    if (!opened) {
      this.entries.delete(key);
      return { kind: 'forbidden', file: real, reason: `${real} is not a regular file` };
    }
    const { handle, stat } = opened;
    try {
      // Stat and read through the same descriptor (lighttpd's TOCTOU rule): the bytes compiled
      // are those of the file whose mtime/size/inode the entry records.
      if (cached && cached.file === real && cached.mtimeMs === stat.mtimeMs && cached.size === stat.size && cached.ino === stat.ino) {
        cached.checkedAt = now;
        return { entry: cached };
      }
      if (stat.size > this.maxScriptBytes) {
        this.entries.delete(key);
        return { kind: 'too-large', file: real, size: stat.size, max: this.maxScriptBytes };
      }
      const source = (await readUpTo(handle, stat.size)).toString('utf8');
      const entry: Entry = {
        file: real,
        requires: this.options.modulePaths?.length ? requiredNames(source) : [],
        modules: null,
        holds: [],
        engine,
        mtimeMs: stat.mtimeMs,
        size: stat.size,
        ino: stat.ino,
        checkedAt: now,
        script: null,
        error: null,
        users: 0,
        evicted: false,
      };
      try {
        entry.script = await this.compile(engine, source, real, kind);
      } catch (err) {
        // A broken script is remembered with its stat key, so it is not re-parsed per request.
        entry.error = err instanceof ScriptError ? err : new ScriptError('compile', String(err), real, null);
      }
      this.entries.set(key, entry);
      return { entry };
    } finally {
      await handle.close();
    }
  }

  /**
   * Every module `entry` may require: its literal requires, theirs, and so on, each found (or
   * not) as require() will report it. Module files are revalidated on the stat interval as
   * scripts are, so a changed module is picked up by the next check of a script using it.
   */
  private async modulesOf(entry: Entry, engine: ScriptEngine, now: number): Promise<{ slots: ModuleSlots; entries: Entry[] } | null> {
    if (entry.requires.length === 0) return null;
    const slots = new Map<string, ModuleSlot>();
    const entries: Entry[] = [];
    const queue = [...entry.requires];
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      if (slots.has(name)) continue;
      const { slot, requires, from } = await this.module(name, engine, now);
      slots.set(name, slot);
      if (from) entries.push(from);
      queue.push(...requires);
    }
    return { slots, entries };
  }

  /** The module `name` for `engine`'s language: found, compiled and cached like a script. */
  private async module(name: string, engine: ScriptEngine, now: number): Promise<{ slot: ModuleSlot; requires: readonly string[]; from?: Entry }> {
    const key = `\0module${engine.extension}\0${name}`;
    const cached = this.entries.get(key);
    if (cached && now - cached.checkedAt < this.options.statIntervalMs) return { slot: slotOf(cached), requires: cached.requires, from: cached };
    const dirs = await this.moduleDirs();
    const relative = name.split('.').join(path.sep) + engine.extension;
    for (const dir of dirs) {
      let real: string;
      try {
        real = await fs.promises.realpath(path.join(dir, relative));
      } catch {
        continue;
      }
      // Confined like scripts: a symlink out of the module directories is refused.
      if (!inside(real, dir)) {
        this.entries.delete(key);
        return { slot: { problem: `is outside modules.paths: ${path.join(dir, relative)} resolves to ${real}` }, requires: [] };
      }
      const found = await this.load(key, real, engine, cached, now, 'module');
      if ('entry' in found) return { slot: slotOf(found.entry), requires: found.entry.requires, from: found.entry };
      const why =
        found.kind === 'too-large' ? tooLargeMessage(found.size, found.max) : found.kind === 'forbidden' ? found.reason : `${found.file} vanished`;
      return { slot: { problem: `cannot be loaded: ${why}` }, requires: [] };
    }
    this.entries.delete(key);
    return { slot: { problem: `not found: no ${relative} in modules.paths (${dirs.join(', ') || 'none exists'})` }, requires: [] };
  }

  /**
   * The module directories that exist, resolved (symlinks followed), in config order: asked
   * again at most once per stat interval, so a `lib/` made after the start is found.
   */
  private moduleDirs(): Promise<string[]> {
    const now = Date.now();
    if (this.moduleDirsReal === null || now - this.moduleDirsAt >= this.options.statIntervalMs) {
      this.moduleDirsAt = now;
      this.moduleDirsReal = Promise.all((this.options.modulePaths ?? []).map((dir) => fs.promises.realpath(dir).catch(() => null))).then((dirs) =>
        dirs.filter((dir): dir is string => dir !== null),
      );
    }
    return this.moduleDirsReal;
  }

  private async compile(engine: ScriptEngine, source: string, file: string, kind: SourceKind): Promise<CompiledScript> {
    const dir = this.options.cacheDir;
    if (!dir || !engine.dump || !engine.load) {
      this.options.log?.debug('-', `${kind} compiled`, { script: file });
      return engine.compile(source, file, kind);
    }
    const key = createHash('sha256').update(engine.version).update('\0').update(kind).update('\0').update(file).update('\0').update(source).digest('hex');
    const cachePath = path.join(dir, `${key}${engine.extension}c`);
    try {
      const bytes = await fs.promises.readFile(cachePath);
      const loaded = engine.load(bytes, file);
      this.options.log?.debug('-', `${kind} loaded from bytecode cache`, { script: file });
      return loaded;
    } catch {
      // Not cached yet, or unusable: compile and (re)write below.
    }
    const script = engine.compile(source, file, kind);
    this.options.log?.debug('-', `${kind} compiled`, { script: file });
    const tmp = `${cachePath}.${process.pid}.tmp`;
    try {
      await fs.promises.mkdir(dir, { recursive: true });
      await fs.promises.writeFile(tmp, engine.dump(script));
      // rename is atomic: another worker never reads a half-written file.
      await fs.promises.rename(tmp, cachePath);
    } catch {
      await fs.promises.rm(tmp, { force: true });
    }
    return script;
  }

  /** The engine for `extension`, made on first use (see StoreOptions.engines); undefined: none. */
  private engine(extension: string): ScriptEngine | Promise<ScriptEngine> | undefined {
    const made = this.made.get(extension);
    if (made) return made;
    const found = this.options.engines.get(extension);
    if (typeof found !== 'function') return found;
    // One maker call per extension, however many first requests arrive at once; a maker that
    // failed is tried again by the next request (its error is this request's).
    const making = Promise.resolve()
      .then(found)
      .catch((err: unknown) => {
        this.made.delete(extension);
        throw err;
      });
    this.made.set(extension, making);
    return making;
  }

  private async root(): Promise<string> {
    this.rootReal ??= await fs.promises.realpath(this.options.root);
    return this.rootReal;
  }
}

/** True when the real path `file` is `dir` or inside it. */
function inside(file: string, dir: string): boolean {
  return file === dir || file.startsWith(dir + path.sep);
}

/** What require() is given for a module entry: its compiled code, or its compile error. */
function slotOf(entry: Entry): ModuleSlot {
  if (entry.script !== null) return { script: entry.script, file: entry.file };
  return { problem: `does not compile: ${entry.error!.location}: ${entry.error!.message}` };
}

/** One use of `entry` ended: its compiled code is freed once it is evicted and unused. */
function unuse(entry: Entry): void {
  entry.users--;
  if (entry.evicted && entry.users === 0) entry.script?.dispose();
}

/**
 * Makes `script` hold `modules` (and let go of those it held): a module evicted from the LRU
 * while a cached script still lists it stays usable until that script lets go of it.
 */
function hold(script: Entry, modules: readonly Entry[]): void {
  const before = script.holds;
  for (const m of modules) m.users++;
  script.holds = modules;
  for (const m of before) unuse(m);
}
