/**
 * Markdown (and chart data) from the runs of a load scenario: the same columns for every
 * scenario, so that the reports read alike. Pure functions: bench/test/report.test.ts checks them.
 */
import { barChart, type Bar } from './svg.js';
import type { ScenarioResult } from './scenario.js';
import type { LoadSettings, Machine, Run, Target } from './harness.js';

/** Median of `values` (NaN when empty). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * `target`/`base` req/s ratio of each round in which both ran: taken per round so that drift in
 * the machine over the run (which interleaving spreads over all targets) cancels out.
 */
export function roundRatios(runs: readonly Run[], target: string, base: string): number[] {
  const out: number[] = [];
  for (const round of [...new Set(runs.map((r) => r.round))]) {
    const ours = runs.find((r) => r.round === round && r.target.id === target);
    const theirs = runs.find((r) => r.round === round && r.target.id === base);
    if (ours && theirs && theirs.wrk.rps > 0) out.push(ours.wrk.rps / theirs.wrk.rps);
  }
  return out;
}

export const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—');
export const ms = (n: number): string => (Number.isFinite(n) ? `${n < 10 ? n.toFixed(2) : n.toFixed(1)} ms` : '—');
export const pct = (n: number): string => (Number.isFinite(n) ? `${Math.round(n)}%` : '—');
export const mib = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;

/** Per-round ratios as "median (min–max)", one value as is, none as a dash. */
export function ratioCell(ratios: readonly number[]): string {
  if (ratios.length === 0) return '—';
  if (ratios.length === 1) return ratios[0]!.toFixed(2);
  return `${median(ratios).toFixed(2)} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`;
}

/** A column of ratios: every row divided by this target, round by round. */
export interface Baseline {
  /** The target id divided by, e.g. "php-fpm/keepalive". */
  id: string;
  /** Column heading, e.g. "/ PHP-FPM keep-alive". */
  heading: string;
  /** The rows this column means something for (default: all). */
  appliesTo?: (t: Target) => boolean;
}

/** Memory of a process group at the end of a scenario: VmRSS summed over its processes. */
export interface Rss {
  kib: number;
  processes: number;
}

/** "load average 1.00, 2.00, 3.00 (1/5/15 min) at the end": how busy a shared machine was, runs and gaps alike. */
function loadLine(m: Machine): string {
  return `load average ${m.loadavg.map((n) => n.toFixed(2)).join(', ')} (1/5/15 min) at the end`;
}

/** The header every load report starts with: when, on what, how. */
export function headerLines(m: Machine, s: LoadSettings, extra: readonly string[]): string[] {
  return [
    `- Date: ${m.date}; machine: ${m.cpuModel}, ${m.cpus} CPUs, Linux ${m.kernel}; Node ${m.node}; ${loadLine(m)}`,
    `- Method: \`wrk -t1 -c${s.connections} -d${s.seconds}s --latency\`, ${s.rounds} interleaved round(s) after a ${s.warmup} s ` +
      'warm-up per target; servers (front end and backend) pinned to CPU 0, wrk to CPU 1 (taskset); medians over rounds, ' +
      'ratios taken per round, then their median (and range)',
    ...extra.map((l) => `- ${l}`),
  ];
}

/** Lines saying whether the runs are valid and quiet. */
export function verdictLines(runs: readonly Run[], noiseThreshold: number): string[] {
  const invalid = runs.filter((r) => r.problems.length > 0);
  const noisy = runs.filter((r) => r.noise.length > 0);
  return [
    invalid.length > 0
      ? `- **INVALID**: wrk reported errors in ${invalid.length} run(s), see the per-run table`
      : '- Valid: no socket errors or non-2xx responses in any run',
    noisy.length > 0
      ? `- **NOISY**: ${noisy.length} of ${runs.length} run(s) saw other CPU load over ${noiseThreshold}% of a CPU (marked in the per-run table)`
      : `- Quiet: no run saw other CPU load over ${noiseThreshold}% of a CPU`,
  ];
}

/**
 * Microseconds of server CPU per request in one run: the backend's share of the server core
 * over the middle of the run divided by its rate, or the front end's where there is no backend
 * (it serves the page itself). Unlike req/s this does not depend on how the shared core was
 * split between nginx and the backend. NaN when the run was not sampled.
 */
export function cpuPerRequestUs(run: Run): number {
  const cpu = run.target.backendProc !== undefined ? run.backendCpu : run.frontCpu;
  return Number.isFinite(cpu) && run.wrk.rps > 0 ? (cpu / 100 / run.wrk.rps) * 1e6 : NaN;
}

/** What the "server CPU / req" column means, for the notes of every report that has it. */
export const CPU_PER_REQUEST_NOTE =
  'server CPU / req: CPU time of the backend (of the front end where it serves the page) over the middle of a run, ' +
  'divided by the requests it served, median over rounds; it does not depend on how the shared core was split';

export const us = (n: number): string => (Number.isFinite(n) ? `${n < 10 ? n.toFixed(1) : Math.round(n)} µs` : '—');

/**
 * The summary table: a row per target in the given order, req/s median and range, latency,
 * the server's CPU per request and memory at the end (`rss` by process group id: the
 * backend's, or the front end's when it serves the page itself) and a ratio column per baseline.
 */
export function summaryTable(
  targets: readonly Target[],
  runs: readonly Run[],
  baselines: readonly Baseline[],
  rss: ReadonlyMap<number, Rss> = new Map(),
): string[] {
  const present = baselines.filter((b) => runs.some((r) => r.target.id === b.id));
  const lines = [
    `| Peer | Reached as | req/s (median) | req/s (min–max) | p50 | p99 | server CPU / req | server RSS |${present.map((b) => ` ${b.heading} |`).join('')}`,
    `|---|---|---:|---:|---:|---:|---:|---:|${'---:|'.repeat(present.length)}`,
  ];
  for (const t of targets) {
    const rs = runs.filter((r) => r.target === t);
    if (rs.length === 0) continue;
    const rps = rs.map((r) => r.wrk.rps);
    const mem = rss.get(t.backendProc?.pid ?? t.frontProc.pid);
    const memCell = mem === undefined || mem.processes === 0 ? '—' : `${mib(mem.kib)}${mem.processes > 1 ? ` (${mem.processes} proc.)` : ''}`;
    const ratios = present.map((b) =>
      b.id === t.id ? '1' : b.appliesTo !== undefined && !b.appliesTo(t) ? '—' : ratioCell(roundRatios(runs, t.id, b.id)),
    );
    const label = t.lodestone ? `**${t.label}**` : t.label;
    lines.push(
      `| ${label} | ${t.front}, ${t.mode} | ${int(median(rps))} | ${int(Math.min(...rps))}–${int(Math.max(...rps))} | ` +
        `${ms(median(rs.map((r) => r.wrk.p50)))} | ${ms(median(rs.map((r) => r.wrk.p99)))} | ` +
        `${us(median(rs.map(cpuPerRequestUs).filter(Number.isFinite)))} | ${memCell} |${ratios.map((c) => ` ${c} |`).join('')}`,
    );
  }
  return lines;
}

/** Every run with its CPU accounting and notes, so that a reader can see what a median hides. */
export function perRunTable(runs: readonly Run[]): string[] {
  const lines = [
    'Per run (CPU in % of one CPU over the middle of the run; "other" = load that is not the benchmark\'s):',
    '',
    '| Round | Peer | Reached as | req/s | p50 | p99 | front CPU | backend CPU | wrk CPU | other CPU0 | other CPU1 | steal | notes |',
    '|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of runs) {
    const notes = [...r.problems.map((p) => `**invalid**: ${p}`), ...r.noise.map((n) => `noisy: ${n}`)].join('; ');
    lines.push(
      `| ${r.round} | ${r.target.label} | ${r.target.front}, ${r.target.mode} | ${int(r.wrk.rps)} | ${ms(r.wrk.p50)} | ${ms(r.wrk.p99)} | ` +
        `${pct(r.frontCpu)} | ${pct(r.backendCpu)} | ${pct(r.wrkCpu)} | ${pct(r.otherCpu0)} | ${pct(r.otherCpu1)} | ${pct(r.steal)} | ${notes} |`,
    );
  }
  return lines;
}

/** The chart's bars: median req/s of each target with the min–max over rounds as whiskers. */
export function chartBars(targets: readonly Target[], runs: readonly Run[]): Bar[] {
  const out: Bar[] = [];
  for (const t of targets) {
    const rps = runs.filter((r) => r.target === t).map((r) => r.wrk.rps);
    if (rps.length === 0) continue;
    out.push({
      // The front end in the label too: Lodestone's accent colour hides the group's.
      label: `${t.label} (${t.front}, ${t.mode})`.replace(/`/g, ''),
      median: median(rps),
      min: Math.min(...rps),
      max: Math.max(...rps),
      group: t.front,
      highlight: t.lodestone === true,
      ...(t.reference === true ? { reference: true } : {}),
    });
  }
  return out;
}

/** What {@link wrkReport} makes a wrk scenario's report of. */
export interface WrkReport {
  /** The scenario's name: its chart is `NAME-latest.svg`. */
  readonly scenario: string;
  /** The report's title line, without the `# `. */
  readonly heading: string;
  readonly machine: Machine;
  readonly settings: LoadSettings;
  /** Lines under the header (versions, set-up, what a column means). */
  readonly notes: readonly string[];
  readonly targets: readonly Target[];
  readonly runs: readonly Run[];
  readonly baselines: readonly Baseline[];
  readonly rss: ReadonlyMap<number, Rss>;
  /** What the chart's bars are ("target", "peer"), for its alt text. */
  readonly per: string;
  /** The chart's title. */
  readonly chartTitle: string;
  /** What sits on the server core ("server", "servers"), for the chart's subtitle. */
  readonly onOneCore: string;
  /** Lines between the summary table and the per-run table. */
  readonly afterSummary?: readonly string[];
}

/**
 * The report every wrk scenario writes: header, verdict, chart, summary and per-run tables, and
 * the chart itself; valid when no run had a problem.
 */
export function wrkReport(r: WrkReport): ScenarioResult {
  const m = r.machine;
  const markdown = [
    `# ${r.heading}`,
    '',
    ...headerLines(m, r.settings, r.notes),
    ...verdictLines(r.runs, r.settings.noiseThreshold),
    '',
    `![req/s per ${r.per}](${r.scenario}-latest.svg)`,
    '',
    ...summaryTable(r.targets, r.runs, r.baselines, r.rss),
    '',
    ...(r.afterSummary ?? []),
    ...perRunTable(r.runs),
    '',
  ].join('\n');
  const svg = barChart(chartBars(r.targets, r.runs), {
    title: r.chartTitle,
    unit: 'req/s',
    subtitle: `${m.date.slice(0, 10)}, ${m.cpuModel}, ${r.onOneCore} on one core`,
  });
  return { markdown, svg, valid: r.runs.every((run) => run.problems.length === 0) };
}
