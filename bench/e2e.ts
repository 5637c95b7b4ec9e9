/**
 * End-to-end benchmark: wrk → nginx (HTTP keep-alive) → FastCGI backend, comparing three
 * Lodestone backends with two peers, each with and without FastCGI keep-alive between nginx and
 * the backend. Every backend answers 200 `text/plain` "123":
 *
 * - Lodestone (diagnostic): the built-in diagnostic responder (`--diagnostic`, `?hello`), the
 *   server without any script engine.
 * - Lodestone Lua hello / JS hello: `lodestone serve --root DIR` running DIR/hello.lua or
 *   DIR/hello.js (set Content-Type, `write("123")`): a real script request, with the script
 *   cache, the sandbox and the limits. Each has its own Lodestone process. The goal set for
 *   them: Lua hello at least as fast as libfcgi with FastCGI keep-alive.
 * - libfcgi: the canonical C program (bench/peers/hello-libfcgi.c), the usual yardstick.
 * - PHP-FPM: `php-fpm -F` with a one-pool config written for the run, serving
 *   bench/peers/hello.php: what the edge logic Lodestone runs usually sits in front of.
 * - Node floor: the least a Node FastCGI responder can do per request, a canned reply after
 *   parsing record headers (bench/peers/node-floor.mjs). libfcgi in this setup runs at about
 *   the speed of a Node server that does nothing but read and write, so Lodestone / libfcgi
 *   alone mixes Lodestone's own cost with Node's; Lodestone / Node floor says how much of the
 *   gap to libfcgi is Node's own per-request cost rather than Lodestone's.
 *
 *   npm run bench
 *   BENCH_DURATION=2 BENCH_ROUNDS=1 npm run bench     # a quick look
 *   BENCH_BACKENDS=lodestone-lua,libfcgi npm run bench
 *
 * Environment: BENCH_BACKENDS (comma-separated subset of lodestone-diagnostic, lodestone-lua,
 * lodestone-js, libfcgi, php-fpm, node-floor; default all), BENCH_DURATION (s per run, default 10),
 * BENCH_ROUNDS (default 3), BENCH_CONNECTIONS (wrk connections and upstream keep-alive pool
 * size, default 16), BENCH_WARMUP (s per backend and mode, default 2), BENCH_NOISE (% of a CPU of other load that
 * flags a run as noisy, default 10), BENCH_KEEP_TMP=1 (keep the temp dir with configs and logs).
 *
 * Method: one nginx (worker_processes 1) with a server block per backend and mode. nginx and
 * the backend share CPU 0 and wrk has CPU 1, so the numbers compare what one core of server
 * does per request. Rounds interleave the backends (each Lodestone backend, libfcgi, PHP-FPM,
 * Node floor, then again) so that drift in the machine hits all alike; each Lodestone backend's
 * ratios to libfcgi, PHP-FPM and the Node floor are taken per round, then their medians (and range).
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
import { idleLoad, groupRssKiB, sample, usage, type Sample } from './lib/cpu.js';
import { nginxConfig, type Site } from './lib/nginx.js';
import { checkPrerequisites } from './lib/prereq.js';
import { phpFpmCommand } from './lib/php-fpm.js';
import { freePorts, killAllSync, start, stop, tail, waitForPort, type Managed } from './lib/procs.js';
import { Progress, type Step } from './lib/progress.js';
import {
  BACKEND_IDS,
  BACKEND_LABEL,
  MODE_LABEL,
  renderReport,
  type BackendId,
  type Measurement,
  type ModeId,
  type ReportHeader,
} from './lib/report.js';
import { runWrk, wrkProblems } from './lib/wrk.js';
import { SettingsError, envInt } from './lib/settings.js';

/** The repository root (this file runs from dist/bench). */
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MODES: readonly ModeId[] = ['close', 'keepalive'];
// The diagnostic responder answers `?hello` with "123"; the peers answer anything with it.
const REQUEST_PATH: Record<BackendId, string> = {
  'lodestone-diagnostic': '/hello.lua?hello',
  'lodestone-lua': '/hello.lua?hello',
  'lodestone-js': '/hello.js?hello',
  libfcgi: '/hello.lua?hello',
  'php-fpm': '/hello.php?hello',
  'node-floor': '/hello.lua?hello',
};
// The script backends' pages: the same bytes as the others (the default type would be text/html).
const HELLO_SCRIPTS: Record<string, string> = {
  'hello.lua': '-- bench/e2e.ts: the benchmark page, the same bytes as the other backends send.\nresponse.headers["Content-Type"] = "text/plain"\nwrite("123")\n',
  'hello.js': "// bench/e2e.ts: the benchmark page, the same bytes as the other backends send.\nresponse.headers['Content-Type'] = 'text/plain';\nwrite('123');\n",
};
// nginx and every backend process on one core, wrk on the other.
const SERVER_CPU = '0';
const CLIENT_CPU = '1';

interface Settings {
  backends: BackendId[];
  seconds: number;
  rounds: number;
  connections: number;
  warmup: number;
  noiseThreshold: number;
  keepTmp: boolean;
}

/** BENCH_BACKENDS: names from {@link BACKEND_IDS}, comma-separated; run in the canonical order. */
function envBackends(): BackendId[] {
  const raw = process.env.BENCH_BACKENDS;
  if (raw === undefined || raw.trim() === '') return [...BACKEND_IDS];
  const names = raw.split(',').map((n) => n.trim()).filter((n) => n !== '');
  const unknown = names.filter((n) => !(BACKEND_IDS as readonly string[]).includes(n));
  if (unknown.length > 0 || names.length === 0) {
    throw new SettingsError(`BENCH_BACKENDS: unknown backend(s) ${JSON.stringify(unknown)}; choose from ${BACKEND_IDS.join(', ')}`);
  }
  return BACKEND_IDS.filter((b) => names.includes(b));
}

function readSettings(): Settings {
  return {
    backends: envBackends(),
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
  const programs = checkPrerequisites(settings.backends.includes('php-fpm'));
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
  const { backends: BACKENDS, seconds, rounds, connections, warmup, noiseThreshold } = settings;

  // --- the libfcgi peer, built fresh so that it matches this machine's libfcgi ---
  const peerBin = path.join(tmp, 'hello-libfcgi');
  if (BACKENDS.includes('libfcgi')) {
    const build = spawnSync(programs.gcc, ['-O2', '-o', peerBin, path.join(repoRoot, 'bench/peers/hello-libfcgi.c'), '-lfcgi'], {
      encoding: 'utf8',
    });
    if (build.status !== 0) {
      process.stderr.write(`bench: building the libfcgi peer failed:\n${build.stderr}${build.error?.message ?? ''}\n`);
      return 1;
    }
  }
  // --- the script backends' root ---
  const scriptRoot = path.join(tmp, 'scripts');
  fs.mkdirSync(scriptRoot);
  for (const [name, source] of Object.entries(HELLO_SCRIPTS)) fs.writeFileSync(path.join(scriptRoot, name), source);
  fs.copyFileSync(path.join(repoRoot, 'bench/peers/hello.php'), path.join(scriptRoot, 'hello.php'));
  // Each kept connection pins a libfcgi process, and nginx may keep a full pool open to this
  // backend (from the keep-alive runs) while the other server block opens new connections.
  const libfcgiProcesses = 2 * connections + 2;
  // The same holds for a PHP-FPM child, which serves a kept connection until nginx closes it:
  // with one child (pm.max_children = 1), 15 of nginx's 16 kept connections wait in the listen
  // queue forever, and wrk measures the one connection that is served.
  const phpFpmChildren = libfcgiProcesses;

  // --- backends ---
  const ports = await freePorts(BACKENDS.length + BACKENDS.length * MODES.length);
  const backendPort = {} as Record<BackendId, number>;
  for (const b of BACKENDS) backendPort[b] = ports.shift()!;
  const sitePorts = ports;
  const lodestone = (port: number, ...args: string[]): [string, string[]] => [
    process.execPath,
    [path.join(repoRoot, 'bin/lodestone.js'), 'serve', '--listen', `tcp:127.0.0.1:${port}`, '--log-level', 'warn', ...args],
  ];
  const commandOf = (b: BackendId, port: number): [string, string[]] => {
    switch (b) {
      case 'lodestone-diagnostic':
        return lodestone(port, '--diagnostic');
      case 'lodestone-lua':
      case 'lodestone-js':
        return lodestone(port, '--root', scriptRoot);
      case 'libfcgi':
        return [peerBin, [String(port), String(libfcgiProcesses)]];
      case 'php-fpm':
        return phpFpmCommand(programs.phpFpm!, tmp, port, phpFpmChildren);
      case 'node-floor':
        return [process.execPath, [path.join(repoRoot, 'bench/peers/node-floor.mjs'), String(port)]];
    }
  };
  const backends = {} as Record<BackendId, Managed>;
  for (const b of BACKENDS) {
    const [command, args] = commandOf(b, backendPort[b]);
    backends[b] = start(b, command, args, path.join(tmp, `${b}.log`), { cpus: SERVER_CPU, cwd: b === 'libfcgi' ? tmp : repoRoot });
  }
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
          root: b === 'lodestone-lua' || b === 'lodestone-js' || b === 'php-fpm' ? scriptRoot : undefined,
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

    const url = (b: BackendId, mode: ModeId): string => `http://127.0.0.1:${site(b, mode).listen}${REQUEST_PATH[b]}`;
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
    const rss: ReportHeader['rss'] = {};
    for (const b of BACKENDS) rss[b] = groupRssKiB(backends[b].pid);
    const paths: ReportHeader['paths'] = {};
    for (const b of BACKENDS) paths[b] = REQUEST_PATH[b];

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
        phpFpm: BACKENDS.includes('php-fpm')
          ? { version: programVersion(programs.phpFpm!, ['-v']).replace(/\s*\(built:.*$/, ''), children: phpFpmChildren }
          : null,
        loadBefore,
        loadavg,
        rss,
        paths,
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
