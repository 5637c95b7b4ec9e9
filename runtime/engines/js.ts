/**
 * The JavaScript engine: QuickJS compiled to wasm (quickjs-emscripten, release-sync variant).
 *
 * A small pool of Vms (runtime + context, the global object and every intrinsic and API object
 * deep-frozen after the API prelude is installed, js/prelude.ts) in one wasm module. Each run
 * takes a Vm for its whole life and gives it back when it ends cleanly; a Vm a run leaves
 * anything in (a stopped run's jobs, a caught fatal, output) is disposed, never reused, and the
 * other runs, on Vms of their own, go on. A script is compiled as an async wrapper function
 * whose parameters are the script API, once per Vm, so a request costs a function call, not a
 * new context. Host promises (sleep, request.body) become QuickJS promises; each settlement runs
 * the queued jobs as one CPU slice of the run that owns them (js/vm.ts). The asyncify variant
 * is not used: it allows one suspended call per module, and a second concurrent one crashed
 * the process.
 *
 * A native stack overflow or a wasm trap leaves the module unusable; the engine then replaces
 * that module (failing the runs still on it) with a spare one loaded in advance, and keeps no
 * reference to the old one, so its memory is freed.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { QuickJSHandle } from 'quickjs-emscripten-core';
import { defaultScriptLimits, ScriptError, type CompiledScript, type ScriptEngine, type SourceKind } from './engine.js';
import { forceGc } from './gc.js';
import type { ScriptHost } from './host.js';
import { isModuleFault, loadModule, type LoadedModule } from './js/module.js';
import type { Run } from './js/run.js';
import { Vm, type VmTenant } from './js/vm.js';
import { API_PARAMS } from './js/prelude.js';
import { planShare, type SharePlan, type ShareRefusal } from './js/share.js';

/** Options of {@link createJsEngine}. */
export interface JsEngineOptions {
  /**
   * Cap on the QuickJS heap of this engine, all concurrent runs together, in bytes (default
   * 256 MB). It is the real memory bound: QuickJS's own limit cannot count bytes in this build
   * (see js/module.ts), so a run's `memoryBytes` only bounds single allocations; the run whose
   * allocation finds the heap full at this cap is the one stopped.
   */
  readonly maxHeapBytes?: number;
}

const DEFAULT_MAX_HEAP_BYTES = 256 * 1024 * 1024;

/** A little of most syntax, compiled once at startup to warm the parser's wasm code up. */
const WARM_UP = `const a = [1, 'b', { c: null }]; let s = \`t\${a.length}\`;
for (const [k, v] of Object.entries(request.query)) if (k && /x+/.test(v)) print(k, v); else write(s);
class K { #p = 1; get p() { return this.#p } } try { await sleep(0) } catch (e) { log(e?.message ?? '') }
return a.map((x) => typeof x).includes('string') ? 200 : new K().p;`;

/**
 * A script: its source, and its wrapper function compiled in each pooled Vm it ran in
 * (compiled lazily in a Vm the first time it runs there; a handle dies with its Vm).
 */
class JsScript implements CompiledScript, VmTenant {
  readonly engine = 'js' as const;
  readonly size: number;
  private readonly fns = new Map<Vm, QuickJSHandle>();

  /** Lines that say `await` (a limit stop's line on one of them is not trusted: js/limits.ts); null: none. */
  readonly awaitLines: ReadonlySet<number> | null;

  /** For a module: shared (its instrumented body), or why it runs per request (js/share.ts). */
  readonly share: SharePlan | ShareRefusal | null;
  readonly perRequestBecause?: string;

  constructor(
    readonly path: string,
    /** Kept to compile into other Vms. */
    readonly source: string,
    readonly kind: SourceKind,
  ) {
    // Decided once per source (acorn and eslint-scope: ~40 ms for a 2,000-line module), not per
    // Vm it compiles into.
    this.share = kind === 'module' ? planShare(source, API_PARAMS) : null;
    if (this.share?.shared === false) this.perRequestBecause = this.share.reason;
    const lines = new Set<number>();
    if (/\bawait\b/.test(source)) source.split('\n').forEach((text, i) => /\bawait\b/.test(text) && lines.add(i + 1));
    this.awaitLines = lines.size > 0 ? lines : null;
    // Bytecode plus the source QuickJS keeps for Function.prototype.toString, and our copy
    // (per Vm it ran in: at most the pool's idle bound plus the runs in flight).
    this.size = 3 * Buffer.byteLength(source) + 1024;
  }

  /** The wrapper compiled in `vm`, if it was. */
  in(vm: Vm): QuickJSHandle | undefined {
    return this.fns.get(vm);
  }

  /** Records the wrapper compiled in `vm`. */
  attach(vm: Vm, fn: QuickJSHandle): void {
    this.fns.set(vm, fn);
    vm.tenants.add(this);
  }

  drop(vm: Vm): void {
    const fn = this.fns.get(vm);
    this.fns.delete(vm);
    if (fn && !vm.dead) fn.dispose();
  }

  /** Frees the wrapper in every Vm. Idempotent; a disposed script recompiles if run again. */
  dispose(): void {
    for (const vm of [...this.fns.keys()]) {
      this.drop(vm);
      vm.tenants.delete(this);
    }
  }
}

/**
 * Idle Vms kept for the next runs. One serves every run of a worker that runs one at a time;
 * runs waiting at once (sleep, pass, a cache) need one each. A new Vm costs ~6-10 ms (the
 * prelude's parse ~3 ms and its deep freeze of ~540 objects ~3-6 ms, measured on the 2-core
 * dev machine) and an idle one holds ~190 KB of the wasm heap, so up to this many are kept
 * (~3 MB) and concurrency beyond it makes Vms that are disposed when their run ends.
 */
const MAX_IDLE = 16;

/**
 * The `.js` script engine. Create it with {@link createJsEngine} (loading wasm is async).
 *
 * Each run in flight has a Vm (runtime, context, prelude, frozen globals) of its own, taken
 * from a small pool in one wasm module, so whatever a run leaves behind (queued jobs of a
 * stopped run, a caught fatal, output) is discarded with its Vm and never reaches another run.
 * All Vms allocate from the module's one capped heap (maxHeapBytes).
 *
 * @example
 *   const engine = await createJsEngine();
 *   const script = engine.compile('print("hello")', '/srv/www/hello.js');
 *   const status = await engine.run(script, host); // host: a ScriptHost, started by the pipeline
 */
export class JsEngine implements ScriptEngine {
  readonly name = 'js' as const;
  readonly extension = '.js';
  readonly version = `quickjs-emscripten ${packageVersion()} release-sync`;
  /** Times the wasm module was replaced after a fault (for diagnostics and tests). */
  restarts = 0;
  /** Vms made and disposed so far (for diagnostics and tests). */
  readonly vms = { created: 0, disposed: 0 };
  private compileCount = 0;
  private nextRunId = 1;
  private loaded: LoadedModule | null;
  private spare: LoadedModule | null;
  private pending: Promise<LoadedModule> | null = null;
  private readonly idle: Vm[] = [];
  /** Vms with a run in flight. */
  private readonly busy = new Set<Vm>();

  /** Use {@link createJsEngine}. */
  constructor(
    first: LoadedModule,
    spare: LoadedModule | null,
    private readonly maxHeapBytes: number,
  ) {
    this.loaded = first;
    this.spare = spare;
    if (!spare) this.reloadSpare();
    // The first compile costs ~6 ms more than later ones (lazily compiled wasm functions,
    // first-use allocations); pay it here rather than in the first request.
    this.compile(WARM_UP, '<warm-up>').dispose();
  }

  get compiles(): number {
    return this.compileCount;
  }

  /** Memory QuickJS reports in use by every live Vm (objects, strings, bytecode). */
  memoryUsed(): number {
    let bytes = 0;
    for (const vm of [...this.idle, ...this.busy]) if (!vm.dead) bytes += vm.memoryUsed();
    return bytes;
  }

  /** Size of the current wasm heap (its high-water mark: wasm memory never shrinks). */
  get heapBytes(): number {
    return this.loaded?.memory.buffer.byteLength ?? 0;
  }

  /** Idle Vms in the pool and Vms with a run in flight. */
  get pool(): { idle: number; busy: number } {
    return { idle: this.idle.length, busy: this.busy.size };
  }

  compile(source: string, path: string, kind: SourceKind = 'script'): CompiledScript {
    const script = new JsScript(path, source, kind);
    // While a faulted module is being replaced, the script is compiled on its first run.
    if (!this.loaded) return script;
    const vm = this.take();
    try {
      script.attach(vm, this.compileIn(vm, script));
    } finally {
      this.putBack(vm, null);
    }
    return script;
  }

  run(script: CompiledScript, host: ScriptHost): number | undefined | Promise<number | undefined> {
    if (!(script instanceof JsScript)) return Promise.reject(new TypeError(`not a JS script: ${script.path}`));
    // Not an async function: the common path returns the run's own promise, one tick sooner.
    if (!this.loaded) return this.replacement().then(() => this.run(script, host));
    let vm: Vm;
    let fn: QuickJSHandle | undefined;
    try {
      vm = this.take();
    } catch (err) {
      return Promise.reject(this.setupError(err, script.path));
    }
    let modules: QuickJSHandle | null = null;
    try {
      fn = this.fnIn(vm, script);
      // The modules the run may require, compiled here before it starts (api/modules.ts).
      if (host.modules !== null) {
        const names: string[] = [];
        const fns: QuickJSHandle[] = [];
        for (const [name, slot] of host.modules) {
          if (!(slot.script instanceof JsScript)) continue;
          names.push(name);
          fns.push(this.fnIn(vm, slot.script));
        }
        modules = vm.modulesObject(host.modules, names, fns);
      }
    } catch (err) {
      this.putBack(vm, null);
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    this.busy.add(vm);
    const run = vm.run(fn, this.nextRunId++, host, script.path, script.awaitLines, modules);
    // Ended within its first slice (a script that never waited): answered without a promise.
    if (!run.finished) return run.done;
    if (run.outcome instanceof ScriptError) throw run.outcome;
    return run.outcome;
  }

  /** Frees every Vm; the engine cannot be used afterwards. False if QuickJS reported leaks. */
  close(): boolean {
    let clean = true;
    for (const vm of [...this.idle, ...this.busy]) clean = vm.dispose() && clean;
    this.idle.length = 0;
    this.busy.clear();
    this.loaded = null;
    this.spare = null;
    return clean;
  }

  /** `script`'s wrapper in `vm`, compiled there on first use. */
  private fnIn(vm: Vm, script: JsScript): QuickJSHandle {
    let fn = script.in(vm);
    if (!fn) {
      fn = this.compileIn(vm, script);
      script.attach(vm, fn);
    }
    return fn;
  }

  private compileIn(vm: Vm, script: JsScript): QuickJSHandle {
    const { source, path, kind, share } = script;
    this.compileCount++;
    try {
      return vm.compile(source, path, defaultScriptLimits.memoryBytes, kind, share?.shared === true ? share : null);
    } catch (err) {
      if (err instanceof ScriptError) throw err;
      if (isModuleFault(err)) vm.dead = true;
      const message = err instanceof Error ? err.message : String(err);
      throw new ScriptError('compile', `the JS engine failed to compile the script: ${message}`, path, null);
    }
  }

  /** An idle Vm of the current module, or a new one (~6-10 ms, see MAX_IDLE). */
  private take(): Vm {
    const vm = this.idle.pop();
    if (vm) return vm;
    const made = new Vm(this.loaded!, (v, run) => this.runEnded(v, run));
    this.vms.created++;
    return made;
  }

  /** A Vm that could not be made: a full heap is the run's limit, anything else a module fault. */
  private setupError(err: unknown, path: string): ScriptError {
    if (isModuleFault(err)) this.replaceModule();
    const message = err instanceof Error ? err.message : String(err);
    return new ScriptError('limit', `the JS engine could not make a sandbox for the run: ${message}`, path, null);
  }

  private runEnded(vm: Vm, run: Run): void {
    this.busy.delete(vm);
    this.putBack(vm, run);
  }

  /**
   * Pools `vm` again when the run (null: a compile) left nothing behind and the pool has room;
   * otherwise disposes of it. A Vm whose module faulted takes the module with it.
   */
  private putBack(vm: Vm, run: Run | null): void {
    if (vm.dead) {
      if (vm.loaded === this.loaded) this.replaceModule();
      // Its scripts must forget it (tenants): a script the store keeps would keep the dead Vm,
      // and through it the old wasm module's Memory, alive.
      this.discard(vm);
      return;
    }
    const clean = run ? vm.reusable(run) : !vm.suspect;
    if (clean && vm.loaded === this.loaded && this.idle.length < MAX_IDLE) this.idle.push(vm);
    else this.discard(vm);
  }

  private discard(vm: Vm): void {
    vm.dispose();
    this.vms.disposed++;
  }

  /**
   * Replaces a faulted wasm module (a V8 stack overflow or a trap inside it: the module's own
   * state can no longer be trusted, so the runs still on it fail), synchronously from the spare.
   * Nothing may keep a reference to the old module afterwards, so V8 frees its Memory.
   */
  private replaceModule(): void {
    const old = this.loaded;
    if (!old) return;
    this.restarts++;
    for (const vm of [...this.busy]) {
      if (vm.loaded !== old) continue;
      vm.abandon('the JS engine was restarted after a fault of its wasm module');
      this.busy.delete(vm);
      this.discard(vm);
    }
    for (const vm of this.idle.splice(0)) {
      vm.dead = true;
      this.discard(vm);
    }
    this.loaded = this.spare;
    this.spare = null;
    this.reloadSpare();
    // V8 does not count a wasm Memory as heap pressure: with a small JS heap, a filled module
    // of 272 MB stayed resident after its replacement until some unrelated full GC (measured:
    // 4 replacements, 1,064 MB RSS; with a full GC after each, back to 70 MB). One full GC
    // (a few ms) once the faulting frames are gone; faults are rare.
    setTimeout(forceGc, 100).unref();
  }

  private reloadSpare(): void {
    if (this.pending) return;
    this.pending = loadModule(this.maxHeapBytes).then((loaded) => {
      this.pending = null;
      if (this.loaded) this.spare = loaded;
      else this.loaded = loaded;
      return loaded;
    });
    // A failed load leaves pending set, so run() reports it instead of retrying in a loop.
    void this.pending.catch(() => undefined);
  }

  private replacement(): Promise<LoadedModule> {
    if (this.loaded) return Promise.resolve(this.loaded);
    if (!this.pending) this.reloadSpare();
    return this.pending!;
  }
}

/**
 * Loads QuickJS (two module instances: the engine's and a spare for fault recovery) and
 * returns the engine.
 */
export async function createJsEngine(options: JsEngineOptions = {}): Promise<JsEngine> {
  const maxHeapBytes = options.maxHeapBytes ?? DEFAULT_MAX_HEAP_BYTES;
  // The spare (for replacing a faulted module at once) loads after the engine is up: the engine
  // is made on the first .js request (serve-here.ts), which should not wait for two modules.
  return new JsEngine(await loadModule(maxHeapBytes), null, maxHeapBytes);
}

/** quickjs-emscripten-core's version, for the cache key (its package.json is not exported). */
function packageVersion(): string {
  try {
    const entry = fileURLToPath(import.meta.resolve('quickjs-emscripten-core'));
    const pkg = JSON.parse(readFileSync(join(dirname(entry), '..', 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}
