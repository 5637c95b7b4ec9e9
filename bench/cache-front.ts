/**
 * The cache-in-front-of-PHP benchmark: what `scripts/cache-front.lua` (and `.js`) buys over
 * PHP-FPM alone, for a page that costs PHP about 2 ms of CPU.
 *
 *   wrk -> nginx -> php-fpm                                   (direct)
 *   wrk -> nginx -> lodestone --script cache-front.lua -> php-fpm on a miss   (warm cache: hits)
 *
 *   npm run bench:cache-front
 *   BENCH_DURATION=3 BENCH_ROUNDS=1 npm run bench:cache-front    # a quick look
 *
 * Environment: BENCH_DURATION (s per run, default 10), BENCH_ROUNDS (default 3), BENCH_CONNECTIONS
 * (wrk connections and nginx keep-alive connections per upstream, default 16), BENCH_WARMUP (s per
 * target, default 2), BENCH_PAGE_MS (CPU ms the PHP page spends, default 2), BENCH_KEEP_TMP=1.
 *
 * Method: nginx, php-fpm and Lodestone pinned to CPU 0, wrk to CPU 1; FastCGI keep-alive
 * everywhere (nginx `keepalive`, Lodestone's pool). PHP-FPM gets pm static with enough children
 * for every connection that can be kept to it (nginx's and Lodestone's), the OPcache of the
 * system's php.ini. The cache is warmed, and a hit checked (`X-Cache: HIT`, the same body as
 * PHP's), before timing. Rounds interleave the targets; ratios are computed per round.
 *
 * Prints a markdown report and writes it to bench/results/cache-front-latest.md. Exit code: 0
 * when valid, 1 on errors, missing programs or wrk errors, 2 on bad settings.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { idleLoad } from './lib/cpu.js';
import { nginxConfig, type Site } from './lib/nginx.js';
import { phpFpmCommand } from './lib/php-fpm.js';
import { checkPrerequisites } from './lib/prereq.js';
import { freePorts, killAllSync, start, stop, tail, waitForPort, type Managed } from './lib/procs.js';
import { Progress, type Step } from './lib/progress.js';
import { median } from './lib/report.js';
import { SettingsError, envInt } from './lib/settings.js';
import { runWrk, wrkProblems, type WrkResult } from './lib/wrk.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SERVER_CPU = '0';
const CLIENT_CPU = '1';
const PAGE = '/page.php';

const TARGETS = ['php-fpm', 'cache-front.lua', 'cache-front.js'] as const;
type Target = (typeof TARGETS)[number];
const LABEL: Record<Target, string> = {
  'php-fpm': 'PHP-FPM direct',
  'cache-front.lua': 'cache-front.lua (hits)',
  'cache-front.js': 'cache-front.js (hits)',
};

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function get(url: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`timeout: ${url}`)));
  });
}

async function main(): Promise<number> {
  let seconds: number, rounds: number, connections: number, warmup: number, pageMs: number;
  try {
    seconds = envInt('BENCH_DURATION', 10, 1);
    rounds = envInt('BENCH_ROUNDS', 3, 1);
    connections = envInt('BENCH_CONNECTIONS', 16, 1);
    warmup = envInt('BENCH_WARMUP', 2, 0);
    pageMs = envInt('BENCH_PAGE_MS', 2, 0);
  } catch (err) {
    if (!(err instanceof SettingsError)) throw err;
    process.stderr.write(`bench: ${err.message}\n`);
    return 2;
  }
  const programs = checkPrerequisites(true);
  if (programs === null) return 1;
  if (os.cpus().length < 2) {
    process.stderr.write('bench: needs 2 CPUs (servers on CPU 0, wrk on CPU 1)\n');
    return 1;
  }
  const loadBefore = await idleLoad(1000);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lodestone-bench-cache-'));
  const docroot = path.join(tmp, 'www');
  fs.mkdirSync(docroot);
  fs.copyFileSync(path.join(repoRoot, 'bench/peers/slow-page.php'), path.join(docroot, 'page.php'));

  const [phpPort, luaPort, jsPort, ...sitePorts] = await freePorts(3 + TARGETS.length);
  // nginx keeps up to `connections` to each upstream; Lodestone's pool up to `poolSize` more.
  const poolSize = 4;
  const children = 2 * connections + 2 * poolSize;
  const managed: Managed[] = [];
  let nginx: Managed | null = null;
  let bar: Progress | null = null;
  try {
    const [phpCmd, phpArgs] = phpFpmCommand(programs.phpFpm!, tmp, phpPort!, children);
    const php = start('php-fpm', phpCmd, phpArgs, path.join(tmp, 'php-fpm.log'), { cpus: SERVER_CPU });
    managed.push(php);
    const lodestone = (name: string, port: number, script: string): Managed => {
      const config = path.join(tmp, `${name}.json`);
      fs.writeFileSync(
        config,
        JSON.stringify({ backends: { php: { servers: [`127.0.0.1:${phpPort}`], maxConnections: poolSize } }, logLevel: 'warn' }),
      );
      const args = [path.join(repoRoot, 'bin/lodestone.js'), 'serve', '--listen', `tcp:127.0.0.1:${port}`, '--config', config];
      const m = start(name, process.execPath, [...args, '--script', path.join(repoRoot, 'scripts', script)], path.join(tmp, `${name}.log`), {
        cpus: SERVER_CPU,
        cwd: repoRoot,
      });
      managed.push(m);
      return m;
    };
    const backend: Record<Target, [number, Managed]> = {
      'php-fpm': [phpPort!, php],
      'cache-front.lua': [luaPort!, lodestone('lodestone-lua', luaPort!, 'cache-front.lua')],
      'cache-front.js': [jsPort!, lodestone('lodestone-js', jsPort!, 'cache-front.js')],
    };
    for (const t of TARGETS) await waitForPort(backend[t][0], backend[t][1]);

    const sites: Site[] = TARGETS.map((t, i) => ({
      listen: sitePorts[i]!,
      backend: backend[t][0],
      keepalive: connections,
      name: t.replace(/[-.]/g, '_'),
      root: docroot,
    }));
    const conf = path.join(tmp, 'nginx.conf');
    // The page's cost reaches PHP as a FastCGI param ($_SERVER), through Lodestone's pass() too.
    fs.writeFileSync(conf, nginxConfig(tmp, sites, process.getuid?.() === 0).replace('http {', `http {\n  fastcgi_param BENCH_PAGE_MS ${pageMs};`));
    const errorLog = path.join(tmp, 'error.log');
    nginx = start('nginx', programs.nginx, ['-p', tmp, '-c', conf, '-e', errorLog], path.join(tmp, 'nginx.log'), { cpus: SERVER_CPU });
    for (const s of sites) await waitForPort(s.listen, nginx);
    const url = (t: Target): string => `http://127.0.0.1:${sites[TARGETS.indexOf(t)]!.listen}${PAGE}`;
    const logs = (): string => `--- nginx ---\n${tail(errorLog)}\n--- php-fpm ---\n${tail(php.logFile)}\n${managed.map((m) => `--- ${m.name} ---\n${tail(m.logFile)}`).join('\n')}`;

    // Correctness and a warm cache: PHP's page, then a miss that fills the cache, then a hit.
    const direct = await get(url('php-fpm'));
    if (direct.status !== 200 || !direct.body.includes('rendered in')) throw new Error(`php-fpm: got ${direct.status} ${direct.body.slice(0, 200)}\n${logs()}`);
    for (const t of ['cache-front.lua', 'cache-front.js'] as const) {
      const first = await get(url(t));
      const again = await get(url(t));
      if (again.status !== 200 || again.headers['x-cache'] !== 'HIT' || again.body !== first.body || !first.body.includes('rendered in')) {
        throw new Error(`${t}: no cache hit (${String(first.headers['x-cache'])} then ${String(again.headers['x-cache'])}, ${again.status})\n${logs()}`);
      }
    }

    const steps: Step[] = [];
    for (const t of TARGETS) if (warmup > 0) steps.push({ label: `warm-up ${LABEL[t]}`, seconds: warmup });
    for (let r = 1; r <= rounds; r++) for (const t of TARGETS) steps.push({ label: `round ${r}/${rounds} ${LABEL[t]}`, seconds });
    bar = new Progress(steps);
    const progress = bar;
    let step = 0;
    const results: Record<Target, WrkResult[]> = { 'php-fpm': [], 'cache-front.lua': [], 'cache-front.js': [] };
    const run = async (t: Target, secs: number): Promise<WrkResult> => {
      progress.begin(step++);
      const r = await runWrk({ url: url(t), connections, seconds: secs, cpus: CLIENT_CPU, logFile: path.join(tmp, 'wrk.log') });
      const problems = wrkProblems(r);
      if (problems.length > 0) throw new Error(`${LABEL[t]}: ${problems.join(', ')}\n${logs()}`);
      return r;
    };
    for (const t of TARGETS) if (warmup > 0) await run(t, warmup);
    for (let r = 0; r < rounds; r++) for (const t of TARGETS) results[t].push(await run(t, seconds));
    progress.done();

    const report = render({ results, rounds, seconds, connections, pageMs, children, loadBefore });
    process.stdout.write(report);
    fs.mkdirSync(path.join(repoRoot, 'bench/results'), { recursive: true });
    fs.writeFileSync(path.join(repoRoot, 'bench/results/cache-front-latest.md'), report);
    return 0;
  } catch (err) {
    bar?.done();
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    return 1;
  } finally {
    if (nginx) await stop(nginx);
    for (const m of managed.reverse()) await stop(m);
    if (process.env.BENCH_KEEP_TMP === '1') process.stderr.write(`bench: kept ${tmp}\n`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  }
}

interface RenderInput {
  results: Record<Target, WrkResult[]>;
  rounds: number;
  seconds: number;
  connections: number;
  pageMs: number;
  children: number;
  loadBefore: number;
}

function render(h: RenderInput): string {
  const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
  const ms = (n: number): string => `${n.toFixed(2)} ms`;
  const lines = [
    '# Cache in front of PHP',
    '',
    `Run ${new Date().toISOString()} on ${os.cpus()[0]?.model ?? '?'} (${os.cpus().length} CPUs), Node ${process.version}.`,
    `wrk -> nginx (keep-alive) -> backend; servers on CPU ${SERVER_CPU}, wrk on CPU ${CLIENT_CPU}, ${h.connections} connections,`,
    `${h.rounds} interleaved rounds of ${h.seconds} s. The PHP page spends ${h.pageMs} ms of CPU per request (pm static, ${h.children} children).`,
    `Other load before the run: ${h.loadBefore.toFixed(0)}% of a CPU.`,
    '',
    '| target | req/s (median) | min - max | p50 | p99 | / PHP-FPM direct (per-round median) |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  const direct = h.results['php-fpm'];
  for (const t of TARGETS) {
    const rs = h.results[t];
    const rps = rs.map((r) => r.rps);
    const ratio = t === 'php-fpm' ? '1.00' : `${median(rs.map((r, i) => r.rps / direct[i]!.rps)).toFixed(1)}x`;
    lines.push(
      `| ${LABEL[t]} | ${fmt(median(rps))} | ${fmt(Math.min(...rps))} - ${fmt(Math.max(...rps))} | ${ms(median(rs.map((r) => r.p50)))} | ${ms(median(rs.map((r) => r.p99)))} | ${ratio} |`,
    );
  }
  lines.push('', 'Per round (req/s): ' + TARGETS.map((t) => `${LABEL[t]}: ${h.results[t].map((r) => fmt(r.rps)).join(', ')}`).join('; ') + '.', '');
  return lines.join('\n') + '\n';
}

process.on('SIGINT', () => {
  killAllSync();
  process.exit(130);
});
process.exitCode = await main();
