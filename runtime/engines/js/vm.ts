/**
 * One QuickJS sandbox: one runtime and one context in a wasm module instance that several Vms
 * share (module.ts), with the prelude installed (api/install.ts) and the global object frozen,
 * and the machinery of a run: CPU slices, jobs, host promises and their settling, limits, and
 * whether the Vm may serve the next run. js.ts owns the engine contract and the pool (a Vm per
 * run in flight, disposed when a run leaves anything in it) and replaces a wasm module that
 * broke. The run bookkeeping is run.ts, compiling compile.ts, the calls into the prelude's
 * helpers prelude-calls.ts, and the script API's bindings api/.
 *
 * Measured facts this file is built on (quickjs-emscripten 0.32, QuickJS 2025-09-13, Node 20):
 * - A malloc made by quickjs-emscripten-core itself (strings passed into QuickJS) is not checked
 *   for NULL. Addresses 0..1023 are unused in this build, so a failed small copy is harmless,
 *   but a large one would overwrite static data: large strings are probed first.
 * - The stack limits (compile.ts) and the heap cap (module.ts) are what keep a script from
 *   faulting the wasm module.
 */
import type { QuickJSContext, QuickJSDeferredPromise, QuickJSHandle, QuickJSRuntime } from 'quickjs-emscripten-core';
import { returnedStatus, ScriptError, type CompiledScript, type SourceKind } from '../engine.js';
import type { ScriptHost } from '../host.js';
import type { ModuleSlots } from '../modules.js';
import { markIdle, markRunning } from '../running.js';
import type { Frame } from '../slow-log.js';
import type { Bridge } from './api/binding.js';
import { applyTaken } from './api/output.js';
import { install } from './api/install.js';
import { compileWrapper, RUN_STACK_BYTES, type CompileVm } from './compile.js';
import type { SharePlan } from './share.js';
import { isModuleFault, type HeapUser, type LoadedModule } from './module.js';
import { shouldInterrupt, type LimitedVm } from './limits.js';
import { moduleOrigin } from './stack.js';
import { describe, disposeFns, framesFrom, preludeFns, saysYes, vmError, type Described, type PreludeFns } from './prelude-calls.js';
import { Run, type WaitSource } from './run.js';

/** Module objects a Vm keeps (one per store lease of a script that requires modules). */
const MODULE_OBJECTS = 8;
/** Strings longer than this (in UTF-8 bytes) are probed before being copied into the heap. */
const PROBE_OVER = 1000;
/** Jobs run per executePendingJobs call, so a drain can look at the run between batches. */
const JOB_BATCH = 256;
/** How long a stopped run's jobs may keep running before the Vm is given up (see drain). */
const KILL_BUDGET_MS = 50;

/** Something that keeps handles in a Vm (a script's compiled wrapper): told to drop them. */
export interface VmTenant {
  /** Frees (or, for a dead Vm, forgets) what it holds in `vm`. */
  drop(vm: Vm): void;
}

/**
 * A QuickJS runtime and context with the prelude installed and the global object frozen. The
 * engine gives each run in flight a Vm of its own (QuickJS's job queue is per runtime, so two
 * runs in one runtime cannot be told apart once a stopped run leaves jobs behind).
 * `dead` is set when the wasm module faulted; a dead Vm is never touched again. Members that
 * only the interfaces it implements name (the bindings' Bridge, CompileVm, LimitedVm) are public
 * for the files behind them, which are parts of the Vm: their docs are on the interfaces.
 */
export class Vm implements Bridge, CompileVm, HeapUser, LimitedVm, WaitSource {
  dead = false;
  /** Set once disposed; nothing may use it afterwards. */
  disposed = false;
  /**
   * Set when this Vm cannot be trusted with the next run (a native stack overflow in a host
   * call, jobs a stopped run left queued): the engine disposes it when the run ends.
   */
  suspect = false;
  /** Holders of handles in this Vm, dropped before it is disposed. */
  readonly tenants = new Set<VmTenant>();
  readonly runtime: QuickJSRuntime;
  readonly context: QuickJSContext;
  /** The prelude's host-facing functions. */
  readonly fns: PreludeFns;
  // The rest of the state is public for the parts of the Vm in other files (see the class doc).
  current: Run | null = null;
  compiling = false;
  compileStart = 0;
  capturing = false;
  private readonly runs = new Map<number, Run>();
  private memoryLimit = Number.NaN;
  /** The runs' modules as QuickJS objects (see {@link modulesObject}), by the store's lease, oldest first. */
  private readonly moduleObjects = new Map<ModuleSlots, { handle: QuickJSHandle; fns: readonly QuickJSHandle[] }>();

  constructor(
    readonly loaded: LoadedModule,
    /** Called when a run ends, so the engine can pool this Vm again or dispose of it. */
    private readonly onRunEnd: (vm: Vm, run: Run) => void,
  ) {
    this.runtime = loaded.module.newRuntime();
    this.runtime.setMaxStackSize(RUN_STACK_BYTES);
    this.runtime.setInterruptHandler(() => shouldInterrupt(this));
    this.context = this.runtime.newContext();
    const before = loaded.active;
    loaded.active = this;
    let api: QuickJSHandle;
    try {
      api = install(this);
    } catch (err) {
      try {
        this.context.dispose();
        this.runtime.dispose();
      } catch {
        // A module that failed here is replaced by the engine (isModuleFault) with its memory.
      }
      throw err;
    } finally {
      loaded.active = before;
    }
    this.fns = preludeFns(this.context, api);
    api.dispose();
  }

  /** Bytes of wasm heap in use by the whole module (high-water mark; it never shrinks). */
  get heapBytes(): number {
    return this.loaded.memory.buffer.byteLength;
  }

  /** Memory QuickJS reports in use (objects, strings, bytecode): what a leak would grow. */
  memoryUsed(): number {
    const usage = this.runtime.computeMemoryUsage();
    try {
      const used = this.context.getProp(usage, 'memory_used_size');
      const bytes = this.context.getNumber(used);
      used.dispose();
      return bytes;
    } finally {
      usage.dispose();
    }
  }

  /** Called by the module's heap watcher when a grow failed while this Vm was executing. */
  heapFull(message: string): void {
    this.current?.host.abort('limit', message);
  }

  /**
   * Copies a string into QuickJS, probing the heap first when the copy is large. The library
   * copies C strings, which end at the first NUL, so a string holding NULs goes in as parts.
   */
  newString(value: string): QuickJSHandle {
    if (value.length > PROBE_OVER / 3) this.ensureRoom(Buffer.byteLength(value));
    if (!value.includes('\0')) return this.context.newString(value);
    const handles = value.split('\0').map((part) => this.context.newString(part));
    try {
      return this.context.unwrapResult(this.context.callFunction(this.fns.nul, this.context.undefined, handles));
    } finally {
      for (const h of handles) h.dispose();
    }
  }

  /**
   * Throws unless `bytes` can be malloc'd now. QuickJS allocates (and frees) a buffer of that
   * size; the library's unchecked malloc that follows then reuses the freed block.
   */
  ensureRoom(bytes: number): void {
    if (bytes <= PROBE_OVER) return;
    const n = this.context.newNumber(bytes + 64);
    try {
      if (!saysYes(this.context, this.fns.probe, n)) {
        const message = `out of memory: no room in the JS heap for ${bytes} bytes`;
        this.current?.host.abort('limit', message);
        throw new RangeError(message);
      }
    } finally {
      n.dispose();
    }
  }

  // ---- limits (the interrupt handler: limits.ts) ----------------------------------------

  /**
   * Where `run`'s script made the host call it waits in (the prelude's waitedAt), for the slow
   * log, which asks between slices: the script's frames below the prelude's own.
   */
  waitFrames(run: Run): Frame[] {
    if (this.dead || this.disposed || run.finished || this.current !== null) return [];
    try {
      return framesFrom(this.context, this.fns.waitedAt, run.path);
    } catch (err) {
      if (isModuleFault(err)) this.dead = true;
      return [];
    }
  }

  setMemoryLimit(bytes: number): void {
    if (bytes === this.memoryLimit) return;
    this.memoryLimit = bytes;
    this.runtime.setMemoryLimit(bytes);
  }

  // ---- compile ---------------------------------------------------------------------------

  /** Compiles `source` as the body of a script's or a module's wrapper function (compile.ts); returns its handle. */
  compile(source: string, path: string, memoryBytes: number, kind: SourceKind = 'script', share: SharePlan | null = null): QuickJSHandle {
    this.loaded.active = this;
    try {
      return compileWrapper(this, source, path, memoryBytes, kind, share);
    } finally {
      this.loaded.active = null;
    }
  }

  compiledIn(script: CompiledScript): QuickJSHandle | undefined {
    // JsScript (js.ts) keeps its wrapper per Vm; js.ts imports this file, so no import back.
    const s = script as Partial<{ in(vm: Vm): QuickJSHandle | undefined }>;
    return typeof s.in === 'function' ? s.in(this) : undefined;
  }

  same(fn: QuickJSHandle, expected: QuickJSHandle): boolean {
    return saysYes(this.context, this.fns.same, fn, expected);
  }

  // ---- run -------------------------------------------------------------------------------

  /**
   * The run's modules as one QuickJS object, name -> compiled wrapper (`fns` in `names`' order),
   * which start() hands to require(): a shared module loaded in this Vm is then found without a
   * call out of QuickJS (~10 us each, quickjs-emscripten's host-function wrapper). Kept per
   * store lease while its wrappers stay the ones compiled here; a few leases at most.
   */
  modulesObject(slots: ModuleSlots, names: readonly string[], fns: readonly QuickJSHandle[]): QuickJSHandle {
    const kept = this.moduleObjects.get(slots);
    if (kept !== undefined && kept.fns.length === fns.length && kept.fns.every((fn, i) => fn === fns[i])) return kept.handle;
    if (kept !== undefined) {
      kept.handle.dispose();
      this.moduleObjects.delete(slots);
    } else if (this.moduleObjects.size >= MODULE_OBJECTS) {
      const [oldest, entry] = this.moduleObjects.entries().next().value!;
      entry.handle.dispose();
      this.moduleObjects.delete(oldest);
    }
    // No prototype: a name like "constructor" must not find Object.prototype's.
    const handle = this.context.newObject(this.context.null);
    names.forEach((name, i) => this.context.setProp(handle, name, fns[i]!));
    this.moduleObjects.set(slots, { handle, fns });
    return handle;
  }

  /** Starts `fn` (a compiled wrapper) for `host`; `run.done` settles when the script ends. */
  run(fn: QuickJSHandle, id: number, host: ScriptHost, path: string, awaitLines: ReadonlySet<number> | null = null, modules: QuickJSHandle | null = null): Run {
    const run = new Run(id, host, path, this, awaitLines);
    this.runs.set(id, run);
    if (host.fatal) {
      this.finish(run, host.fatal);
      this.onRunEnd(this, run);
      return run;
    }
    this.slice(run, () => {
      const result = this.context.callFunction(this.fns.start, this.context.undefined, fn, modules ?? this.context.undefined);
      if (result.error) return this.fail(run, result.error);
      const text = this.context.getString(result.value);
      result.value.dispose();
      if (text === 'P') run.promise = this.context.unwrapResult(this.context.callFunction(this.fns.promise, this.context.undefined));
      else run.returned = this.taken(run, text);
    });
    return run;
  }

  /**
   * Runs `body` and the jobs it queued as one CPU slice of `run`, then checks whether the run
   * is over. A wasm fault kills this Vm and ends the run; the engine then replaces the Vm.
   */
  private slice(run: Run, body: () => void): void {
    this.current = run;
    this.loaded.active = this;
    markRunning(run.host.scriptFilename);
    run.sliceStart = performance.now();
    this.setMemoryLimit(run.host.limits.memoryBytes);
    try {
      body();
      // A run that start() finished has handed over everything, unless jobs it queued ran.
      const ran = !run.finished && this.drain();
      if (run.returned === null || ran) this.collectOutput(run);
      else run.quiet = true;
      if (!run.finished) this.check(run);
    } catch (err) {
      if (isModuleFault(err)) this.dead = true;
      const message = err instanceof Error ? err.message : String(err);
      run.host.abort(this.dead ? 'limit' : 'runtime', this.dead ? 'stack overflow (the JS engine was restarted)' : `internal error: ${message}`);
      this.finish(run, run.host.fatal!);
    } finally {
      run.cpuMs += performance.now() - run.sliceStart;
      this.current = null;
      this.loaded.active = null;
      markIdle();
    }
    if (run.finished) this.onRunEnd(this, run);
  }

  /**
   * Hands the output the prelude buffered during this slice to the host, at the end of every
   * slice: the script's writes do not call the host (a call out of QuickJS costs ~7-10 us, this
   * call in ~1 us) unless the buffer grows past 16 KB (api/output.ts). Interrupts are off
   * meanwhile: the buffer must be emptied even for a stopped run, or a later run would find it.
   */
  private collectOutput(run: Run): void {
    this.current = null;
    const result = this.context.callFunction(this.fns.takeOut, this.context.undefined);
    this.current = run;
    if (result.error) {
      result.error.dispose();
      this.suspect = true; // the buffer may still hold this run's output
      return;
    }
    const text = this.context.getString(result.value);
    result.value.dispose();
    if (!run.finished) this.taken(run, text);
  }

  /** Applies what takeOut() or start() answered (api/output.ts); the status part, as a number. */
  private taken(run: Run, text: string): number {
    // The run has ended (a limit, or an exit such as pass() with emit, which flushed what came
    // before it): what the script buffered after that, e.g. behind an unawaited pass(), is dropped.
    if (run.host.fatal) return 0;
    try {
      const status = applyTaken(run, text);
      return status === '' ? 0 : Number(status);
    } catch (err) {
      // Over the output limit: host.write recorded it in host.fatal, which check() reports. A
      // head change the host refused (it was checked in the sandbox) fails the run.
      if (!run.host.fatal) run.host.abort('runtime', err instanceof Error ? err.message : String(err));
      return 0;
    }
  }

  /**
   * Runs pending jobs in batches until none are left. A stopped run's jobs still run (each is
   * interrupted at its next poll), but an interrupt becomes a catchable rejection once it
   * crosses an async function or a promise, so `for (;;) try { await spin() } catch {}` can
   * queue jobs forever. Past KILL_BUDGET_MS of that the jobs are left in the queue and the Vm
   * is marked suspect: the engine disposes of it when the run ends (those jobs belong to this
   * run alone, its Vm being its own) instead of ever running them in a later request.
   */
  drain(): boolean {
    let deadline = 0;
    let ran = false;
    while (this.runtime.hasPendingJob()) {
      ran = true;
      const result = this.runtime.executePendingJobs(JOB_BATCH);
      if (result.error) result.error.dispose();
      if (!this.compiling && !this.current?.host.fatal) continue;
      const now = performance.now();
      if (deadline === 0) deadline = now + KILL_BUDGET_MS;
      else if (now > deadline) {
        this.suspect = true;
        return ran;
      }
    }
    return ran;
  }

  /** After a slice: ends the run if it stopped, settled, or can never settle. */
  private check(run: Run): void {
    const promise = run.promise;
    if (run.host.fatal) {
      // A limit (the interrupt handler) stops the script without knowing where; the error the
      // script threw there carries its line. An exit (pass() with emit) needs no line, and
      // describing the error costs calls into QuickJS.
      if (run.host.fatal.line === null && run.host.fatal.kind !== 'exit' && promise) {
        const state = this.context.getPromiseState(promise);
        if (state.type === 'rejected') return this.fail(run, state.error);
        if (state.type === 'fulfilled' && state.value !== promise) state.value.dispose();
      }
      return this.finish(run, run.host.fatal);
    }
    if (run.returned !== null) return this.finish(run, returnedStatus(run.returned));
    if (!promise) return;
    const state = this.context.getPromiseState(promise);
    if (state.type === 'fulfilled') {
      const value = state.value;
      const status = this.context.typeof(value) === 'number' ? this.context.getNumber(value) : 0;
      if (value !== promise) value.dispose();
      return this.finish(run, returnedStatus(status));
    }
    if (state.type === 'rejected') return this.fail(run, state.error);
    if (run.deferreds.size === 0) {
      // Nothing the host holds can resume the script: it would wait until the wall limit.
      this.finish(run, new ScriptError('runtime', 'the script awaits a promise that can never settle', run.path, null));
    }
  }

  /** Ends `run` with what the script threw (disposes `error`). */
  private fail(run: Run, error: QuickJSHandle): void {
    if (run.host.fatal) {
      if (run.host.fatal.line === null && run.host.fatal.kind !== 'exit') {
        const line = this.describe(error, run.path).line;
        // The interrupt's own throw carries the same stale position lineHere refused.
        if (line !== null && (!run.interrupted || run.trustsStopLine(line))) run.host.locate(line);
      }
      error.dispose();
      return this.finish(run, run.host.fatal);
    }
    const d = this.describe(error, run.path);
    error.dispose();
    let err: ScriptError;
    if (d.name === 'InternalError' && (d.message === 'out of memory' || d.message === 'stack overflow')) {
      err = run.host.abort('limit', d.message, d.line);
    } else {
      const message = d.name === 'uncaught exception' ? `uncaught exception: ${d.message}` : `${d.name}: ${d.message}`;
      const origin = moduleOrigin(d.stack, run.path);
      err = new ScriptError('runtime', origin === null ? message : `${message} (at ${origin})`, run.path, d.line);
    }
    this.finish(run, err);
  }

  private finish(run: Run, outcome: number | undefined | ScriptError): void {
    if (run.finished) return;
    this.runs.delete(run.id);
    if (!this.dead) {
      run.promise?.dispose();
      for (const deferred of run.deferreds) deferred.dispose();
    }
    run.promise = null;
    run.deferreds.clear();
    run.end(outcome);
  }

  /** A host call's result: at once when the host has it (the embedded cache), else a promise. */
  answer<T>(run: Run, result: T | Promise<T>, toHandle: (value: T) => QuickJSHandle): QuickJSHandle {
    return result instanceof Promise ? this.hostCall(run, result, toHandle) : toHandle(result);
  }

  /** Hands the script a QuickJS promise settled by `work`; each settlement is a new slice. */
  hostCall<T>(run: Run, work: Promise<T>, toHandle: (value: T) => QuickJSHandle): QuickJSHandle {
    const deferred = this.context.newPromise();
    run.host.waitLocator = run;
    run.deferreds.add(deferred);
    void work.then(
      (value) => this.settle(run, deferred, () => toHandle(value), false),
      (err: unknown) => this.settle(run, deferred, () => this.vmError(err), true),
    );
    return deferred.handle;
  }

  private settle(run: Run, deferred: QuickJSDeferredPromise, make: () => QuickJSHandle, rejected: boolean): void {
    if (run.finished || this.dead || !run.deferreds.delete(deferred)) return;
    if (run.host.fatal) {
      deferred.dispose();
      this.finish(run, run.host.fatal);
      this.onRunEnd(this, run);
      return;
    }
    this.slice(run, () => {
      const value = make();
      if (rejected) deferred.reject(value);
      else deferred.resolve(value);
      value.dispose();
    });
  }

  /** A QuickJS Error for a host error, with its name and message (see `error` in the prelude). */
  vmError(err: unknown): QuickJSHandle {
    return vmError(this.context, this.fns.error, err);
  }

  /** Asks the prelude to describe a thrown value; never throws. */
  describe(error: QuickJSHandle, path: string): Described {
    return describe(this.context, this.fns.describe, error, path);
  }

  /** Ends every run still in flight (its wasm module faulted); their handles are left alone. */
  abandon(reason: string): void {
    this.dead = true;
    for (const run of [...this.runs.values()]) this.finish(run, run.host.abort('limit', reason));
  }

  /**
   * True when the run that just ended on this Vm left nothing behind, so the next run may use
   * it: not stopped by a limit or an abort (an `exit` from sendfile() is a normal end), no job
   * queued, no output buffered. Anything else and the engine disposes of the Vm, which discards
   * whatever the run left with it. Costs two calls into wasm: 1-2.5 us per run on the hello
   * script (in-process A/B against the single shared Vm, 2-core machine under load).
   */
  reusable(run: Run): boolean {
    if (this.dead || this.suspect || this.disposed) return false;
    const fatal = run.host.fatal;
    if (fatal && fatal.kind !== 'exit') return false;
    // start() ended the run and nothing ran after it: no job was queued, the buffer is empty.
    if (run.quiet) return true;
    if (this.runtime.hasPendingJob()) return false;
    const left = this.context.callFunction(this.fns.takeOut, this.context.undefined);
    if (left.error) {
      left.error.dispose();
      return false;
    }
    // Nothing buffered: no head change and no output (see takeOut in api/output.ts).
    const empty = this.context.typeof(left.value) === 'string' && this.context.getString(left.value) === '\r\r';
    left.value.dispose();
    return empty;
  }

  /**
   * Frees the prelude handles, its tenants' handles, the context and the runtime (QuickJS
   * returns their memory to the module's allocator); false if QuickJS objected. A dead Vm is
   * only forgotten: its module is replaced whole.
   */
  dispose(): boolean {
    if (this.disposed) return true;
    this.disposed = true;
    for (const tenant of this.tenants) tenant.drop(this);
    this.tenants.clear();
    if (!this.dead) for (const { handle } of this.moduleObjects.values()) handle.dispose();
    this.moduleObjects.clear();
    if (this.dead) return false;
    try {
      disposeFns(this.fns);
      this.context.dispose();
      this.runtime.dispose();
      return true;
    } catch {
      return false;
    }
  }
}
