/**
 * Where reports go: bench/results/NAME-latest.md (+ .svg) per scenario, and bench/RESULTS.md,
 * rebuilt from the latest report of every scenario so that running one scenario updates its
 * section and keeps the others (each section carries its own date and machine).
 */
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot, resultsDir } from './harness.js';
import type { ScenarioResult } from './scenario.js';

/** Writes a scenario's report (and chart) and rebuilds RESULTS.md; returns the paths written. */
export function writeResults(name: string, result: ScenarioResult, order: readonly string[]): string[] {
  fs.mkdirSync(resultsDir, { recursive: true });
  const written: string[] = [];
  const write = (file: string, text: string): void => {
    fs.writeFileSync(file, text);
    written.push(path.relative(repoRoot, file));
  };
  write(path.join(resultsDir, `${name}-latest.md`), result.markdown);
  if (result.svg !== undefined) write(path.join(resultsDir, `${name}-latest.svg`), result.svg);
  write(path.join(repoRoot, 'bench/RESULTS.md'), resultsPage(order, (n) => readOrNull(path.join(resultsDir, `${n}-latest.md`))));
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
 * their headings one level down, chart links made relative to bench/.
 */
export function resultsPage(order: readonly string[], read: (name: string) => string | null): string {
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
        .replace(/\]\(([\w.-]+\.svg)\)/g, '](results/$1)'),
    );
  }
  return [
    '# Benchmark results',
    '',
    'The latest run of each scenario of `npm run bench` (see the README\'s "Benchmarks" section), rebuilt by every run ' +
      'from bench/results/*-latest.md. Each section says when it ran and on what machine; numbers from different ' +
      'sections may come from different runs.',
    '',
    ran.length > 0 ? `Scenarios: ${ran.join(', ')}.` : 'No scenario has run yet.',
    '',
    ...sections.flatMap((s) => [s, '']),
  ].join('\n');
}
