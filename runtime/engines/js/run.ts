/**
 * One script run as the Vm tracks it: its CPU time, the promise its wrapper returned, the host
 * promises it waits on, the responses lent to it, and how it ends. Apart from the Vm (vm.ts)
 * because the bindings (api/) and the engine (js.ts) hold runs too, and must not need the Vm to
 * name one.
 */
import type { QuickJSDeferredPromise, QuickJSHandle } from 'quickjs-emscripten-core';
import { ScriptError } from '../engine.js';
import type { ScriptHost, ScriptResponse } from '../host.js';
import type { Frame, WaitLocator } from '../slow-log.js';

/** Where a run's script waits (its Vm): asked between slices, for the slow log. */
export interface WaitSource {
  /** The script's frames at the host call `run` waits in; [] when not known. */
  waitFrames(run: Run): Frame[];
}

/** One script run for one request, as the Vm tracks it. */
export class Run implements WaitLocator {
  /** Milliseconds spent inside QuickJS for this run (its CPU time). */
  cpuMs = 0;
  sliceStart = 0;
  readonly startedAt = performance.now();
  /** The promise the wrapper returned, until the run finishes. */
  promise: QuickJSHandle | null = null;
  /** The status a wrapper that returned no promise returned (0: none), once start() ended the run. */
  returned: number | null = null;
  /** Set when start() ended the run and no job ran after it: nothing can be left in the Vm. */
  quiet = false;
  /** QuickJS promises handed out for host calls that have not settled yet. */
  readonly deferreds = new Set<QuickJSDeferredPromise>();
  /** Responses handed to the script (from pass() or the cache), by handle, for exact bytes. */
  held: ScriptResponse[] | null = null;
  finished = false;
  /** How the run ended (a status, or the ScriptError it failed with), once finished. */
  outcome: number | undefined | ScriptError = undefined;
  private pending: Promise<number | undefined> | null = null;
  private waiter: { resolve: (status: number | undefined) => void; reject: (err: ScriptError) => void } | null = null;

  constructor(
    readonly id: number,
    readonly host: ScriptHost,
    readonly path: string,
    /** The Vm the run has to itself (asked where its script waits, for the slow log). */
    private readonly vm: WaitSource,
    /** Lines of the script that say `await` (see lineHere in limits.ts); null: none. */
    readonly awaitLines: ReadonlySet<number> | null = null,
  ) {}

  /**
   * A line where the interrupt handler stopped the run, or the position its stop was thrown
   * from: on a line that says await it may be a resumed async frame's stale one (limits.ts).
   */
  trustsStopLine(line: number): boolean {
    return this.awaitLines === null || !this.awaitLines.has(line);
  }

  /** Set when the interrupt handler stopped the run (a CPU or wall limit). */
  interrupted = false;

  /**
   * Settles when the run ends. Made only for a run still going after its first slice: most
   * runs end inside it, and the engine answers them without a promise.
   */
  get done(): Promise<number | undefined> {
    if (this.finished) return this.outcome instanceof ScriptError ? Promise.reject(this.outcome) : Promise.resolve(this.outcome);
    return (this.pending ??= new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    }));
  }

  /** Where the script made the host call it waits in (the slow log); [] when not known. */
  waitFrames(): Frame[] {
    return this.vm.waitFrames(this);
  }

  /** Ends the run (once) with a status or a ScriptError. */
  end(outcome: number | undefined | ScriptError): void {
    if (this.finished) return;
    this.finished = true;
    this.outcome = outcome;
    if (!this.waiter) return;
    if (outcome instanceof ScriptError) this.waiter.reject(outcome);
    else this.waiter.resolve(outcome);
    this.waiter = null;
  }
}
