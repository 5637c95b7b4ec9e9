/** Waiting for a condition by polling, for the tests and the benchmark alike. */
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `check` every 10 ms until it returns something other than undefined or false, and
 * resolves to that; throws `timed out after N ms waiting for WHAT` at the deadline. `check` may
 * be async (a connection attempt), and may throw to give up early (the server exited). `what`
 * is called only then, so it can show a log as it is at the end.
 *
 * @example
 *   await waitFor(() => server.activeRequests === 2, 3000, 'two requests in flight');
 *   const line = await waitFor(() => log().split('\n').find((l) => l.includes('listening')), 5000, () => log());
 */
export async function waitFor<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs: number,
  what: string | (() => string),
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await sleep(10);
  }
}
