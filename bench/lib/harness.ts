/**
 * The one measuring loop every load scenario shares: warm-up, then rounds that interleave the
 * targets (so that drift in the machine hits all alike), each run a pinned wrk with the CPU of
 * every process group sampled in the middle of the run, so that a run disturbed by other load
 * is flagged rather than trusted. Scenarios only start their servers and name their targets.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../../test/shared/repo.js';
import { sample, usage, type Sample } from './cpu.js';
import type { Managed } from './procs.js';
import { Progress, type Step } from './progress.js';
import { envInt } from './settings.js';
import { runWrk, wrkProblems, type WrkResult } from './wrk.js';

/** Where reports and charts go. */
export const resultsDir = path.join(repoRoot, 'bench/results');
/** Servers (front end and backend) share CPU 0; wrk has CPU 1. */
export const SERVER_CPU = '0';
export const CLIENT_CPU = '1';

/** Settings every load scenario shares (BENCH_* environment variables). */
export interface LoadSettings {
  /** Seconds per timed run (BENCH_DURATION). */
  seconds: number;
  rounds: number;
  /** wrk connections, and the nginx keep-alive pool per upstream (BENCH_CONNECTIONS). */
  connections: number;
  /** Seconds of warm-up per target before round 1. */
  warmup: number;
  /** Percent of a CPU of other load that flags a run as noisy. */
  noiseThreshold: number;
}

/**
 * BENCH_DURATION (s per run, default 10), BENCH_ROUNDS (3), BENCH_CONNECTIONS (16), BENCH_WARMUP
 * (s, 2), BENCH_NOISE (%, 10); BENCH_QUICK=1 changes the defaults to a smoke run (2 s, 1 round,
 * 1 s warm-up) that checks the set-up rather than measures.
 */
export function loadSettings(defaults: Partial<LoadSettings> = {}): LoadSettings {
  const quick = process.env.BENCH_QUICK === '1';
  return {
    seconds: envInt('BENCH_DURATION', quick ? 2 : (defaults.seconds ?? 10), 1),
    rounds: envInt('BENCH_ROUNDS', quick ? 1 : (defaults.rounds ?? 3), 1),
    connections: envInt('BENCH_CONNECTIONS', defaults.connections ?? 16, 1),
    warmup: envInt('BENCH_WARMUP', quick ? 1 : (defaults.warmup ?? 2), 0),
    noiseThreshold: envInt('BENCH_NOISE', defaults.noiseThreshold ?? 10, 1),
  };
}

/** One thing wrk loads: a URL served by a front end (and usually a backend behind it). */
export interface Target {
  /** Unique within the scenario, e.g. "lodestone-lua/keepalive". */
  id: string;
  /** The peer, e.g. "Lodestone Lua hello". */
  label: string;
  /** How it is reached, e.g. "FastCGI keep-alive", "connection per request", "in-core". */
  mode: string;
  /** The front end wrk talks to, e.g. "nginx" or "lighttpd" (the chart's colour groups). */
  front: string;
  /** Lodestone's own rows: an accent colour in the chart. */
  lodestone?: boolean;
  /** A ceiling or control far above the peers (no FastCGI hop): it does not set the chart's scale. */
  reference?: boolean;
  url: string;
  /** A wrk Lua script (`-s`), e.g. to vary the URL per request. */
  script?: string;
  /** The front end's process group (pinned to the server CPU). */
  frontProc: Managed;
  /** The backend's process group, when there is one (pinned to the server CPU). */
  backendProc?: Managed;
  /**
   * Part of the backend's group runs on wrk's CPU on purpose (strace standing in for a slow
   * disk): CPU 1's "other" load is then ours, not noise, and is not flagged.
   */
  sharesClientCpu?: boolean;
}

/** One timed wrk run of one target. CPU figures are percent of one CPU, middle of the run. */
export interface Run {
  round: number;
  target: Target;
  wrk: WrkResult;
  frontCpu: number;
  backendCpu: number;
  wrkCpu: number;
  otherCpu0: number;
  otherCpu1: number;
  steal: number;
  /** Why the machine was not quiet enough during this run; empty when it was. */
  noise: string[];
  /** Why the numbers are not to be trusted (errors reported by wrk); empty when clean. */
  problems: string[];
}

/** What the scenario shares with the runner: its temp dir and the progress line. */
export interface Context {
  /** A fresh directory for configs, sockets and logs, removed at the end (BENCH_KEEP_TMP=1 keeps it). */
  tmp: string;
  progress: Progress;
  /** Prints a line without garbling the progress line. */
  note(text: string): void;
}

/**
 * Warms every target up, then runs `settings.rounds` rounds of every target in turn, sampling
 * CPU use of the front end, the backend and wrk (and so of everything else) during each run.
 */
export async function measure(ctx: Context, scenario: string, targets: readonly Target[], settings: LoadSettings): Promise<Run[]> {
  const { seconds, rounds, warmup, connections, noiseThreshold } = settings;
  const steps: Step[] = [];
  const name = (t: Target): string => `${t.label}, ${t.mode}`;
  if (warmup > 0) for (const t of targets) steps.push({ label: `${scenario}: warm-up ${name(t)}`, seconds: warmup });
  for (let r = 1; r <= rounds; r++) for (const t of targets) steps.push({ label: `${scenario}: round ${r}/${rounds} ${name(t)}`, seconds });
  ctx.progress.plan(steps);
  let step = 0;
  const wrkLog = path.join(ctx.tmp, 'wrk.log');
  if (warmup > 0) {
    for (const t of targets) {
      ctx.progress.begin(step++);
      const r = await runWrk({ url: t.url, script: t.script, connections, seconds: warmup, cpus: CLIENT_CPU, logFile: wrkLog });
      // Not part of the result, but errors this early point at a broken set-up.
      const problems = wrkProblems(r);
      if (problems.length > 0) ctx.note(`bench: warm-up of ${name(t)}: ${problems.join('; ')}`);
    }
  }
  const runs: Run[] = [];
  // CPU is sampled inside the run, away from its ends: wrk must still be alive to be counted.
  const marginMs = Math.min(1, seconds / 4) * 1000;
  for (let round = 1; round <= rounds; round++) {
    for (const t of targets) {
      ctx.progress.begin(step++);
      const pinned = [t.frontProc.pid, ...(t.backendProc ? [t.backendProc.pid] : [])];
      const window: { first?: Sample; last?: Sample } = {};
      let wrkPid = 0;
      const timers: NodeJS.Timeout[] = [];
      let r: WrkResult;
      try {
        r = await runWrk({
          url: t.url,
          script: t.script,
          connections,
          seconds,
          cpus: CLIENT_CPU,
          logFile: wrkLog,
          onStart: (w) => {
            wrkPid = w.pid;
            const pgids = [...pinned, w.pid];
            timers.push(setTimeout(() => (window.first = sample(pgids)), marginMs));
            timers.push(setTimeout(() => (window.last = sample(pgids)), seconds * 1000 - marginMs));
          },
        });
      } finally {
        for (const timer of timers) clearTimeout(timer);
      }
      const u = window.first && window.last ? usage(window.first, window.last, pinned, [wrkPid]) : null;
      const run: Run = {
        round,
        target: t,
        wrk: r,
        frontCpu: u?.groups.get(t.frontProc.pid) ?? NaN,
        backendCpu: t.backendProc ? (u?.groups.get(t.backendProc.pid) ?? NaN) : NaN,
        wrkCpu: u?.groups.get(wrkPid) ?? NaN,
        otherCpu0: u?.otherCpu0 ?? NaN,
        otherCpu1: u?.otherCpu1 ?? NaN,
        steal: u?.steal ?? NaN,
        noise: [],
        problems: wrkProblems(r),
      };
      run.noise.push(...noiseOf(run, noiseThreshold, u === null, t.sharesClientCpu === true));
      if (run.problems.length > 0) {
        ctx.note(`bench: INVALID run (${name(t)}, round ${round}): ${run.problems.join('; ')}\n${r.raw}`);
      }
      runs.push(run);
    }
  }
  ctx.progress.done();
  return runs;
}

/** Why a run's numbers may be off because of other load (empty: quiet). */
export function noiseOf(
  run: Pick<Run, 'otherCpu0' | 'otherCpu1' | 'steal'>,
  threshold: number,
  unsampled = false,
  ignoreCpu1 = false,
): string[] {
  const out: string[] = [];
  if (unsampled) out.push('no CPU sample (run ended early?)');
  if (run.otherCpu0 > threshold) out.push(`CPU0 ${Math.round(run.otherCpu0)}% other load`);
  if (!ignoreCpu1 && run.otherCpu1 > threshold) out.push(`CPU1 ${Math.round(run.otherCpu1)}% other load`);
  if (run.steal > threshold) out.push(`${Math.round(run.steal)}% steal`);
  return out;
}

/** An HTTP answer, read whole. */
export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** The body as sent, for checks that compare bytes rather than decoded text. */
  bytes: Buffer;
}

/** GET `url` on a fresh connection, with `headers`; rejects after `timeoutMs` without an answer. */
export function fetchOnce(url: string, timeoutMs = 10_000, headers: http.OutgoingHttpHeaders = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.on('end', () => {
        const bytes = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: bytes.toString('utf8'), bytes });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} in ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/**
 * Checks that every target answers 200 `text/plain` with `body` before anything is timed: a fast
 * wrong answer (a 502 page, an empty body) is no result. `logs` says where to look when not.
 */
export async function checkAnswers(targets: readonly Target[], body: string, logs: (t: Target) => string): Promise<void> {
  for (const t of targets) {
    const a = await fetchOnce(t.url);
    if (a.status !== 200 || a.body !== body || !String(a.headers['content-type'] ?? '').startsWith('text/plain')) {
      throw new Error(
        `${t.label} (${t.mode}): expected 200 text/plain ${JSON.stringify(body)}, got ${a.status} ` +
          `${String(a.headers['content-type'])} ${JSON.stringify(a.body.slice(0, 200))}\n${logs(t)}`,
      );
    }
  }
}

/** Offset of the first byte where `a` and `b` differ (the shorter one's length when one is a prefix), or -1 when equal. */
export function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/**
 * Checks that every target answers 200, a `contentType` type and exactly the bytes of `expected`
 * before anything is timed: peers that do the same work must send the same page, or the
 * comparison is of different work. Throws naming the first differing byte and both sides there.
 */
export async function checkSameBody(targets: readonly Target[], expected: Buffer, contentType: string, logs: (t: Target) => string): Promise<void> {
  for (const t of targets) {
    const a = await fetchOnce(t.url);
    const at = firstDifference(a.bytes, expected);
    const type = String(a.headers['content-type'] ?? '');
    if (a.status === 200 && at < 0 && type.startsWith(contentType)) continue;
    const around = (b: Buffer): string => JSON.stringify(b.subarray(Math.max(0, at - 40), at + 40).toString('latin1'));
    throw new Error(
      `${t.label} (${t.mode}): expected 200 ${contentType} with the ${expected.length}-byte page, got ${a.status} ${type}, ` +
        `${a.bytes.length} bytes` +
        (at >= 0 ? `, first difference at byte ${at}: got ${around(a.bytes)}, expected ${around(expected)}` : '') +
        `\n${logs(t)}`,
    );
  }
}

/** The machine a run was made on, for every report's header. */
export interface Machine {
  date: string;
  cpuModel: string;
  cpus: number;
  node: string;
  kernel: string;
  /** 1, 5 and 15 minute load averages when described: on a shared machine, how busy it was. */
  loadavg: number[];
}

/** Describes this machine now. */
export function machine(): Machine {
  let model = os.cpus()[0]?.model ?? 'unknown';
  try {
    model = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? model;
  } catch {
    // not Linux: os.cpus() is what there is
  }
  return { date: new Date().toISOString(), cpuModel: model, cpus: os.cpus().length, node: process.version, kernel: os.release(), loadavg: os.loadavg() };
}
