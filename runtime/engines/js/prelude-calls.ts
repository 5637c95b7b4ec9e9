/**
 * The host's calls into the prelude's helpers that read an answer out of QuickJS: describe()
 * (what a thrown value is, and its line), error() (a host error as a script Error), where() and
 * waitedAt() (stack texts for the slow log), probe() (room in the heap) and same() (a wrapper's
 * source check). Apart from the Vm because none of them needs a run: each takes the context and
 * the prelude function it calls, never throws out of QuickJS, and frees what it made.
 */
import type { QuickJSContext, QuickJSHandle } from 'quickjs-emscripten-core';
import type { Frame } from '../slow-log.js';
import { framesIn, lineIn } from './stack.js';

/** What `describe` in the prelude reports about a thrown value. */
export interface Described {
  name: string;
  message: string;
  stack: string;
  line: number | null;
}

/** Asks the prelude's `describe` about a thrown value; never throws. */
export function describe(ctx: QuickJSContext, describeFn: QuickJSHandle, error: QuickJSHandle, path: string): Described {
  const result = ctx.callFunction(describeFn, ctx.undefined, error);
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

/** A QuickJS Error for a host error, with its name and message (see `error` in the prelude). */
export function vmError(ctx: QuickJSContext, errorFn: QuickJSHandle, err: unknown): QuickJSHandle {
  const { name, message } = errorText(err);
  const args = [ctx.newString(name), ctx.newString(message)];
  try {
    const made = ctx.callFunction(errorFn, ctx.undefined, ...args);
    if (made.error) {
      made.error.dispose();
      return ctx.newError({ name, message });
    }
    return made.value;
  } finally {
    for (const h of args) h.dispose();
  }
}

function errorText(err: unknown): { name: string; message: string } {
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: 'Error', message: String(err) };
}

/**
 * Calls a prelude function that returns a stack text (where, waitedAt) and reads the script's
 * frames in it; [] when it failed inside the VM. A module fault is thrown, for the caller to judge.
 */
export function framesFrom(ctx: QuickJSContext, fn: QuickJSHandle, path: string): Frame[] {
  const result = ctx.callFunction(fn, ctx.undefined);
  if (result.error) {
    result.error.dispose();
    return [];
  }
  const stack = ctx.typeof(result.value) === 'string' ? ctx.getString(result.value) : '';
  result.value.dispose();
  return framesIn(stack, path);
}

/** True when the prelude's `fn` (probe, same) answered 1 to `args`; false when it failed. */
export function saysYes(ctx: QuickJSContext, fn: QuickJSHandle, ...args: QuickJSHandle[]): boolean {
  const result = ctx.callFunction(fn, ctx.undefined, ...args);
  if (result.error) {
    result.error.dispose();
    return false;
  }
  const yes = ctx.getNumber(result.value) === 1;
  result.value.dispose();
  return yes;
}

/** The prelude's host-facing functions (see PRELUDE_SOURCE), held by the Vm for its life. */
export interface PreludeFns {
  readonly start: QuickJSHandle;
  readonly promise: QuickJSHandle;
  readonly takeOut: QuickJSHandle;
  readonly describe: QuickJSHandle;
  readonly probe: QuickJSHandle;
  readonly nul: QuickJSHandle;
  readonly same: QuickJSHandle;
  readonly error: QuickJSHandle;
  readonly where: QuickJSHandle;
  readonly waitedAt: QuickJSHandle;
}

/** Takes the functions out of the object the prelude returned (which the caller disposes). */
export function preludeFns(ctx: QuickJSContext, api: QuickJSHandle): PreludeFns {
  return {
    start: ctx.getProp(api, 'start'),
    promise: ctx.getProp(api, 'promise'),
    takeOut: ctx.getProp(api, 'takeOut'),
    describe: ctx.getProp(api, 'describe'),
    probe: ctx.getProp(api, 'probe'),
    nul: ctx.getProp(api, 'nul'),
    same: ctx.getProp(api, 'same'),
    error: ctx.getProp(api, 'error'),
    where: ctx.getProp(api, 'where'),
    waitedAt: ctx.getProp(api, 'waitedAt'),
  };
}

/** Frees the handles of {@link preludeFns}. */
export function disposeFns(fns: PreludeFns): void {
  for (const h of [fns.start, fns.promise, fns.takeOut, fns.describe, fns.probe, fns.nul, fns.same, fns.error, fns.where, fns.waitedAt]) h.dispose();
}
