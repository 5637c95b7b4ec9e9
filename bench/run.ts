/**
 * The benchmark suite's one entry point: `npm run bench [-- SCENARIO...]` from the repository
 * root. Runs the named scenarios (default: all) one after the other, writes each one's report to
 * bench/results/NAME-latest.md (and its chart to NAME-latest.svg) and rebuilds bench/RESULTS.md
 * from the latest report of every scenario.
 *
 *   npm run bench                       # everything, ~20 minutes on a quiet 2-core machine
 *   npm run bench -- hello idle         # some scenarios
 *   BENCH_QUICK=1 npm run bench         # a smoke run: checks every set-up, measures nothing worth keeping,
 *                                       # so it writes to bench/results/quick/ and leaves the results alone
 *
 * BENCH_NODE=/path/to/node runs the whole suite (Lodestone, the Node peers, the micro cases) under
 * that Node instead of the one running npm, and writes to bench/results/nodeMAJOR/ (see results.ts).
 *
 * Settings (environment): BENCH_DURATION (s per timed run, default 10), BENCH_ROUNDS (3),
 * BENCH_CONNECTIONS (16), BENCH_WARMUP (s, 2), BENCH_NOISE (% of a CPU of other load that flags
 * a run, 10), BENCH_QUICK=1, BENCH_KEEP_TMP=1 (keep each scenario's temp dir with configs and
 * logs), BENCH_SCENARIOS (instead of arguments), and the scenarios' own (see --help).
 *
 * Exit code: 0 when every scenario ran and was valid; 1 when one failed, was invalid or was
 * skipped (or ran without some of its peers) for missing programs (which are named, with the
 * Debian packages to install); 2 on bad settings.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Context } from './lib/harness.js';
import { repoRoot } from '../test/shared/repo.js';
import { findPrograms, installHint, missingOf, type Requirement } from './lib/prereq.js';
import { killAllSync } from './lib/procs.js';
import { Progress } from './lib/progress.js';
import { resultsPlace, writeResults } from './lib/results.js';
import type { Scenario } from './lib/scenario.js';
import { SettingsError } from './lib/settings.js';
import { bigScript } from './scenarios/big-script.js';
import { cacheFront } from './scenarios/cache-front.js';
import { endurance } from './scenarios/endurance.js';
import { gc } from './scenarios/gc.js';
import { hello } from './scenarios/hello.js';
import { idle } from './scenarios/idle.js';
import { micro } from './scenarios/micro.js';
import { pass } from './scenarios/pass.js';
import { render } from './scenarios/render.js';
import { statAccel } from './scenarios/stat-accel.js';

/** Every scenario, in the order a full run takes them (and RESULTS.md lists them). */
const SCENARIOS: readonly Scenario[] = [hello, render, bigScript, cacheFront, pass, statAccel, idle, endurance, gc, micro];

const HELP = `usage: npm run bench [-- SCENARIO...]     (default: all)

Scenarios:
${SCENARIOS.map((s) => `  ${s.name.padEnd(12)} ${s.summary}`).join('\n')}

Environment: BENCH_DURATION (s per run, 10), BENCH_ROUNDS (3), BENCH_CONNECTIONS (16),
BENCH_WARMUP (s, 2), BENCH_NOISE (% other CPU load that flags a run, 10), BENCH_QUICK=1 (smoke
run, written to bench/results/quick/), BENCH_NODE (a node binary to run everything under,
written to bench/results/nodeMAJOR/), BENCH_KEEP_TMP=1, BENCH_SCENARIOS (instead of arguments);
hello: BENCH_PEERS; stat-accel: BENCH_THREADS (1,4,20), BENCH_FILES (4000), BENCH_DELAY_US (5000);
cache-front: BENCH_PAGE_MS (2); idle: BENCH_IDLE (1000);
endurance: BENCH_ENDURANCE_REQUESTS (1000000), BENCH_ENDURANCE_STEP (a tenth).
Results: bench/results/SCENARIO-latest.md and .svg, bench/RESULTS.md.
`;

const tmpDirs = new Set<string>();
let progress: Progress | null = null;
const keepTmp = process.env.BENCH_KEEP_TMP === '1';

process.on('exit', () => {
  killAllSync();
  for (const dir of tmpDirs) {
    if (keepTmp) process.stderr.write(`bench: kept ${dir}\n`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
});
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
  process.on(signal, () => {
    progress?.done();
    process.stderr.write(`bench: ${signal}, stopping\n`);
    // The exit handler kills every process group we started and removes the temp dirs.
    process.exit(code);
  });
}

/** The scenarios named by the arguments or BENCH_SCENARIOS, in suite order. */
function selectScenarios(args: readonly string[], env = process.env.BENCH_SCENARIOS): Scenario[] {
  const names = (args.length > 0 ? [...args] : (env ?? '').split(',')).map((n) => n.trim()).filter((n) => n !== '');
  if (names.length === 0 || names.includes('all')) return [...SCENARIOS];
  const unknown = names.filter((n) => !SCENARIOS.some((s) => s.name === n));
  if (unknown.length > 0) throw new SettingsError(`unknown scenario(s) ${unknown.join(', ')}; choose from ${SCENARIOS.map((s) => s.name).join(', ')}`);
  return SCENARIOS.filter((s) => names.includes(s.name));
}

/**
 * Runs this entry again under BENCH_NODE when that is another binary than the one running now:
 * every server the suite starts uses process.execPath, and the micro cases run in-process, so
 * one re-exec puts all of them, and each report's "Node" line, on that version. Null: go on here.
 */
function underBenchNode(argv: readonly string[]): number | null {
  const wanted = process.env.BENCH_NODE;
  if (wanted === undefined || wanted === '') return null;
  let target: string;
  try {
    target = fs.realpathSync(wanted);
    fs.accessSync(target, fs.constants.X_OK);
  } catch {
    throw new SettingsError(`BENCH_NODE must be an executable node binary (got ${JSON.stringify(wanted)})`);
  }
  if (target === fs.realpathSync(process.execPath)) return null;
  const r = spawnSync(target, [process.argv[1]!, ...argv], { stdio: 'inherit' });
  if (r.error) throw new SettingsError(`BENCH_NODE ${wanted}: ${r.error.message}`);
  return r.status ?? 1;
}

async function main(argv: readonly string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(HELP);
    return 0;
  }
  try {
    const status = underBenchNode(argv);
    if (status !== null) return status;
  } catch (err) {
    if (!(err instanceof SettingsError)) throw err;
    process.stderr.write(`bench: ${err.message}\n`);
    return 2;
  }
  let chosen: Scenario[];
  try {
    chosen = selectScenarios(argv);
  } catch (err) {
    if (!(err instanceof SettingsError)) throw err;
    process.stderr.write(`bench: ${err.message}\n`);
    return 2;
  }
  if (os.cpus().length < 2) {
    process.stderr.write('bench: needs 2 CPUs (servers on CPU 0, wrk on CPU 1)\n');
    return 1;
  }
  if (!fs.existsSync(path.join(repoRoot, 'dist/runtime'))) {
    process.stderr.write('bench: build Lodestone first (npm run build in the repository root)\n');
    return 1;
  }
  const programs = findPrograms();
  const benchDir = path.join(repoRoot, 'bench');
  const missingAll: Array<{ what: Requirement; pkg: string }> = [];
  const runnable: Scenario[] = [];
  for (const s of chosen) {
    const missing = missingOf(s.needs, programs, benchDir);
    if (missing.length === 0) {
      runnable.push(s);
      // Not fatal to the scenario, but the run is incomplete: named, and the exit code says so.
      const partial = missingOf(s.optional ?? [], programs, benchDir);
      if (partial.length > 0) {
        missingAll.push(...partial);
        process.stderr.write(`bench: ${s.name} runs without the peers that need ${partial.map((m) => m.what).join(', ')}\n`);
      }
      continue;
    }
    missingAll.push(...missing);
    process.stderr.write(`bench: skipping ${s.name}: missing ${missing.map((m) => m.what).join(', ')}\n`);
  }
  if (missingAll.length > 0) process.stderr.write(`bench: to run everything: ${installHint(missingAll)}\n`);

  progress = new Progress();
  const bar = progress;
  let failed = missingAll.length > 0;
  for (const [i, s] of runnable.entries()) {
    bar.scenario = runnable.length > 1 ? `[scenario ${i + 1}/${runnable.length}] ` : '';
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `lodestone-bench-${s.name}-`));
    tmpDirs.add(tmp);
    const ctx: Context = { tmp, progress: bar, note: (text) => bar.note(text) };
    const started = Date.now();
    try {
      const result = await s.run(ctx, programs);
      bar.done();
      const written = writeResults(s.name, result, SCENARIOS.map((x) => x.name));
      process.stdout.write(`${result.markdown}\n`);
      process.stderr.write(`bench: ${s.name} done in ${Math.round((Date.now() - started) / 1000)} s; wrote ${written.join(', ')}\n`);
      if (!result.valid) {
        process.stderr.write(`bench: ${s.name} is INVALID (see its report)\n`);
        failed = true;
      }
    } catch (err) {
      bar.done();
      if (err instanceof SettingsError) {
        process.stderr.write(`bench: ${err.message}\n`);
        return 2;
      }
      process.stderr.write(`bench: ${s.name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      failed = true;
    } finally {
      if (!keepTmp) {
        fs.rmSync(tmp, { recursive: true, force: true });
        tmpDirs.delete(tmp);
      }
    }
  }
  const place = resultsPlace();
  const rel = (p: string): string => path.relative(process.cwd(), p) || '.';
  process.stderr.write(`bench: results in ${rel(place.dir)}, summary in ${rel(place.page)}${place.smoke ? ' (smoke run: not results)' : ''}\n`);
  return failed ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
