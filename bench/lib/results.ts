/**
 * Where reports go: bench/results/NAME-latest.md (+ .svg) per scenario, and bench/RESULTS.md,
 * rebuilt from the latest report of every scenario so that running one scenario updates its
 * section and keeps the others (each section carries its own date and machine). A smoke run
 * (BENCH_QUICK=1) measures nothing worth keeping, so it writes to bench/results/quick/ (not in
 * git) and leaves the real results alone. A run under another Node (BENCH_NODE) writes to
 * bench/results/nodeMAJOR/ with a RESULTS.md of its own, so runs on two Node versions stand side
 * by side instead of overwriting each other.
 */
import fs from 'node:fs';
import path from 'node:path';
import { resultsDir } from './harness.js';
import { repoRoot } from '../../test/shared/repo.js';
import type { ScenarioResult } from './scenario.js';

/** Where a run's reports, charts and summary page go. */
export interface ResultsPlace {
  /** NAME-latest.md and .svg. */
  dir: string;
  /** The summary page rebuilt from every scenario's latest report. */
  page: string;
  /** A smoke run's: the page says its numbers are not results. */
  smoke: boolean;
}

/**
 * bench/results and bench/RESULTS.md; bench/results/quick/ (with its own RESULTS.md) for a smoke
 * run; bench/results/nodeMAJOR/ (likewise) for a run under BENCH_NODE (`node`: that major).
 */
export function resultsPlace(quick = process.env.BENCH_QUICK === '1', node = benchNodeMajor()): ResultsPlace {
  if (quick) {
    const dir = path.join(resultsDir, 'quick');
    return { dir, page: path.join(dir, 'RESULTS.md'), smoke: true };
  }
  if (node !== null) {
    const dir = path.join(resultsDir, `node${node}`);
    return { dir, page: path.join(dir, 'RESULTS.md'), smoke: false };
  }
  return { dir: resultsDir, page: path.join(repoRoot, 'bench/RESULTS.md'), smoke: false };
}

/** This process's Node major when BENCH_NODE chose it (run.ts re-runs itself under it), else null. */
function benchNodeMajor(): string | null {
  const wanted = process.env.BENCH_NODE;
  return wanted === undefined || wanted === '' ? null : process.versions.node.split('.')[0]!;
}

/** Writes a scenario's report (and chart) and rebuilds the summary page; returns the paths written. */
export function writeResults(name: string, result: ScenarioResult, order: readonly string[], place = resultsPlace()): string[] {
  fs.mkdirSync(place.dir, { recursive: true });
  const written: string[] = [];
  const write = (file: string, text: string): void => {
    fs.writeFileSync(file, text);
    written.push(path.relative(repoRoot, file));
  };
  write(path.join(place.dir, `${name}-latest.md`), result.markdown);
  if (result.svg !== undefined) write(path.join(place.dir, `${name}-latest.svg`), result.svg);
  const chartDir = path.relative(path.dirname(place.page), place.dir);
  write(place.page, resultsPage(order, (n) => readOrNull(path.join(place.dir, `${n}-latest.md`)), chartDir, place.smoke));
  return written;
}

function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/**
 * RESULTS.md from the scenarios' latest reports (`read(name)`, null when a scenario never ran):
 * their headings one level down, chart links made relative to the page (`chartDir`: the
 * reports' directory as seen from the page's, '' for the same one).
 */
export function resultsPage(order: readonly string[], read: (name: string) => string | null, chartDir = 'results', smoke = false): string {
  const sections: string[] = [];
  const ran: string[] = [];
  for (const name of order) {
    const md = read(name);
    if (md === null) continue;
    ran.push(name);
    sections.push(
      md
        .trimEnd()
        .replace(/^(#+) /gm, '#$1 ')
        .replace(/\]\(([\w.-]+\.svg)\)/g, chartDir === '' ? ']($1)' : `](${chartDir}/$1)`),
    );
  }
  return [
    '# Benchmark results',
    '',
    ...(smoke ? ['**Smoke run (BENCH_QUICK=1)**: short runs that check every set-up; the numbers are not results.', ''] : []),
    'The latest run of each scenario of `npm run bench` (see the README\'s "Benchmarks" section), rebuilt by every run ' +
      'from bench/results/*-latest.md. Each section says when it ran and on what machine; numbers from different ' +
      'sections may come from different runs.',
    '',
    ran.length > 0 ? `Scenarios: ${ran.join(', ')}.` : 'No scenario has run yet.',
    '',
    ...sections.flatMap((s) => [s, '']),
  ].join('\n');
}
