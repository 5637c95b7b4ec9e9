/**
 * The QuickJS wasm module: compiled once per process, instantiated on a capped Memory, and
 * watched so that a full heap stops the run that filled it. Apart from the Vm (vm.ts) because a
 * module outlives many Vms and is replaced whole when it faults (js.ts); nothing here touches a
 * runtime, a context or a handle.
 *
 * Measured facts this file is built on (quickjs-emscripten 0.32, QuickJS 2025-09-13, Node 20):
 * - `setMemoryLimit` does not count bytes in this build: without malloc_usable_size QuickJS adds
 *   8 bytes per block, so it only bounds single allocations and the number of live blocks. The
 *   real bound is the wasm Memory's `maximum`, set when the module is instantiated.
 * - A V8 overflow inside wasm unwinds C frames half-way and the module is unusable
 *   ({@link isModuleFault}; compile.ts says how the QuickJS stack limits keep it from happening).
 *
 * Not quickjs-ng (@jitl/quickjs-ng-wasmfile-release-sync 0.32, quickjs-ng 0.12.1), measured as
 * a drop-in here (issue 20): the render workload (200 rows, String.replace with a regex and a
 * callback, toFixed) took 2,480 us against 1,411 (medians, same process, alternating); replace
 * with a regex alone ran 4-5x slower on the raw module. hello was even (30.4 vs 32.7 us). It
 * also failed 7 engine tests: a stack overflow is RangeError "Maximum call stack size exceeded"
 * (vm.ts expects InternalError "stack overflow"), "nope is not defined" lost its quotes, and a
 * CPU-limit stop named different lines. setMemoryLimit counts blocks there too (8 bytes each).
 */
import {
  newQuickJSWASMModuleFromVariant,
  newVariant,
  type QuickJSSyncVariant,
  type QuickJSWASMModule,
} from 'quickjs-emscripten-core';
import releaseSyncImport from '@jitl/quickjs-wasmfile-release-sync';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const PAGE = 64 * 1024;
/** The build's INITIAL_MEMORY (16 MB), which holds its 5 MB shadow stack and static data. */
const INITIAL_PAGES = 256;
/** The build's own maximum (2 GB). */
const MAX_PAGES = 32768;

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

/** What executes in a module (a Vm): told when the heap could not grow under it. */
export interface HeapUser {
  /** Called by the module's heap watcher when a grow failed while this one was executing. */
  heapFull(message: string): void;
}

/** A loaded wasm module and the memory it allocates from, shared by the Vms made in it. */
export interface LoadedModule {
  readonly module: QuickJSWASMModule;
  readonly memory: WasmMemory;
  /** The Vm whose code is executing (QuickJS runs synchronously: one at a time), or null. */
  active: HeapUser | null;
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

/** True for errors that mean the wasm module's state can no longer be trusted. */
export function isModuleFault(err: unknown): boolean {
  if (err instanceof wasm.RuntimeError) return true;
  return err instanceof RangeError && err.message.includes('Maximum call stack size exceeded');
}
