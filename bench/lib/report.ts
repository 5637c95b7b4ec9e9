/** Summarizes the measurements as a markdown report. */
import type { WrkResult } from './wrk.js';

/** Every backend, in the order rounds run them; `BENCH_BACKENDS` names a subset. */
export const BACKEND_IDS = ['lodestone-diagnostic', 'lodestone-lua', 'lodestone-js', 'libfcgi', 'php-fpm', 'node-floor'] as const;
export type BackendId = (typeof BACKEND_IDS)[number];
export type ModeId = 'close' | 'keepalive';

export const BACKEND_LABEL: Record<BackendId, string> = {
  'lodestone-diagnostic': 'Lodestone (diagnostic)',
  'lodestone-lua': 'Lodestone Lua hello',
  'lodestone-js': 'Lodestone JS hello',
  libfcgi: 'libfcgi (C, fcgi_stdio)',
  'php-fpm': 'PHP-FPM (hello.php)',
  'node-floor': 'Node floor (canned reply)',
};
export const MODE_LABEL: Record<ModeId, string> = {
  close: 'connection per request',
  keepalive: 'FastCGI keep-alive',
};

/** The backends that are Lodestone: their rows get the ratio columns. */
export const isLodestone = (b: BackendId): boolean => b.startsWith('lodestone');
/** The yardsticks every Lodestone backend is divided by, one ratio column each. */
export const PEERS: readonly BackendId[] = ['libfcgi', 'php-fpm', 'node-floor'];
const PEER_SHORT: Partial<Record<BackendId, string>> = { libfcgi: 'libfcgi', 'php-fpm': 'PHP-FPM', 'node-floor': 'Node floor' };

/** One wrk run. CPU figures are percent of one CPU over the middle of the run. */
export interface Measurement {
  round: number;
  backend: BackendId;
  mode: ModeId;
  wrk: WrkResult;
  nginxCpu: number;
  backendCpu: number;
  wrkCpu: number;
  otherCpu0: number;
  otherCpu1: number;
  steal: number;
  /** Why the machine was not quiet enough during this run; empty when it was. */
  noise: string[];
  /** Why this run's numbers are not to be trusted (errors reported by wrk); empty when clean. */
  problems: string[];
}

export interface ReportHeader {
  date: string;
  node: string;
  nginx: string;
  cpuModel: string;
  cpuCount: number;
  seconds: number;
  rounds: number;
  warmup: number;
  connections: number;
  libfcgiProcesses: number;
  /** PHP-FPM's version line and its pool's pm.max_children, when it ran. */
  phpFpm: { version: string; children: number } | null;
  /** Load from other processes just before the run, percent of one CPU (all CPUs summed). */
  loadBefore: number;
  loadavg: string;
  /** VmRSS at the end summed over each backend's processes (absent: gone). */
  rss: Partial<Record<BackendId, { kib: number; processes: number }>>;
  /** The request path of each backend. */
  paths: Partial<Record<BackendId, string>>;
  noiseThreshold: number;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** `backend`/`peer` req/s ratio of each round in which both backends ran in `mode`. */
export function roundRatios(ms: readonly Measurement[], mode: ModeId, backend: BackendId, peer: BackendId): number[] {
  const rounds = [...new Set(ms.map((m) => m.round))];
  const out: number[] = [];
  for (const round of rounds) {
    const get = (b: BackendId): Measurement | undefined => ms.find((m) => m.round === round && m.mode === mode && m.backend === b);
    const ours = get(backend);
    const other = get(peer);
    if (ours && other && other.wrk.rps > 0) out.push(ours.wrk.rps / other.wrk.rps);
  }
  return out;
}

const int = (n: number): string => Math.round(n).toLocaleString('en-US');
const ms = (n: number): string => `${n < 10 ? n.toFixed(2) : n.toFixed(1)} ms`;
const pct = (n: number): string => `${Math.round(n)}%`;
const mib = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;
/** Per-round ratios as "median (min–max)", one value as is, none as a dash. */
const ratioCell = (ratios: readonly number[]): string =>
  ratios.length === 0
    ? '—'
    : ratios.length === 1
      ? ratios[0]!.toFixed(2)
      : `${median(ratios).toFixed(2)} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`;

export function renderReport(h: ReportHeader, measurements: readonly Measurement[]): string {
  const modes: ModeId[] = ['close', 'keepalive'];
  const present = new Set(measurements.map((m) => m.backend));
  const backends = BACKEND_IDS.filter((b) => present.has(b));
  const peers = PEERS.filter((p) => present.has(p));
  const invalid = measurements.filter((m) => m.problems.length > 0);
  const noisy = measurements.filter((m) => m.noise.length > 0);
  const lines: string[] = [];
  lines.push('# Lodestone end-to-end benchmark: wrk → nginx → FastCGI backend', '');
  lines.push(`- Date: ${h.date}`);
  lines.push(`- Node: ${h.node}; ${h.nginx}; CPU: ${h.cpuModel} (${h.cpuCount} CPUs)`);
  const paths = [...new Set(backends.map((b) => h.paths[b]))].map((p) => `\`GET ${p}\``).join(' or ');
  lines.push(
    `- Load: \`wrk -t1 -c${h.connections} -d${h.seconds}s --latency\` on ${paths} (body "123", \`Content-Type: text/plain\`), ` +
      `${h.rounds} interleaved round(s), ${h.warmup} s warm-up per backend and mode before round 1; medians over rounds`,
  );
  lines.push(
    `- Placement: nginx (worker_processes 1) and the backend pinned to CPU 0, wrk to CPU 1; ` +
      `keep-alive mode: \`upstream { keepalive ${h.connections}; }\` + \`fastcgi_keep_conn on\``,
  );
  lines.push(`- Backends: ${backends.map((b) => `${BACKEND_LABEL[b]} (\`${h.paths[b]}\`)`).join(', ')}`);
  if (present.has('lodestone-lua') || present.has('lodestone-js')) {
    lines.push(
      '- Lodestone Lua / JS hello: `lodestone serve --root DIR` (one process per backend, default config: script cache, ' +
        'limits on), running `hello.lua` / `hello.js` that set `Content-Type: text/plain` and `write("123")`; ' +
        'nginx sets `root DIR`, so `SCRIPT_FILENAME` is `DIR/hello.lua`',
    );
  }
  if (present.has('libfcgi')) lines.push(`- libfcgi: ${h.libfcgiProcesses} pre-forked processes (FCGI_Accept loop, gcc -O2)`);
  if (present.has('php-fpm') && h.phpFpm) {
    lines.push(
      `- PHP-FPM: ${h.phpFpm.version}, \`php-fpm -F\` with one pool, \`pm = static\`, \`pm.max_children = ${h.phpFpm.children}\` ` +
        "(a child serves one kept connection at a time, like a libfcgi process), the system's php.ini (OPcache as installed), " +
        '`hello.php` (bench/peers) setting `Content-Type: text/plain` and echoing "123"',
    );
  }
  if (present.has('node-floor')) {
    lines.push(
      '- Node floor: one Node process that parses record headers and answers the end of each PARAMS stream with a canned ' +
        'response, the least a Node FastCGI responder can do per request. libfcgi here runs at about the speed of a Node ' +
        "server that does nothing but read and write, so the floor shows how much of Lodestone's gap to libfcgi is Node's own per-request cost",
    );
  }
  const rss = (b: BackendId): string => {
    const r = h.rss[b];
    if (!r || r.processes === 0) return `${BACKEND_LABEL[b]} n/a`;
    return r.processes === 1
      ? `${BACKEND_LABEL[b]} ${mib(r.kib)} (one process)`
      : `${BACKEND_LABEL[b]} ${mib(r.kib)} summed over ${r.processes} processes (shared pages counted in each)`;
  };
  lines.push(`- Memory at the end (VmRSS): ${backends.map(rss).join('; ')}`);
  lines.push(`- Other load before the run: ${pct(h.loadBefore)} of one CPU; loadavg ${h.loadavg}`);
  lines.push(
    invalid.length > 0
      ? `- **INVALID**: wrk reported errors in ${invalid.length} run(s), see the per-run table`
      : '- Valid: no socket errors or non-2xx responses in any run',
  );
  lines.push(
    noisy.length > 0
      ? `- **NOISY**: ${noisy.length} of ${measurements.length} run(s) saw other CPU load over ${h.noiseThreshold}% of a CPU (marked below)`
      : `- Quiet: no run saw other CPU load over ${h.noiseThreshold}% of a CPU`,
  );
  lines.push('');
  const ratioHeads = peers.map((p) => ` Lodestone / ${PEER_SHORT[p] ?? BACKEND_LABEL[p]} req/s |`).join('');
  lines.push(`| Backend | nginx → backend | req/s (median) | req/s (min–max) | p50 | p99 |${ratioHeads}`);
  lines.push(`|---|---|---:|---:|---:|---:|${'---:|'.repeat(peers.length)}`);
  for (const mode of modes) {
    for (const backend of backends) {
      const runs = measurements.filter((m) => m.mode === mode && m.backend === backend);
      if (runs.length === 0) continue;
      const rps = runs.map((m) => m.wrk.rps);
      // Ratios per round (so that drift hits both sides alike), then their median and range.
      const ratios = peers.map((p) => (isLodestone(backend) ? ratioCell(roundRatios(measurements, mode, backend, p)) : '—'));
      lines.push(
        `| ${BACKEND_LABEL[backend]} | ${MODE_LABEL[mode]} | ${int(median(rps))} | ${int(Math.min(...rps))}–${int(Math.max(...rps))} | ` +
          `${ms(median(runs.map((m) => m.wrk.p50)))} | ${ms(median(runs.map((m) => m.wrk.p99)))} |${ratios.map((r) => ` ${r} |`).join('')}`,
      );
    }
  }
  lines.push('');
  lines.push('Per run (CPU in % of one CPU over the middle of the run; "other" = load not from the benchmark):', '');
  lines.push('| Round | Backend | nginx → backend | req/s | p50 | p99 | nginx CPU | backend CPU | wrk CPU | other CPU0 | other CPU1 | steal | notes |');
  lines.push('|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const m of measurements) {
    const notes = [...m.problems.map((p) => `**invalid**: ${p}`), ...m.noise.map((n) => `noisy: ${n}`)].join('; ');
    lines.push(
      `| ${m.round} | ${BACKEND_LABEL[m.backend]} | ${MODE_LABEL[m.mode]} | ${int(m.wrk.rps)} | ${ms(m.wrk.p50)} | ${ms(m.wrk.p99)} | ` +
        `${pct(m.nginxCpu)} | ${pct(m.backendCpu)} | ${pct(m.wrkCpu)} | ${pct(m.otherCpu0)} | ${pct(m.otherCpu1)} | ${pct(m.steal)} | ${notes} |`,
    );
  }
  lines.push('');
  return lines.join('\n');
}
