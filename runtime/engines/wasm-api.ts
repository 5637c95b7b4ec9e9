/**
 * The part of the WebAssembly JS API the engines use, typed here because the project's lib
 * settings (ES2023, no DOM) carry no wasm types.
 */

/** A wasm linear memory. */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(delta: number): number;
}

/** A wasm function table (funcref). */
export interface WasmTable {
  readonly length: number;
  get(index: number): unknown;
  set(index: number, value: unknown): void;
  grow(delta: number): number;
}

/** A compiled wasm module (opaque here). */
export interface WasmModule {
  readonly __wasmModule?: never;
}

interface WasmGlobal {
  Module: (new (bytes: Uint8Array) => WasmModule) & {
    imports(module: WasmModule): Array<{ module: string; name: string; kind: string }>;
    exports(module: WasmModule): Array<{ name: string; kind: string }>;
  };
  Instance: new (module: WasmModule, imports: object) => { readonly exports: Record<string, unknown> };
  Memory: new (descriptor: { initial: number; maximum: number }) => WasmMemory;
  RuntimeError: new (message?: string) => Error;
  compile(bytes: Uint8Array): Promise<WasmModule>;
}

/** `globalThis.WebAssembly`, typed. */
export const wasm = (globalThis as unknown as { WebAssembly: WasmGlobal }).WebAssembly;
