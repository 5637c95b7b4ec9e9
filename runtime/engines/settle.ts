/**
 * How a Lua engine's driver waits for the host call a run yielded in: the promise's outcome is
 * kept on the run for the continuation that resumes the script (both Lua engines do this).
 */

/** The outcome of an async host call, handed to the script when the driver resumes it. */
export type Settled = { ok: true; value: unknown } | { ok: false; error: unknown };

/** A run waiting for a host call. */
export interface Waiting {
  /** The host call's promise (set before the yield; taken here). */
  pending: Promise<unknown> | null;
  settled: Settled | null;
}

/** Awaits `run.pending` and records how it ended in `run.settled`; never throws. */
export async function settle(run: Waiting): Promise<void> {
  const pending = run.pending!;
  run.pending = null;
  try {
    run.settled = { ok: true, value: await pending };
  } catch (error) {
    run.settled = { ok: false, error };
  }
}
