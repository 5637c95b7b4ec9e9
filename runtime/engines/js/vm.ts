/**
 * One QuickJS sandbox: one runtime and one context in a wasm module instance that several Vms
 * share, the prelude's API builder, and the per-run bookkeeping (CPU slices, host promises,
 * limits). js.ts owns the engine contract and the pool (a Vm per run in flight, disposed when a
 * run leaves anything in it) and replaces a wasm module that broke; everything that touches
 * handles lives here so handle lifetimes can be checked in one file.
 *
 * Measured facts this file is built on (quickjs-emscripten 0.32, QuickJS 2025-09-13, Node 20):
 * - The wasm code runs on V8's native stack (~984 KB) while QuickJS counts its own stack on the
 *   emscripten shadow stack (5 MB). Native use per shadow byte differs by code path: the
 *   parser overflowed V8 at ~42 KB of QuickJS stack, JSON.stringify at ~80 KB, plain recursion at
 *   ~450 KB. A V8 overflow inside wasm unwinds C frames half-way and the module is unusable, so
 *   the QuickJS limit must fire first: a small limit while compiling, a larger one while running
 *   (scripts cannot reach the parser at run time: the prelude disables eval and Function).
 * - `setMemoryLimit` does not count bytes in this build: without malloc_usable_size QuickJS adds
 *   8 bytes per block, so it only bounds single allocations and the number of live blocks. The
 *   real bound is the wasm Memory's `maximum`, set when the module is instantiated.
 * - A malloc made by quickjs-emscripten-core itself (strings passed into QuickJS) is not checked
 *   for NULL. Addresses 0..1023 are unused in this build, so a failed small copy is harmless,
 *   but a large one would overwrite static data: large strings are probed first.
 */
import {
  newQuickJSWASMModuleFromVariant,
  newVariant,
  type QuickJSContext,
  type QuickJSDeferredPromise,
  type QuickJSHandle,
  type QuickJSRuntime,
  type QuickJSSyncVariant,
  type QuickJSWASMModule,
} from 'quickjs-emscripten-core';
import releaseSyncImport from '@jitl/quickjs-wasmfile-release-sync';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { returnedStatus, ScriptError } from '../engine.js';
import type { CacheValue } from '../../content-cache/content-cache.js';
import { bodyFile, type ScriptHost, type ScriptResponse } from '../host.js';
import { markIdle, markRunning } from '../running.js';
import { MAX_FRAMES, type Frame, type WaitLocator } from '../slow-log.js';
import { JSON_FIELDS, PRELUDE_FILENAME, PRELUDE_SOURCE, PRIMITIVES, TEXT_FIELDS } from './prelude.js';

/** Compile-mode evaluation allowed before the interrupt handler stops it (escaped code). */
const COMPILE_BUDGET_MS = 50;

/** QuickJS stack limit while compiling: the parser needs ~20x its size of native stack. */
export const COMPILE_STACK_BYTES = 20 * 1024;
/** QuickJS stack limit while running: about 220 nested calls of a small function. */
export const RUN_STACK_BYTES = 40 * 1024;

const PAGE = 64 * 1024;
/** The build's INITIAL_MEMORY (16 MB), which holds its 5 MB shadow stack and static data. */
const INITIAL_PAGES = 256;
/** The build's own maximum (2 GB). */
const MAX_PAGES = 32768;
/** Strings longer than this (in UTF-8 bytes) are probed before being copied into the heap. */
const PROBE_OVER = 1000;
/** Jobs run per executePendingJobs call, so a drain can look at the run between batches. */
const JOB_BATCH = 256;
/** How long a stopped run's jobs may keep running before the Vm is given up (see drain). */
const KILL_BUDGET_MS = 50;

const ESCAPED = 'SyntaxError: unbalanced braces: the script closes its own function';

/** The parameter list of every compiled wrapper: the script API. */
const WRAPPER_HEAD = 'async function (print, write, flush, log, sleep, stat, sendfile, cache, pass, emit, request, response) {"use strict"; ';

// The package's types describe its CommonJS build (default under `.default`); Node's ESM
// import gives the variant itself.
const releaseSync = ((releaseSyncImport as unknown as { default?: QuickJSSyncVariant }).default ??
  releaseSyncImport) as QuickJSSyncVariant;

/** The part of WebAssembly.Memory used here (the project's lib settings have no wasm types). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(delta: number): number;
}

interface WasmGlobal {
  Memory: new (descriptor: { initial: number; maximum: number }) => WasmMemory;
  RuntimeError: new (message?: string) => Error;
  compile(bytes: Uint8Array): Promise<unknown>;
}
const wasm = (globalThis as unknown as { WebAssembly: WasmGlobal }).WebAssembly;

/** A loaded wasm module and the memory it allocates from, shared by the Vms made in it. */
export interface LoadedModule {
  readonly module: QuickJSWASMModule;
  readonly memory: WasmMemory;
  /** The Vm whose code is executing (QuickJS runs synchronously: one at a time), or null. */
  active: Vm | null;
}

/**
 * Instantiates the release-sync QuickJS module on a Memory capped at `maxHeapBytes` above the
 * build's initial 16 MB, so a script cannot grow the worker's wasm heap past it.
 */
export async function loadModule(maxHeapBytes: number): Promise<LoadedModule> {
  const maximum = Math.min(MAX_PAGES, INITIAL_PAGES + Math.ceil(maxHeapBytes / PAGE));
  const memory = new wasm.Memory({ initial: INITIAL_PAGES, maximum });
  const variant = newVariant(releaseSync, { wasmMemory: memory, wasmModule: compiledWasm() });
  const module = await newQuickJSWASMModuleFromVariant(variant);
  const loaded: LoadedModule = { module, memory, active: null };
  watchHeap(loaded);
  return loaded;
}

/**
 * Stops the running script when the heap cannot grow: the run that hit the cap is the one
 * stopped. One watcher per module (not per Vm: the module outlives many Vms, and a watcher
 * holding a Vm would keep it alive).
 */
function watchHeap(loaded: LoadedModule): void {
  const memory = loaded.memory;
  const grow = memory.grow.bind(memory);
  memory.grow = (delta: number): number => {
    try {
      return grow(delta);
    } catch (err) {
      loaded.active?.heapFull(`out of memory: the JS heap is full (${Math.round(memory.buffer.byteLength / 2 ** 20)} MB)`);
      throw err;
    }
  };
}

let compiled: Promise<unknown> | null = null;

/**
 * The QuickJS wasm code, compiled once per process: the spare instance and a replacement after
 * a fault are instantiated from it without compiling 500 KB of wasm again, and they share the
 * function code V8 compiles lazily on first call.
 */
function compiledWasm(): Promise<unknown> {
  compiled ??= readFile(fileURLToPath(import.meta.resolve('@jitl/quickjs-wasmfile-release-sync/wasm'))).then((bytes) =>
    wasm.compile(bytes),
  );
  return compiled;
}

/** A cache value or response as the prelude sends it (see its toHost). */
type FromScript = { s: string } | { h: number } | { r: { status: number; headers: Array<[string, string]>; body: string; file?: string } };

/**
 * A cache value or response for the prelude (its fromHost): a string, or a response's status
 * and age with a handle: its headers and bytes stay on the host side for the run, fetched by
 * the `held` primitive only if the script reads them.
 */
function toScript(run: Run, value: CacheValue | ScriptResponse | null): string {
  if (value === null) return '';
  if (Buffer.isBuffer(value)) return JSON.stringify({ s: value.toString('utf8') });
  const held = (run.held ??= []);
  held.push(value);
  const age = 'storedAt' in value ? Math.max(0, Math.floor((Date.now() - value.storedAt) / 1000)) : undefined;
  return JSON.stringify({ r: { status: value.status, age, file: bodyFile(value).file }, h: held.length - 1 });
}

function fromScript(run: Run, v: FromScript): Buffer | ScriptResponse {
  if ('s' in v) return Buffer.from(v.s);
  if ('h' in v) {
    const held = run.held?.[v.h];
    if (!held) throw new TypeError('not a response of this request');
    return held;
  }
  const { status, headers, body, file } = v.r;
  return file === undefined ? { status, headers, body: Buffer.from(body) } : { status, headers, body: Buffer.from(body), file };
}

/** True for errors that mean the wasm module's state can no longer be trusted. */
export function isModuleFault(err: unknown): boolean {
  if (err instanceof wasm.RuntimeError) return true;
  return err instanceof RangeError && err.message.includes('Maximum call stack size exceeded');
}

/** One script run for one request, as the Vm tracks it. */
export class Run implements WaitLocator {
  /** Milliseconds spent inside QuickJS for this run (its CPU time). */
  cpuMs = 0;
  sliceStart = 0;
  readonly startedAt = performance.now();
  /** The promise the wrapper returned, until the run finishes. */
  promise: QuickJSHandle | null = null;
  /** QuickJS promises handed out for host calls that have not settled yet. */
  readonly deferreds = new Set<QuickJSDeferredPromise>();
  /** Responses handed to the script (from pass() or the cache), by handle, for exact bytes. */
  held: ScriptResponse[] | null = null;
  finished = false;
  readonly done: Promise<number | undefined>;
  private settleDone!: (status: number | undefined) => void;
  private failDone!: (err: ScriptError) => void;

  constructor(
    readonly id: number,
    readonly host: ScriptHost,
    readonly path: string,
    /** The Vm the run has to itself (asked where its script waits, for the slow log). */
    private readonly vm: Vm,
  ) {
    this.done = new Promise((resolve, reject) => {
      this.settleDone = resolve;
      this.failDone = reject;
    });
  }

  /** Where the script made the host call it waits in (the slow log); [] when not known. */
  waitFrames(): Frame[] {
    return this.vm.waitFrames(this);
  }

  /** Ends the run (once) with a status or a ScriptError. */
  end(outcome: number | undefined | ScriptError): void {
    if (this.finished) return;
    this.finished = true;
    if (outcome instanceof ScriptError) this.failDone(outcome);
    else this.settleDone(outcome);
  }
}

type Primitive = (typeof PRIMITIVES)[number];
type PrimitiveImpl = (run: Run, args: QuickJSHandle[]) => QuickJSHandle | undefined;

/** What `describe` in the prelude reports about a thrown value. */
interface Described {
  name: string;
  message: string;
  stack: string;
  line: number | null;
}

/** Something that keeps handles in a Vm (a script's compiled wrapper): told to drop them. */
export interface VmTenant {
  /** Frees (or, for a dead Vm, forgets) what it holds in `vm`. */
  drop(vm: Vm): void;
}

/**
 * A QuickJS runtime and context with the prelude installed and the global object frozen. The
 * engine gives each run in flight a Vm of its own (QuickJS's job queue is per runtime, so two
 * runs in one runtime cannot be told apart once a stopped run leaves jobs behind).
 * `dead` is set when the wasm module faulted; a dead Vm is never touched again.
 */
export class Vm {
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
  private readonly runs = new Map<number, Run>();
  private current: Run | null = null;
  private compiling = false;
  // When compile-mode evaluation began: see shouldInterrupt.
  private compileStart = 0;
  private memoryLimit = Number.NaN;
  private readonly start: QuickJSHandle;
  private readonly takeOutFn: QuickJSHandle;
  /** Set when `write` reached the host in this slice: the prelude buffers the rest. */
  private wrote = false;
  private readonly describeFn: QuickJSHandle;
  private readonly probeFn: QuickJSHandle;
  private readonly nulFn: QuickJSHandle;
  private readonly sameFn: QuickJSHandle;
  private readonly errorFn: QuickJSHandle;
  private readonly whereFn: QuickJSHandle;
  private readonly waitedAtFn: QuickJSHandle;
  // Set while the slow log's where() runs inside the interrupt handler: its own polls pass.
  private capturing = false;

  constructor(
    readonly loaded: LoadedModule,
    /** Called when a run ends, so the engine can pool this Vm again or dispose of it. */
    private readonly onRunEnd: (vm: Vm, run: Run) => void,
  ) {
    this.runtime = loaded.module.newRuntime();
    this.runtime.setMaxStackSize(RUN_STACK_BYTES);
    this.runtime.setInterruptHandler(() => this.shouldInterrupt());
    this.context = this.runtime.newContext();
    const before = loaded.active;
    loaded.active = this;
    let api: QuickJSHandle;
    try {
      api = this.install();
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
    this.start = this.context.getProp(api, 'start');
    this.takeOutFn = this.context.getProp(api, 'takeOut');
    this.describeFn = this.context.getProp(api, 'describe');
    this.probeFn = this.context.getProp(api, 'probe');
    this.nulFn = this.context.getProp(api, 'nul');
    this.sameFn = this.context.getProp(api, 'same');
    this.errorFn = this.context.getProp(api, 'error');
    this.whereFn = this.context.getProp(api, 'where');
    this.waitedAtFn = this.context.getProp(api, 'waitedAt');
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

  // ---- setup -----------------------------------------------------------------------------

  private install(): QuickJSHandle {
    const ctx = this.context;
    const prim = ctx.newObject();
    try {
      const impls = this.primitives();
      for (const name of PRIMITIVES) {
        const fn = this.primitive(name, impls[name]);
        ctx.setProp(prim, name, fn);
        fn.dispose();
      }
      const prelude = ctx.unwrapResult(ctx.evalCode(PRELUDE_SOURCE, PRELUDE_FILENAME, { type: 'global', strict: true }));
      try {
        return ctx.unwrapResult(ctx.callFunction(prelude, ctx.undefined, prim));
      } finally {
        prelude.dispose();
      }
    } finally {
      prim.dispose();
    }
  }

  /**
   * Wraps a primitive: it acts on the run whose slice is executing (script code runs only
   * inside its own run's slices), refuses stopped runs, and spots native stack overflows.
   */
  private primitive(name: Primitive, impl: PrimitiveImpl): QuickJSHandle {
    return this.context.newFunction(name, (...args) => {
      const run = this.current;
      if (!run || run.finished) throw new Error('no request is running');
      if (run.host.fatal) throw run.host.fatal;
      try {
        return impl(run, args) ?? this.context.undefined;
      } catch (err) {
        if (isModuleFault(err)) {
          this.suspect = true;
          run.host.abort('limit', 'stack overflow');
          throw err;
        }
        // A host TypeError (a bad argument) reaches the script as a catchable error with its message.
        if (run.host.fatal || !(err instanceof Error)) throw err;
        // quickjs-emscripten throws a handle into the VM as it is (its errorToHandle).
        // eslint-disable-next-line @typescript-eslint/only-throw-error
        throw this.vmError(err);
      }
    });
  }

  private primitives(): Record<Primitive, PrimitiveImpl> {
    const ctx = this.context;
    const str = (h: QuickJSHandle | undefined): string => ctx.getString(h!);
    const num = (h: QuickJSHandle | undefined): number => ctx.getNumber(h!);
    const optNum = (h: QuickJSHandle | undefined): number | undefined => (h && ctx.typeof(h) === 'number' ? num(h) : undefined);
    const optStr = (h: QuickJSHandle | undefined): string | undefined => (h && ctx.typeof(h) === 'string' ? str(h) : undefined);
    // The prelude passes a string holding NULs as its parts (see `send` there).
    const parts = (args: QuickJSHandle[]): string => (args.length === 1 ? str(args[0]) : args.map(str).join('\0'));
    return {
      text: (run, [i]) => this.newString(textField(run.host, num(i))),
      json: (run, [i]) => this.newString(JSON.stringify(jsonField(run.host, num(i)))),
      write: (run, args) => {
        this.wrote = true;
        run.host.write(parts(args));
        return undefined;
      },
      flush: (run) => void run.host.flush(),
      // log(cut, ...parts): the prelude already cut the line to logRoom; `cut` counts UTF-16 units.
      log: (run, [cut, ...text]) => void run.host.log(parts(text), num(cut), 'characters'),
      logRoom: (run) => ctx.newNumber(run.host.logRoom),
      sleep: (run, [ms]) => this.hostCall(run, run.host.sleep(num(ms)), () => ctx.undefined),
      body: (run) => this.hostCall(run, run.host.body(), (buf) => this.newString(buf.toString('utf8'))),
      // The prelude parses the JSON; '' stands for a missing file.
      stat: (run, args) => this.hostCall(run, run.host.stat(parts(args)), (info) => this.newString(info ? JSON.stringify(info) : '')),
      sendfile: (run, [offset, length, type, name, ...path]) =>
        this.hostCall(
          run,
          run.host.sendfile(parts(path), { offset: optNum(offset), length: optNum(length), contentType: optStr(type), filename: optStr(name) }),
          () => ctx.undefined,
        ),
      cacheGet: (run, [key]) => this.answer(run, run.host.cacheGet(JSON.parse(str(key)) as string), (v) => this.newString(toScript(run, v))),
      cacheSet: (run, [json]) => {
        const { k, v, t } = JSON.parse(str(json)) as { k: string; v: FromScript; t: number };
        return this.answer(run, run.host.cacheSet(k, fromScript(run, v), t), (ok) => this.newString(JSON.stringify(ok)));
      },
      cacheDelete: (run, [key]) => this.answer(run, run.host.cacheDelete(JSON.parse(str(key)) as string), (ok) => this.newString(JSON.stringify(ok))),
      cacheIncr: (run, [json]) => {
        const { k, by, t } = JSON.parse(str(json)) as { k: string; by: number; t: number | null };
        return this.answer(run, run.host.cacheIncr(k, by, t ?? undefined), (n) => this.newString(JSON.stringify(n)));
      },
      pass: (run, [json]) => {
        const { n, p, b, e } = JSON.parse(str(json)) as { n: string; p?: Record<string, string | null>; b?: string; e: boolean };
        const options = { ...(p ? { params: p } : {}), ...(b !== undefined ? { body: Buffer.from(b) } : {}) };
        if (e) return this.hostCall(run, run.host.passThrough(n, options), () => ctx.undefined);
        return this.hostCall(run, run.host.pass(n, options), (r) => this.newString(toScript(run, r)));
      },
      held: (run, [handle, which]) => {
        const value = run.held?.[num(handle)];
        if (!value) throw new TypeError('not a response of this request');
        return this.newString(num(which) === 0 ? JSON.stringify(bodyFile(value).headers) : value.body.toString('utf8'));
      },
      emit: (run, [json]) => {
        // A body in a file ends the run with sendfile(): the script gets a promise to await.
        const sent = run.host.emit(fromScript(run, JSON.parse(str(json)) as FromScript) as ScriptResponse);
        return sent ? this.hostCall(run, sent, () => ctx.undefined) : undefined;
      },
      getStatus: (run) => ctx.newNumber(run.host.status),
      setStatus: (run, [n]) => {
        run.host.status = num(n);
        return undefined;
      },
      getHeader: (run, [name]) => {
        const value = run.host.getHeader(str(name));
        return value === undefined ? undefined : this.newString(value);
      },
      setHeader: (run, [name, value]) => {
        const type = value ? ctx.typeof(value) : 'undefined';
        const v = type === 'undefined' ? null : type === 'number' ? num(value) : str(value);
        try {
          run.host.setHeader(str(name), v);
          return undefined;
        } catch (err) {
          if (isModuleFault(err)) throw err;
          return ctx.newString(err instanceof Error ? err.message : String(err));
        }
      },
    };
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
      return this.context.unwrapResult(this.context.callFunction(this.nulFn, this.context.undefined, handles));
    } finally {
      for (const h of handles) h.dispose();
    }
  }

  /**
   * Throws unless `bytes` can be malloc'd now. QuickJS allocates (and frees) a buffer of that
   * size; the library's unchecked malloc that follows then reuses the freed block.
   */
  private ensureRoom(bytes: number): void {
    if (bytes <= PROBE_OVER) return;
    const ctx = this.context;
    const n = ctx.newNumber(bytes + 64);
    try {
      const result = ctx.callFunction(this.probeFn, ctx.undefined, n);
      let fits = false;
      if (result.error) result.error.dispose();
      else {
        fits = ctx.getNumber(result.value) === 1;
        result.value.dispose();
      }
      if (!fits) {
        const message = `out of memory: no room in the JS heap for ${bytes} bytes`;
        this.current?.host.abort('limit', message);
        throw new RangeError(message);
      }
    } finally {
      n.dispose();
    }
  }

  // ---- limits ----------------------------------------------------------------------------

  private shouldInterrupt(): boolean {
    const run = this.current;
    // Code that escaped a wrapper at compile time is stopped, but only once it has run for a
    // while: QuickJS's interrupt check fires every so many operations, and answering it at
    // once killed about 1 in 10,000 legitimate compiles (the wrapper expression evaluating).
    if (!run) return this.compiling && performance.now() - this.compileStart > COMPILE_BUDGET_MS;
    if (this.capturing) return false;
    const host = run.host;
    if (host.fatal) return true;
    const now = performance.now();
    if (run.cpuMs + (now - run.sliceStart) > host.limits.cpuMs) {
      host.abort('limit', `CPU time over ${host.limits.cpuMs} ms`, this.lineHere(run));
      return true;
    }
    // The wall-clock timer cannot fire while QuickJS holds the event loop: check it here too.
    if (now - run.startedAt > host.limits.wallMs) {
      host.abort('limit', `wall time over ${host.limits.wallMs} ms`, this.lineHere(run));
      return true;
    }
    // Past slowRequestMs: the slow log gets the stack of the script this handler interrupted.
    if (now >= host.slowAt) {
      host.slowWhileRunning(now, this.stackHere(run));
      return host.fatal !== null;
    }
    return false;
  }

  /**
   * The script's line where the interrupt handler stops it for a limit, or null. The error the
   * handler leaves in the script knows it less often: in `for (;;) n = f(n)` it said line 4,
   * an earlier call's line or none (the function's head), depending on which poll site the
   * interrupt counter reached zero at, which any code run before shifts (a prelude change did);
   * where()'s Error, made in the same poll, said line 4 in every phase (engine-js test).
   */
  private lineHere(run: Run): number | null {
    return this.stackHere(run).find((f) => f.file === run.path && f.line !== null)?.line ?? null;
  }

  /**
   * The stack of the script executing now, from inside the interrupt handler: the prelude's
   * where() makes an Error there, whose backtrace continues into the frames the handler
   * interrupted (QuickJS lets a host callback call back into the VM, as every primitive does).
   * Once per slow run, and once when a limit stops a run. A failure (no memory, the stack limit)
   * gives no frames, never an error; a native stack overflow stops the run as in a primitive.
   */
  private stackHere(run: Run): Frame[] {
    this.capturing = true;
    try {
      return this.framesFrom(this.whereFn, run.path);
    } catch (err) {
      if (isModuleFault(err)) {
        this.suspect = true;
        run.host.abort('limit', 'stack overflow');
      }
      return [];
    } finally {
      this.capturing = false;
    }
  }

  /**
   * Where `run`'s script made the host call it waits in (the prelude's waitedAt), for the slow
   * log, which asks between slices: the script's frames below the prelude's own.
   */
  waitFrames(run: Run): Frame[] {
    if (this.dead || this.disposed || run.finished || this.current !== null) return [];
    try {
      return this.framesFrom(this.waitedAtFn, run.path);
    } catch (err) {
      if (isModuleFault(err)) this.dead = true;
      return [];
    }
  }

  // Calls a prelude function that returns a stack text (where, waitedAt) and reads its frames;
  // [] when it failed inside the VM. A module fault is thrown, for the caller to judge.
  private framesFrom(fn: QuickJSHandle, path: string): Frame[] {
    const ctx = this.context;
    const result = ctx.callFunction(fn, ctx.undefined);
    if (result.error) {
      result.error.dispose();
      return [];
    }
    const stack = ctx.typeof(result.value) === 'string' ? ctx.getString(result.value) : '';
    result.value.dispose();
    return framesIn(stack, path);
  }

  private setMemoryLimit(bytes: number): void {
    if (bytes === this.memoryLimit) return;
    this.memoryLimit = bytes;
    this.runtime.setMemoryLimit(bytes);
  }

  // ---- compile ---------------------------------------------------------------------------

  /**
   * Compiles `source` as the body of an async wrapper function; returns the function handle.
   * The source starts on the wrapper's first line so QuickJS's line numbers are the file's.
   */
  compile(source: string, path: string, memoryBytes: number): QuickJSHandle {
    this.loaded.active = this;
    try {
      return this.compileWrapper(source, path, memoryBytes);
    } finally {
      this.loaded.active = null;
    }
  }

  private compileWrapper(source: string, path: string, memoryBytes: number): QuickJSHandle {
    const body = source.startsWith('#!') ? '//' + source.slice(2) : source;
    const text = `${WRAPPER_HEAD}${body}\n}`;
    this.setMemoryLimit(memoryBytes);
    try {
      this.ensureRoom(2 * Buffer.byteLength(text) + 16);
    } catch (err) {
      throw new ScriptError('compile', err instanceof Error ? err.message : String(err), path, null);
    }
    // Parses that run nothing: the first reports syntax errors; in the second the wrapper sits
    // inside `${...}`, where only an expression is allowed, so a source that closes the wrapper
    // early fails instead of declaring something at global scope when evaluated.
    this.evalQuietly(`(${text})`, path, true);
    try {
      this.evalQuietly(`\`\${(${text})}\``, path, true);
    } catch {
      throw new ScriptError('compile', ESCAPED, path, null);
    }
    const fn = this.evalQuietly(`(${text})`, path, false);
    if (!this.isWrapper(fn, text)) {
      fn.dispose();
      throw new ScriptError('compile', ESCAPED, path, null);
    }
    return fn;
  }

  /** Evaluates (or only compiles) global code in compile mode; throws ScriptError('compile'). */
  private evalQuietly(code: string, path: string, compileOnly: boolean): QuickJSHandle {
    this.runtime.setMaxStackSize(COMPILE_STACK_BYTES);
    this.compiling = true;
    this.compileStart = performance.now();
    let result;
    try {
      result = this.context.evalCode(code, path, { type: 'global', strict: true, compileOnly });
    } finally {
      this.compiling = false;
      this.runtime.setMaxStackSize(RUN_STACK_BYTES);
    }
    if (result.error) {
      const d = this.describe(result.error, path);
      result.error.dispose();
      throw new ScriptError('compile', `${d.name}: ${d.message}`, path, d.line);
    }
    if (!compileOnly) return result.value;
    result.value.dispose();
    return this.context.undefined;
  }

  /**
   * True when `fn` is the wrapper itself. A source like `}), x(), (async function () {` would
   * otherwise run `x()` once at compile time and hand back a different function.
   */
  private isWrapper(fn: QuickJSHandle, text: string): boolean {
    const ctx = this.context;
    let ok = false;
    const expected = this.newString(text);
    try {
      const result = ctx.callFunction(this.sameFn, ctx.undefined, fn, expected);
      if (result.error) result.error.dispose();
      else {
        ok = ctx.getNumber(result.value) === 1;
        result.value.dispose();
      }
    } finally {
      expected.dispose();
    }
    if (this.runtime.hasPendingJob()) {
      // Jobs queued by escaped code must not run inside a later request.
      this.compiling = true;
      this.compileStart = performance.now();
      this.drain();
      this.compiling = false;
      ok = false;
    }
    return ok;
  }

  // ---- run -------------------------------------------------------------------------------

  /** Starts `fn` (a compiled wrapper) for `host`; `run.done` settles when the script ends. */
  run(fn: QuickJSHandle, id: number, host: ScriptHost, path: string): Run {
    const run = new Run(id, host, path, this);
    this.runs.set(id, run);
    this.wrote = false;
    if (host.fatal) {
      this.finish(run, host.fatal);
      this.onRunEnd(this, run);
      return run;
    }
    this.slice(run, () => {
      const result = this.context.callFunction(this.start, this.context.undefined, fn);
      if (result.error) this.fail(run, result.error);
      else run.promise = result.value;
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
      if (!run.finished) this.drain();
      if (this.wrote) this.collectOutput(run);
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
   * Hands the output the prelude buffered during this slice to the host. Interrupts are off
   * meanwhile: the buffer must be emptied even for a stopped run, or a later run would find it.
   */
  private collectOutput(run: Run): void {
    this.wrote = false;
    this.current = null;
    const result = this.context.callFunction(this.takeOutFn, this.context.undefined);
    this.current = run;
    if (result.error) {
      result.error.dispose();
      this.suspect = true; // the buffer may still hold this run's output
      return;
    }
    const text = this.context.getString(result.value);
    result.value.dispose();
    if (text === '' || run.finished) return;
    try {
      run.host.write(text);
    } catch {
      // Over the output limit: host.write recorded it in host.fatal, which check() reports.
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
  private drain(): void {
    let deadline = 0;
    while (this.runtime.hasPendingJob()) {
      const result = this.runtime.executePendingJobs(JOB_BATCH);
      if (result.error) result.error.dispose();
      if (!this.compiling && !this.current?.host.fatal) continue;
      const now = performance.now();
      if (deadline === 0) deadline = now + KILL_BUDGET_MS;
      else if (now > deadline) {
        this.suspect = true;
        return;
      }
    }
  }

  /** After a slice: ends the run if it stopped, settled, or can never settle. */
  private check(run: Run): void {
    const promise = run.promise;
    if (run.host.fatal) {
      // A limit (the interrupt handler) stops the script without knowing where; the error the
      // script threw there carries its line.
      if (run.host.fatal.line === null && promise) {
        const state = this.context.getPromiseState(promise);
        if (state.type === 'rejected') return this.fail(run, state.error);
        if (state.type === 'fulfilled' && state.value !== promise) state.value.dispose();
      }
      return this.finish(run, run.host.fatal);
    }
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
      if (run.host.fatal.line === null) {
        const line = this.describe(error, run.path).line;
        if (line !== null) run.host.locate(line);
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
      err = new ScriptError('runtime', message, run.path, d.line);
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

  /** Hands the script a QuickJS promise settled by `work`; each settlement is a new slice. */
  /** A host call's result: at once when the host has it (the embedded cache), else a promise. */
  private answer<T>(run: Run, result: T | Promise<T>, toHandle: (value: T) => QuickJSHandle): QuickJSHandle {
    return result instanceof Promise ? this.hostCall(run, result, toHandle) : toHandle(result);
  }

  private hostCall<T>(run: Run, work: Promise<T>, toHandle: (value: T) => QuickJSHandle): QuickJSHandle {
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
  private vmError(err: unknown): QuickJSHandle {
    const ctx = this.context;
    const { name, message } = errorText(err);
    const args = [ctx.newString(name), ctx.newString(message)];
    try {
      const made = ctx.callFunction(this.errorFn, ctx.undefined, ...args);
      if (made.error) {
        made.error.dispose();
        return ctx.newError({ name, message });
      }
      return made.value;
    } finally {
      for (const h of args) h.dispose();
    }
  }

  /** Asks the prelude to describe a thrown value; never throws. */
  private describe(error: QuickJSHandle, path: string): Described {
    const ctx = this.context;
    const result = ctx.callFunction(this.describeFn, ctx.undefined, error);
    let fields: unknown = null;
    if (result.error) result.error.dispose();
    else {
      if (ctx.typeof(result.value) === 'string') fields = JSON.parse(ctx.getString(result.value));
      result.value.dispose();
    }
    const [name, message, stack, lineNumber] = Array.isArray(fields)
      ? fields.map((f) => (typeof f === 'string' ? f : ''))
      : ['uncaught exception', '(could not describe the error)', '', ''];
    const line = lineIn(stack ?? '', path) ?? (lineNumber && stack?.includes(path) ? Number(lineNumber) : null);
    return { name: name ?? 'Error', message: message ?? '', stack: stack ?? '', line };
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
    if (this.runtime.hasPendingJob()) return false;
    const left = this.context.callFunction(this.takeOutFn, this.context.undefined);
    if (left.error) {
      left.error.dispose();
      return false;
    }
    const empty = this.context.typeof(left.value) === 'string' && this.context.getString(left.value) === '';
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
    if (this.dead) return false;
    try {
      for (const h of [this.start, this.takeOutFn, this.describeFn, this.probeFn, this.nulFn, this.sameFn, this.errorFn, this.whereFn, this.waitedAtFn]) {
        h.dispose();
      }
      this.context.dispose();
      this.runtime.dispose();
      return true;
    } catch {
      return false;
    }
  }
}

/**
 * The first line number of a stack frame in `path` ("at f (path:LINE:COL)" or "at path:LINE").
 * A frame inside the wrapper's own head (line 1, a column before the script's first character)
 * is where QuickJS puts code it has no line for (a loop without calls, stopped by the interrupt
 * handler): not the script's line, so it does not count.
 */
export function lineIn(stack: string, path: string): number | null {
  for (const frame of stack.split('\n')) {
    const at = frame.indexOf(path + ':');
    if (at < 0) continue;
    const m = /^(\d+)(?::(\d+))?/.exec(frame.slice(at + path.length + 1));
    if (!m) continue;
    const line = Number(m[1]);
    if (line === 1 && m[2] !== undefined && Number(m[2]) <= WRAPPER_HEAD.length) continue;
    return line;
  }
  return null;
}

/**
 * The script's frames in a QuickJS stack (`    at NAME (FILE:LINE:COL)`, `    at NAME (native)`),
 * innermost first, at most {@link MAX_FRAMES} + 1 (so the slow log knows there were more). The
 * prelude's frames at either end are left out: the API function the script called or the
 * where() that took the stack, and the start() that calls the script; one between two script
 * frames stays, without its line (which means nothing to the script's author). A frame in the
 * wrapper's head (see {@link lineIn}) has no line; built-ins are `[native]`.
 */
export function framesIn(stack: string, path: string): Frame[] {
  const frames: Frame[] = [];
  let scriptFrames = 0;
  for (const text of stack.split('\n')) {
    if (scriptFrames > MAX_FRAMES) break;
    const m = /^\s*at (.*) \((.*)\)$/.exec(text);
    if (!m) continue;
    const name = m[1] === '<anonymous>' ? null : m[1]!;
    const loc = /^(.*?):(\d+)(?::(\d+))?$/.exec(m[2]!);
    const file = loc ? loc[1]! : m[2] === 'native' ? '[native]' : m[2]!;
    if (file === PRELUDE_FILENAME && frames.length === 0) continue;
    let line: number | null = loc && file === path ? Number(loc[2]) : null;
    if (line === 1 && loc![3] !== undefined && Number(loc![3]) <= WRAPPER_HEAD.length) line = null;
    frames.push({ name, file, line });
    if (file !== PRELUDE_FILENAME) scriptFrames = frames.length;
  }
  return frames.slice(0, scriptFrames);
}

function textField(host: ScriptHost, i: number): string {
  switch (TEXT_FIELDS[i]) {
    case 'method':
      return host.method;
    case 'uri':
      return host.uri;
    case 'path':
      return host.path;
    case 'query_string':
      return host.queryString;
    case 'remote_addr':
      return host.remoteAddr;
    case 'script_filename':
      return host.scriptFilename;
    case 'document_root':
      return host.documentRoot;
    default:
      throw new RangeError(`no request field ${i}`);
  }
}

function jsonField(host: ScriptHost, i: number): Readonly<Record<string, string>> {
  switch (JSON_FIELDS[i]) {
    case 'query':
      return host.query;
    case 'headers':
      return host.headers;
    case 'params':
      return host.request.params;
    default:
      throw new RangeError(`no request record ${i}`);
  }
}

function errorText(err: unknown): { name: string; message: string } {
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: 'Error', message: String(err) };
}
