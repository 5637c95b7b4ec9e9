/** Benchmark settings from the environment, shared by the bench entry points. */

/** A bad BENCH_* value: the entry points print its message and exit 2. */
export class SettingsError extends Error {}

/** An integer environment variable of at least `min`, or `fallback` when unset or empty. */
export function envInt(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  // wrk takes whole seconds only, so durations are integers like the rest.
  if (!Number.isSafeInteger(n) || n < min) throw new SettingsError(`${name} must be an integer >= ${min} (got ${JSON.stringify(raw)})`);
  return n;
}
