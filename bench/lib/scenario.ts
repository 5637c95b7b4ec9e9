/** What a benchmark scenario is to the runner (bench/run.ts). */
import type { Context } from './harness.js';
import type { Programs, Requirement } from './prereq.js';

/** A scenario's report: written to bench/results/NAME-latest.md (and .svg) and into RESULTS.md. */
export interface ScenarioResult {
  markdown: string;
  /** The req/s chart, when the scenario has one. */
  svg?: string;
  /** False when a run was invalid (wrk errors) or a check failed: the runner exits 1. */
  valid: boolean;
}

export interface Scenario {
  name: string;
  /** One line for `npm run bench -- --help`. */
  summary: string;
  /** Skipped, with the packages to install, when any of these is missing. */
  needs: readonly Requirement[];
  /**
   * What only some of its peers need: when one is missing the scenario runs without those peers
   * (it checks with `missingOf` itself), and the runner names the package and exits 1 as for `needs`.
   */
  optional?: readonly Requirement[];
  run(ctx: Context, programs: Programs): Promise<ScenarioResult>;
}
