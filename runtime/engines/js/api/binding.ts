/**
 * What a binding (one file per capability in this folder) needs of the Vm, and the argument
 * readers they share. A binding is a host primitive the prelude calls: it reads its arguments
 * from QuickJS handles, calls the run's ScriptHost (../../host/ holds the capabilities) and
 * answers with a handle, at once or as a promise settled in a later slice. Apart from the Vm so
 * that the bindings need only this shape of it, not the Vm's module.
 */
import type { QuickJSContext, QuickJSHandle } from 'quickjs-emscripten-core';
import type { Run } from '../run.js';
import type { CompiledScript } from '../../engine.js';

/** A host primitive: acts on the run whose slice is executing; undefined answers `undefined`. */
export type PrimitiveImpl = (run: Run, args: QuickJSHandle[]) => QuickJSHandle | undefined;

/** Bindings for the primitives named `P`, as one capability file makes them. */
export type Bindings<P extends string> = Record<P, PrimitiveImpl>;

/** The Vm as the bindings use it (vm.ts implements it). */
export interface Bridge {
  readonly context: QuickJSContext;
  /** The run whose slice is executing, or null (script code runs only inside its own run's slices). */
  readonly current: Run | null;
  /** Set when the Vm cannot be trusted with the next run. */
  suspect: boolean;
  /** Copies a string into QuickJS (probing the heap first when it is large, NULs allowed). */
  newString(value: string): QuickJSHandle;
  /** A QuickJS promise settled by `work`; each settlement is a new slice of `run`. */
  hostCall<T>(run: Run, work: Promise<T>, toHandle: (value: T) => QuickJSHandle): QuickJSHandle;
  /** A host call's result: at once when the host has it (the embedded cache), else a promise. */
  answer<T>(run: Run, result: T | Promise<T>, toHandle: (value: T) => QuickJSHandle): QuickJSHandle;
  /** A QuickJS Error for a host error, with its name and message. */
  vmError(err: unknown): QuickJSHandle;
  /** `script`'s wrapper as compiled in this Vm (a module the run may require); undefined: not compiled here. */
  compiledIn(script: CompiledScript): QuickJSHandle | undefined;
}

/** A string argument. */
export function str(ctx: QuickJSContext, h: QuickJSHandle | undefined): string {
  return ctx.getString(h!);
}

/** A number argument. */
export function num(ctx: QuickJSContext, h: QuickJSHandle | undefined): number {
  return ctx.getNumber(h!);
}

/** A number argument that may be absent (undefined or not a number). */
export function optNum(ctx: QuickJSContext, h: QuickJSHandle | undefined): number | undefined {
  return h && ctx.typeof(h) === 'number' ? ctx.getNumber(h) : undefined;
}

/** A string argument that may be absent (undefined or not a string). */
export function optStr(ctx: QuickJSContext, h: QuickJSHandle | undefined): string | undefined {
  return h && ctx.typeof(h) === 'string' ? ctx.getString(h) : undefined;
}

/** A string the prelude passed as its NUL-separated parts (see `send` in the prelude). */
export function parts(ctx: QuickJSContext, args: QuickJSHandle[]): string {
  return args.length === 1 ? ctx.getString(args[0]!) : args.map((h) => ctx.getString(h)).join('\0');
}
