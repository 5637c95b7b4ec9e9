/**
 * Compiling a script into a Vm: its source becomes the body of a wrapper function whose
 * parameters are the script API, under the small compile-time stack limit, checked so that a
 * source that closes the wrapper early cannot run or declare anything at compile time. Apart
 * from the Vm's run machinery (vm.ts) because it runs once per script and Vm, not per run.
 *
 * Measured facts this file is built on (quickjs-emscripten 0.32, QuickJS 2025-09-13, Node 20):
 * the wasm code runs on V8's native stack (~984 KB) while QuickJS counts its own stack on the
 * emscripten shadow stack (5 MB). Native use per shadow byte differs by code path: the parser
 * overflowed V8 at ~42 KB of QuickJS stack, JSON.stringify at ~80 KB, plain recursion at ~450 KB.
 * A V8 overflow inside wasm unwinds C frames half-way and the module is unusable, so the QuickJS
 * limit must fire first: a small limit while compiling, a larger one while running (scripts
 * cannot reach the parser at run time: the prelude disables eval and Function).
 */
import type { QuickJSContext, QuickJSHandle, QuickJSRuntime } from 'quickjs-emscripten-core';
import { ScriptError, type SourceKind } from '../engine.js';
import { MODULE_WRAPPER_HEAD, sharedModuleHead, SYNC_WRAPPER_HEAD, WRAPPER_HEAD } from './prelude.js';
import type { SharePlan } from './share.js';
import type { Described } from './prelude-calls.js';

/** QuickJS stack limit while compiling: the parser needs ~20x its size of native stack. */
export const COMPILE_STACK_BYTES = 20 * 1024;
/** QuickJS stack limit while running: about 220 nested calls of a small function. */
export const RUN_STACK_BYTES = 40 * 1024;

const ESCAPED = 'SyntaxError: unbalanced braces: the script closes its own function';

/** The Vm as compiling uses it (vm.ts implements it). */
export interface CompileVm {
  readonly context: QuickJSContext;
  readonly runtime: QuickJSRuntime;
  /** True while compile-mode code runs: the interrupt handler stops it after a budget. */
  compiling: boolean;
  /** When compile-mode evaluation began. */
  compileStart: number;
  setMemoryLimit(bytes: number): void;
  /** Throws unless `bytes` can be malloc'd now. */
  ensureRoom(bytes: number): void;
  newString(value: string): QuickJSHandle;
  describe(error: QuickJSHandle, path: string): Described;
  /** True when the prelude's `same` says `fn`'s source text is `expected`. */
  same(fn: QuickJSHandle, expected: QuickJSHandle): boolean;
  /** Runs pending jobs until none are left (or a stopped run's budget is spent). */
  drain(): void;
}

/**
 * Compiles `source` as the body of a wrapper function in `vm`; returns the function handle. A
 * module `share` says may be shared (js/share.ts) compiles its instrumented body in the shared
 * wrapper instead.
 * The wrapper is async only when the source says `await` somewhere (a word match, so a comment
 * or a string saying it costs only speed): a plain one ends the run within start().
 * The source starts on the wrapper's first line so QuickJS's line numbers are the file's.
 */
export function compileWrapper(vm: CompileVm, source: string, path: string, memoryBytes: number, kind: SourceKind = 'script', share: SharePlan | null = null): QuickJSHandle {
  const body = share !== null ? share.body : source.startsWith('#!') ? '//' + source.slice(2) : source;
  const head =
    share !== null ? sharedModuleHead(share.rebinds, share.names) : kind === 'module' ? MODULE_WRAPPER_HEAD : /\bawait\b/.test(body) ? WRAPPER_HEAD : SYNC_WRAPPER_HEAD;
  const text = `${head}${body}\n}`;
  vm.setMemoryLimit(memoryBytes);
  try {
    vm.ensureRoom(2 * Buffer.byteLength(text) + 16);
  } catch (err) {
    throw new ScriptError('compile', err instanceof Error ? err.message : String(err), path, null);
  }
  // Parses that run nothing: the first reports syntax errors; in the second the wrapper sits
  // inside `${...}`, where only an expression is allowed, so a source that closes the wrapper
  // early fails instead of declaring something at global scope when evaluated.
  evalQuietly(vm, `(${text})`, path, true);
  try {
    evalQuietly(vm, `\`\${(${text})}\``, path, true);
  } catch {
    throw new ScriptError('compile', ESCAPED, path, null);
  }
  const fn = evalQuietly(vm, `(${text})`, path, false);
  if (!isWrapper(vm, fn, text)) {
    fn.dispose();
    throw new ScriptError('compile', ESCAPED, path, null);
  }
  return fn;
}

/** Evaluates (or only compiles) global code in compile mode; throws ScriptError('compile'). */
function evalQuietly(vm: CompileVm, code: string, path: string, compileOnly: boolean): QuickJSHandle {
  vm.runtime.setMaxStackSize(COMPILE_STACK_BYTES);
  vm.compiling = true;
  vm.compileStart = performance.now();
  let result;
  try {
    result = vm.context.evalCode(code, path, { type: 'global', strict: true, compileOnly });
  } finally {
    vm.compiling = false;
    vm.runtime.setMaxStackSize(RUN_STACK_BYTES);
  }
  if (result.error) {
    const d = vm.describe(result.error, path);
    result.error.dispose();
    throw new ScriptError('compile', `${d.name}: ${d.message}`, path, d.line);
  }
  if (!compileOnly) return result.value;
  result.value.dispose();
  return vm.context.undefined;
}

/**
 * True when `fn` is the wrapper itself. A source like `}), x(), (async function () {` would
 * otherwise run `x()` once at compile time and hand back a different function.
 */
function isWrapper(vm: CompileVm, fn: QuickJSHandle, text: string): boolean {
  const expected = vm.newString(text);
  let ok: boolean;
  try {
    ok = vm.same(fn, expected);
  } finally {
    expected.dispose();
  }
  if (vm.runtime.hasPendingJob()) {
    // Jobs queued by escaped code must not run inside a later request.
    vm.compiling = true;
    vm.compileStart = performance.now();
    vm.drain();
    vm.compiling = false;
    ok = false;
  }
  return ok;
}
