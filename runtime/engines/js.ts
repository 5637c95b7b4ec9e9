/**
 * The JavaScript engine: QuickJS compiled to wasm (quickjs-emscripten, release-sync variant).
 *
 * One runtime and one context per worker, created once, with the global object and every
 * intrinsic deep-frozen after the API prelude is installed (js/prelude.ts). A script is compiled
 * once as an async wrapper function whose parameters are the script API, so a request costs a
 * function call, not a new context (~270 us measured for a context, ~10 us for a call). Host
 * promises (sleep, request.body) become QuickJS promises; each settlement runs the queued jobs
 * as one CPU slice of the run that owns them (js/vm.ts). The asyncify variant is not used: it
 * allows one suspended call per module, and a second concurrent one crashed the process.
 *
 * A native stack overflow or a wasm trap leaves the module unusable; the engine then retires
 * that module (failing the runs still on it) and continues on a spare one loaded in advance.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { QuickJSHandle } from 'quickjs-emscripten-core';
import { defaultScriptLimits, ScriptError, type CompiledScript, type ScriptEngine } from './engine.js';
import type { ScriptHost } from './host.js';
import { isModuleFault, loadModule, Vm, type LoadedModule } from './js/vm.js';

/** Options of {@link createJsEngine}. */
export interface JsEngineOptions {
  /**
   * Cap on the QuickJS heap of this engine, all concurrent runs together, in bytes (default
   * 256 MB). It is the real memory bound: QuickJS's own limit cannot count bytes in this build
   * (see js/vm.ts), so a run's `memoryBytes` only bounds single allocations; the run whose
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

/** A script compiled to a wrapper function inside one Vm (recompiled after a restart). */
class JsScript implements CompiledScript {
  readonly engine = 'js' as const;
  readonly size: number;
  private disposed = false;

  constructor(
    readonly path: string,
    /** Kept to recompile into a new Vm after a restart. */
    readonly source: string,
    public vm: Vm | null,
    public fn: QuickJSHandle | null,
  ) {
    // Bytecode plus the source QuickJS keeps for Function.prototype.toString, and our copy.
    this.size = 3 * Buffer.byteLength(source) + 1024;
  }

  /** Frees the wrapper function. Idempotent; a disposed script recompiles if run again. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.release();
  }

  /** Sets the compiled form (used on a recompile). */
  attach(vm: Vm, fn: QuickJSHandle): void {
    this.release();
    this.disposed = false;
    this.vm = vm;
    this.fn = fn;
  }

  private release(): void {
    if (this.fn && this.vm && !this.vm.dead) this.fn.dispose();
    this.fn = null;
    this.vm = null;
  }
}

/**
 * The `.js` script engine. Create it with {@link createJsEngine} (loading wasm is async).
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
  private compileCount = 0;
  private nextRunId = 1;
  private vm: Vm | null;
  private spare: LoadedModule | null;
  private pending: Promise<Vm> | null = null;

  /** Use {@link createJsEngine}. */
  constructor(
    first: LoadedModule,
    spare: LoadedModule,
    private readonly maxHeapBytes: number,
  ) {
    this.vm = this.newVm(first);
    this.spare = spare;
    // The first compile costs ~6 ms more than later ones (lazily compiled wasm functions,
    // first-use allocations); pay it here rather than in the first request.
    this.compileIn(this.vm, WARM_UP, '<warm-up>').dispose();
  }

  get compiles(): number {
    return this.compileCount;
  }

  /** Memory QuickJS reports in use (objects, strings, bytecode); 0 while restarting. */
  memoryUsed(): number {
    return this.vm && !this.vm.dead ? this.vm.memoryUsed() : 0;
  }

  /** Size of the current wasm heap (its high-water mark: wasm memory never shrinks). */
  get heapBytes(): number {
    return this.vm?.heapBytes ?? 0;
  }

  compile(source: string, path: string): CompiledScript {
    this.compileCount++;
    const vm = this.vm;
    // While a faulted module is being replaced, the script is compiled on its first run.
    if (!vm) return new JsScript(path, source, null, null);
    return new JsScript(path, source, vm, this.compileIn(vm, source, path));
  }

  run(script: CompiledScript, host: ScriptHost): Promise<number | undefined> {
    if (!(script instanceof JsScript)) return Promise.reject(new TypeError(`not a JS script: ${script.path}`));
    // Not an async function: the common path returns the run's own promise, one tick sooner.
    const vm = this.vm;
    if (!vm) return this.replacement().then(() => this.run(script, host));
    try {
      if (script.vm !== vm || !script.fn) {
        this.compileCount++;
        script.attach(vm, this.compileIn(vm, script.source, script.path));
      }
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    return vm.run(script.fn!, this.nextRunId++, host, script.path).done;
  }

  /** Frees the runtime; the engine cannot be used afterwards. False if QuickJS reported leaks. */
  close(): boolean {
    const vm = this.vm;
    this.vm = null;
    this.spare = null;
    return vm ? vm.dispose() : true;
  }

  private compileIn(vm: Vm, source: string, path: string): QuickJSHandle {
    try {
      return vm.compile(source, path, defaultScriptLimits.memoryBytes);
    } catch (err) {
      if (vm.suspect) this.retire(vm); // escaped code left jobs behind
      if (err instanceof ScriptError) throw err;
      if (isModuleFault(err)) this.retire(vm);
      const message = err instanceof Error ? err.message : String(err);
      throw new ScriptError('compile', `the JS engine failed to compile the script: ${message}`, path, null);
    }
  }

  private newVm(loaded: LoadedModule): Vm {
    return new Vm(loaded, (vm) => {
      if (vm.dead || vm.suspect) this.retire(vm);
    });
  }

  /** Replaces a faulted Vm: synchronously from the spare module when one is loaded. */
  private retire(vm: Vm): void {
    if (this.vm !== vm) return;
    vm.abandon('the JS engine was restarted after a fault in another script');
    this.restarts++;
    this.vm = null;
    if (this.spare) {
      this.vm = this.newVm(this.spare);
      this.spare = null;
    }
    this.reloadSpare();
  }

  private reloadSpare(): void {
    if (this.pending) return;
    this.pending = loadModule(this.maxHeapBytes).then((loaded) => {
      this.pending = null;
      if (this.vm) this.spare = loaded;
      else this.vm = this.newVm(loaded);
      return this.vm;
    });
    // A failed load leaves pending set, so run() reports it instead of retrying in a loop.
    void this.pending.catch(() => undefined);
  }

  private replacement(): Promise<Vm> {
    if (this.vm) return Promise.resolve(this.vm);
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
  const [first, spare] = await Promise.all([loadModule(maxHeapBytes), loadModule(maxHeapBytes)]);
  return new JsEngine(first, spare, maxHeapBytes);
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
