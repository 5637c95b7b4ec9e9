/**
 * One Lua 5.4 run and what its host functions share: the run itself ({@link Run54}), the run
 * executing now ({@link active}), and {@link Bindings}, the context every binding file gets.
 * Host functions are registered once per wasm module and shared by every state in it; they find
 * their request through {@link active}, which the driver sets around each slice (Lua runs
 * synchronously inside lua_resume, so one run at a time executes).
 */
import type { CompiledScript } from '../engine.js';
import type { ScriptHost } from '../host.js';
import type { Frame, WaitLocator } from '../slow-log.js';
import type { LuaApi } from './capi.js';
import type { Ptr } from './wasm.js';
import type { Settled } from '../settle.js';

/** Pushes an async host call's result onto L; returns how many values it pushed. */
export type PushResult = (L: Ptr, value: unknown) => number;

/** The state a run holds for its whole life (see engine.ts: a state per run in flight). */
export interface RunState {
  /** The main thread of the state. */
  readonly L: Ptr;
  /** Bytes the state's allocator has handed out and not taken back. */
  used: number;
  /** The most {@link used} may reach during the current run. */
  limit: number;
}

let serials = 0;

/** One script run for one request. */
export class Run54 implements WaitLocator {
  /** Names the run to the shared modules' bookkeeping (shared-modules-lua.ts): unique in the process. */
  readonly serial = ++serials;
  /** The async host call the script waits for (set just before the yield). */
  pending: Promise<unknown> | null = null;
  /** How to push {@link pending}'s value once it settles. */
  push: PushResult | null = null;
  /** The settled result, consumed by the continuation of the call that yielded. */
  settled: Settled | null = null;
  /** CPU time (ms) spent in the slices that ended; the hook adds the running one. */
  cpu = 0;
  /** performance.now() when the running slice started. */
  sliceStart = 0;
  /** The run's own thread. */
  main: Ptr = 0;
  /** Registry slots of the thread and of the request's globals table (its `_ENV`). */
  threadRef = 0;
  envRef = 0;
  /** Registry slot of the run's table of required modules (api/modules.ts); 0 before its first require. */
  loadedRef = 0;
  /**
   * How deep in shared module loads the run is (shared-modules-lua.ts); while above 0, host
   * functions that act on the request refuse ({@link Bindings.run}) and count the refusal.
   */
  sharing = 0;
  /** Host calls refused while {@link sharing}: a load that saw one is not shared. */
  shareRefusals = 0;
  /** The request body, cached: the request stream can be read once only. */
  body: Buffer | null = null;
  /** lighty.r.resp_body parts, written after the script ends. */
  lightyBody: Uint8Array[] | null = null;
  /** Registry slot of the `lighty` table when the script touched it; 0 before. */
  lightyRef = 0;
  /**
   * The thread that made the host call the run waits for (a coroutine of the script's, or
   * {@link main}): suspended in that call, its stack still says where, for the slow log.
   */
  waitThread: Ptr = 0;
  /** Reads a thread's frames (stack.ts, bound to the run's module); set by the engine. */
  frames: ((L: Ptr, from: number) => Frame[]) | null = null;

  constructor(
    readonly host: ScriptHost,
    /** The script's path, as in its chunk name. */
    readonly path: string,
    readonly state: RunState,
  ) {}

  /** Where the waiting script called the host: its frames below the host function itself. */
  waitFrames(): Frame[] {
    return this.waitThread === 0 || this.frames === null ? [] : this.frames(this.waitThread, 1);
  }
}

/** The run whose Lua code executes now (one for the process: slices never overlap). */
export const active: { run: Run54 | null } = { run: null };

/** What a binding file needs: the module's C API, the current run, and the async-call helper. */
export interface Bindings {
  readonly api: LuaApi;
  /**
   * The run executing now, for a host function that acts on its request; a Lua error when
   * there is none, or while a module loads to be shared (no request may reach a shared module).
   */
  run(L: Ptr): Run54;
  /** The run executing now, also inside a shared module's load (require's own host functions, the CPU check). */
  current(L: Ptr): Run54;
  /**
   * Suspends the script until `promise` settles (a yield up to the driver, through the
   * script's coroutines); `push` puts the result on the stack. Raises, before the promise
   * matters, when the script cannot wait here. The host function returns what this returns
   * (capi's WAIT): its guard makes the yield.
   */
  wait(L: Ptr, run: Run54, what: string, promise: () => Promise<unknown>, push: PushResult | null): number;
  /**
   * Stops the script at its next VM instruction, for a host function that has set the run's
   * end (host.fatal) itself; returns 0 (no results) for the host function to return. Not a
   * Lua error raised here: that is a longjmp, which emscripten makes a JS exception thrown
   * through the wasm frames (6-15 us each, measured), while a tail call such as
   * `return pass(...)` ends its function before any next instruction, with no error at all.
   */
  endRun(L: Ptr, run: Run54): number;
  /** Pushes the run's request globals table. */
  pushEnv(L: Ptr, run: Run54): void;
  /** Pushes `script`'s chunk function as loaded in the run's state (loading it there first). */
  pushChunk(L: Ptr, run: Run54, script: CompiledScript): void;
  /**
   * The names of the upvalues `script`'s functions assign (bytecode.ts), or null for "any":
   * read from its bytecode once, which is dumped first when the script was compiled from source
   * and not dumped yet.
   */
  assignedOf(L: Ptr, run: Run54, script: CompiledScript): readonly string[] | null;
}
