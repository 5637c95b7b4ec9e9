/**
 * End-to-end benchmark: wrk → nginx (HTTP keep-alive) → FastCGI backend, comparing Lodestone's
 * built-in diagnostic responder with two peers, each with and without FastCGI keep-alive between
 * nginx and the backend:
 *
 * - libfcgi: the canonical C program (bench/peers/hello-libfcgi.c), the usual yardstick.
 * - Node floor: the least a Node FastCGI responder can do per request, a canned reply after
 *   parsing record headers (bench/peers/node-floor.mjs). libfcgi in this setup runs at about
 *   the speed of a Node server that does nothing but read and write, so Lodestone / libfcgi
 *   alone mixes Lodestone's own cost with Node's; Lodestone / Node floor says how much of the
 *   gap to libfcgi is Node's own per-request cost rather than Lodestone's.
 *
 *   npm run bench
 *   BENCH_DURATION=2 BENCH_ROUNDS=1 npm run bench     # a quick look
 *
 * Environment: BENCH_DURATION (s per run, default 10), BENCH_ROUNDS (default 3),
 * BENCH_CONNECTIONS (wrk connections and upstream keep-alive pool size, default 16),
 * BENCH_WARMUP (s per backend and mode, default 2), BENCH_NOISE (% of a CPU of other load that
 * flags a run as noisy, default 10), BENCH_KEEP_TMP=1 (keep the temp dir with configs and logs).
 *
 * Method: one nginx (worker_processes 1) with a server block per backend and mode. nginx and
 * the backend share CPU 0 and wrk has CPU 1, so the numbers compare what one core of server
 * does per request. Rounds interleave the backends (Lodestone, libfcgi, Node floor, then again)
 * so that drift in the machine hits all alike; the Lodestone/libfcgi and Lodestone/Node floor
 * ratios are taken per round, then their medians.
 *
 * Prints a markdown report on stdout and writes it to bench/results/e2e-latest.md. Exit code: 0
 * when valid, 1 on errors, missing programs or wrk errors in a run, 2 on bad settings.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { idleLoad, groupRssKiB, rssKiB, sample, usage, type Sample } from './lib/cpu.js';
import { nginxConfig, type Site } from './lib/nginx.js';
import { checkPrerequisites } from './lib/prereq.js';
import { freePorts, killAllSync, start, stop, tail, waitForPort, type Managed } from './lib/procs.js';
import { Progress, type Step } from './lib/progress.js';
import { BACKEND_LABEL, MODE_LABEL, renderReport, type BackendId, type Measurement, type ModeId } from './lib/report.js';
import { runWrk, wrkProblems } from './lib/wrk.js';

/** The repository root (this file runs from dist/bench). */
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BACKENDS: readonly BackendId[] = ['lodestone', 'libfcgi', 'node-floor'];
const MODES: readonly ModeId[] = ['close', 'keepalive'];
const REQUEST_PATH = '/hello.lua?hello';
// nginx and every backend process on one core, wrk on the other.
const SERVER_CPU = '0';
const CLIENT_CPU = '1';

interface Settings {
  seconds: number;
  rounds: number;
  connections: number;
  warmup: number;
  noiseThreshold: number;
  keepTmp: boolean;
}

class SettingsError extends Error {}

function envInt(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  // wrk takes whole seconds only, so durations are integers like the rest.
  if (!Number.isSafeInteger(n) || n < min) throw new SettingsError(`${name} must be an integer >= ${min} (got ${JSON.stringify(raw)})`);
  return n;
}

function readSettings(): Settings {
  return {
    seconds: envInt('BENCH_DURATION', 10, 1),
    rounds: envInt('BENCH_ROUNDS', 3, 1),
    connections: envInt('BENCH_CONNECTIONS', 16, 1),
    warmup: envInt('BENCH_WARMUP', 2, 0),
    noiseThreshold: envInt('BENCH_NOISE', 10, 1),
    keepTmp: process.env.BENCH_KEEP_TMP === '1',
  };
}

// Module-level so that the exit and signal handlers can clean up whatever main() got to.
let tmpDir: string | null = null;
let keepTmp = false;
let progress: Progress | null = null;

process.on('exit', () => {
  killAllSync();
  if (tmpDir !== null) {
    if (keepTmp) process.stderr.write(`bench: kept ${tmpDir}\n`);
    else fs.rmSync(tmpDir, { recursive: true, force: true });
  }
});
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
  process.on(signal, () => {
    progress?.done();
    process.stderr.write(`bench: ${signal}, stopping\n`);
    // The exit handler kills every process group we started and removes the temp dir.
    process.exit(code);
  });
}

interface HttpAnswer {
  status: number;
  body: string;
  contentType: string;
}

function fetchOnce(url: string): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, contentType: res.headers['content-type'] ?? '' }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} in 5 s`)));
    req.on('error', reject);
  });
}

function programVersion(program: string, args: string[]): string {
  const r = spawnSync(program, args, { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`.trim().split('\n')[0] ?? '?';
}

function cpuModel(): string {
  const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  return m?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
}

/** Runs the benchmark; resolves to the exit code. */
async function main(): Promise<number> {
  let settings: Settings;
  try {
    settings = readSettings();
  } catch (err) {
    if (!(err instanceof SettingsError)) throw err;
    process.stderr.write(`bench: ${err.message}\n`);
    return 2;
  }
  keepTmp = settings.keepTmp;
  const programs = checkPrerequisites();
  if (programs === null) return 1;
  if (os.cpus().length < 2) {
    process.stderr.write('bench: needs 2 CPUs (server on CPU 0, wrk on CPU 1)\n');
    return 1;
  }

  // Measured before we start anything, so the header says what the machine was doing anyway.
  const loadBefore = await idleLoad(1000);
  const loadavg = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lodestone-bench-'));
  const tmp = tmpDir;
  const { seconds, rounds, connections, warmup, noiseThreshold } = settings;

  // --- the libfcgi peer, built fresh so that it matches this machine's libfcgi ---
  const peerBin = path.join(tmp, 'hello-libfcgi');
  const build = spawnSync(programs.gcc, ['-O2', '-o', peerBin, path.join(repoRoot, 'bench/peers/hello-libfcgi.c'), '-lfcgi'], {
    encoding: 'utf8',
  });
  if (build.status !== 0) {
    process.stderr.write(`bench: building the libfcgi peer failed:\n${build.stderr}${build.error?.message ?? ''}\n`);
    return 1;
  }
  // Each kept connection pins a libfcgi process, and nginx may keep a full pool open to this
  // backend (from the keep-alive runs) while the other server block opens new connections.
  const libfcgiProcesses = 2 * connections + 2;

  // --- backends ---
  const [lodPort, libPort, floorPort, ...sitePorts] = await freePorts(BACKENDS.length + BACKENDS.length * MODES.length);
  const backends: Record<BackendId, Managed> = {
    lodestone: start(
      'lodestone',
      process.execPath,
      [path.join(repoRoot, 'bin/lodestone.js'), 'serve', '--diagnostic', '--listen', `tcp:127.0.0.1:${lodPort}`, '--log-level', 'warn'],
      path.join(tmp, 'lodestone.log'),
      { cpus: SERVER_CPU, cwd: repoRoot },
    ),
    libfcgi: start('libfcgi', peerBin, [String(libPort), String(libfcgiProcesses)], path.join(tmp, 'libfcgi.log'), {
      cpus: SERVER_CPU,
      cwd: tmp,
    }),
    'node-floor': start(
      'node-floor',
      process.execPath,
      [path.join(repoRoot, 'bench/peers/node-floor.mjs'), String(floorPort)],
      path.join(tmp, 'node-floor.log'),
      { cpus: SERVER_CPU, cwd: repoRoot },
    ),
  };
  const backendPort: Record<BackendId, number> = { lodestone: lodPort!, libfcgi: libPort!, 'node-floor': floorPort! };
  let nginx: Managed | null = null;

  try {
    // --log-level warn hides Lodestone's "listening" line (and the peers print none), so
    // readiness is "accepts a connection".
    for (const b of BACKENDS) await waitForPort(backendPort[b], backends[b]);

    // --- nginx ---
    const sites = new Map<string, Site & { backendId: BackendId; mode: ModeId }>();
    let i = 0;
    for (const mode of MODES) {
      for (const b of BACKENDS) {
        sites.set(`${b}/${mode}`, {
          listen: sitePorts[i++]!,
          backend: backendPort[b],
          keepalive: mode === 'keepalive' ? connections : null,
          name: `${b.replace(/-/g, '_')}_${mode}`,
          backendId: b,
          mode,
        });
      }
    }
    const site = (b: BackendId, mode: ModeId): Site => sites.get(`${b}/${mode}`)!;
    const conf = path.join(tmp, 'nginx.conf');
    fs.writeFileSync(conf, nginxConfig(tmp, [...sites.values()], process.getuid?.() === 0));
    const errorLog = path.join(tmp, 'error.log');
    // -e: nginx opens its error log before reading the config; keep even that one in tmp.
    nginx = start('nginx', programs.nginx, ['-p', tmp, '-c', conf, '-e', errorLog], path.join(tmp, 'nginx.log'), {
      cpus: SERVER_CPU,
    });
    const nginxRunning = nginx;
    for (const s of sites.values()) await waitForPort(s.listen, nginxRunning);

    const url = (b: BackendId, mode: ModeId): string => `http://127.0.0.1:${site(b, mode).listen}${REQUEST_PATH}`;
    const logsOf = (b: BackendId): string =>
      `--- nginx error.log ---\n${tail(errorLog)}\n--- ${b} log ---\n${tail(backends[b].logFile)}`;

    // --- correctness first: a fast wrong answer (a 502 page, an empty body) is no result ---
    for (const mode of MODES) {
      for (const b of BACKENDS) {
        const answer = await fetchOnce(url(b, mode));
        if (answer.status !== 200 || answer.body !== '123' || !answer.contentType.startsWith('text/plain')) {
          throw new Error(
            `${BACKEND_LABEL[b]} via ${MODE_LABEL[mode]}: expected 200 text/plain "123", got ${answer.status} ` +
              `${answer.contentType} ${JSON.stringify(answer.body.slice(0, 200))}\n${logsOf(b)}`,
          );
        }
      }
    }

    // --- plan ---
    const steps: Step[] = [];
    const label = (b: BackendId, mode: ModeId): string => `${BACKEND_LABEL[b]}, ${MODE_LABEL[mode]}`;
    if (warmup > 0) for (const mode of MODES) for (const b of BACKENDS) steps.push({ label: `warm-up ${label(b, mode)}`, seconds: warmup });
    for (let r = 1; r <= rounds; r++) {
      for (const mode of MODES) for (const b of BACKENDS) steps.push({ label: `round ${r}/${rounds} ${label(b, mode)}`, seconds });
    }
    progress = new Progress(steps);
    const prog = progress;
    let step = 0;

    const wrkLog = path.join(tmp, 'wrk.log');
    if (warmup > 0) {
      for (const mode of MODES) {
        for (const b of BACKENDS) {
          prog.begin(step++);
          const r = await runWrk({ url: url(b, mode), connections, seconds: warmup, cpus: CLIENT_CPU, logFile: wrkLog });
          // Not part of the result, but errors this early point at a broken set-up.
          const problems = wrkProblems(r);
          if (problems.length > 0) prog.note(`bench: warm-up of ${label(b, mode)}: ${problems.join('; ')}\n${logsOf(b)}`);
        }
      }
    }

    const measurements: Measurement[] = [];
    // CPU is sampled inside the run, away from its ends: wrk must still be alive to be counted.
    const marginMs = Math.min(1, seconds / 4) * 1000;
    for (let round = 1; round <= rounds; round++) {
      for (const mode of MODES) {
        for (const b of BACKENDS) {
          prog.begin(step++);
          const nginxPid = nginxRunning.pid;
          const backendPid = backends[b].pid;
          // Filled in by timers while wrk runs (an object, so the compiler does not narrow it to null).
          const cpuWindow: { first?: Sample; last?: Sample } = {};
          let wrkPid = 0;
          const timers: NodeJS.Timeout[] = [];
          let r;
          try {
            r = await runWrk({
              url: url(b, mode),
              connections,
              seconds,
              cpus: CLIENT_CPU,
              logFile: wrkLog,
              onStart: (w) => {
                wrkPid = w.pid;
                const pgids = [nginxPid, backendPid, w.pid];
                timers.push(setTimeout(() => (cpuWindow.first = sample(pgids)), marginMs));
                timers.push(setTimeout(() => (cpuWindow.last = sample(pgids)), seconds * 1000 - marginMs));
              },
            });
          } finally {
            for (const t of timers) clearTimeout(t);
          }
          const u = cpuWindow.first && cpuWindow.last ? usage(cpuWindow.first, cpuWindow.last, [nginxPid, backendPid], [wrkPid]) : null;
          const m: Measurement = {
            round,
            backend: b,
            mode,
            wrk: r,
            nginxCpu: u?.groups.get(nginxPid) ?? NaN,
            backendCpu: u?.groups.get(backendPid) ?? NaN,
            wrkCpu: u?.groups.get(wrkPid) ?? NaN,
            otherCpu0: u?.otherCpu0 ?? NaN,
            otherCpu1: u?.otherCpu1 ?? NaN,
            steal: u?.steal ?? NaN,
            noise: [],
            problems: wrkProblems(r),
          };
          if (u === null) m.noise.push('no CPU sample (run ended early?)');
          if (m.otherCpu0 > noiseThreshold) m.noise.push(`CPU0 ${Math.round(m.otherCpu0)}% other load`);
          if (m.otherCpu1 > noiseThreshold) m.noise.push(`CPU1 ${Math.round(m.otherCpu1)}% other load`);
          if (m.steal > noiseThreshold) m.noise.push(`${Math.round(m.steal)}% steal`);
          if (m.problems.length > 0) {
            prog.note(`bench: INVALID run (${label(b, mode)}, round ${round}): ${m.problems.join('; ')}\n${r.raw}\n${logsOf(b)}`);
          }
          measurements.push(m);
        }
      }
    }
    prog.done();

    // Memory after all the load: what a long-running worker settles at.
    const lodestoneRssKiB = rssKiB(backends.lodestone.pid);
    const libfcgiRss = groupRssKiB(backends.libfcgi.pid);
    const nodeFloorRssKiB = rssKiB(backends['node-floor'].pid);

    const report = renderReport(
      {
        date: new Date().toISOString(),
        node: process.version,
        nginx: programVersion(programs.nginx, ['-v']).replace(/^nginx version:\s*/, ''),
        cpuModel: cpuModel(),
        cpuCount: os.cpus().length,
        seconds,
        rounds,
        warmup,
        connections,
        libfcgiProcesses,
        loadBefore,
        loadavg,
        lodestoneRssKiB,
        nodeFloorRssKiB,
        libfcgiRss,
        noiseThreshold,
      },
      measurements,
    );
    process.stdout.write(report);
    const resultsDir = path.join(repoRoot, 'bench/results');
    fs.mkdirSync(resultsDir, { recursive: true });
    fs.writeFileSync(path.join(resultsDir, 'e2e-latest.md'), report);
    process.stderr.write(`bench: wrote ${path.relative(process.cwd(), path.join(resultsDir, 'e2e-latest.md')) || 'e2e-latest.md'}\n`);
    if (measurements.some((m) => m.problems.length > 0)) {
      process.stderr.write('bench: the run is INVALID (wrk reported errors, see above)\n');
      return 1;
    }
    return 0;
  } finally {
    progress?.done();
    // nginx first: its kept connections would otherwise hold up the backends' graceful stop.
    if (nginx !== null) await stop(nginx);
    await Promise.all(BACKENDS.map((b) => stop(backends[b])));
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    progress?.done();
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
