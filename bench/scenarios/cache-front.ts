/**
 * The cache-front scenario: what `scripts/cache-front.lua` (and `.js`) buys over PHP-FPM alone,
 * for a page that costs PHP about 2 ms of CPU (BENCH_PAGE_MS).
 *
 *   wrk -> nginx -> php-fpm                                                  (direct)
 *   wrk -> nginx -> lodestone --script cache-front.lua -> php-fpm on a miss  (warm cache: hits)
 *   the same with a session cookie: every request relayed to php-fpm          (bypass: the miss path)
 *
 * FastCGI keep-alive everywhere (nginx `keepalive`, Lodestone's pool). PHP-FPM gets pm static
 * with enough children for every connection that can be kept to it (nginx's and Lodestone's).
 * The cache is warmed, and a hit checked (`X-Cache: HIT`, the same body as PHP's), before timing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { groupRssKiB } from '../lib/cpu.js';
import { fetchOnce, loadSettings, machine, measure, SERVER_CPU, type Context, type Target } from '../lib/harness.js';
import { repoRoot } from '../../test/shared/repo.js';
import { startNginxFront, type Site } from '../lib/nginx.js';
import { lodestoneCommand, programVersion } from '../lib/peers.js';
import { phpFpmCommand } from '../lib/php-fpm.js';
import type { Programs } from '../lib/prereq.js';
import { freePorts, start, stop, tail, waitForListen, type Managed } from '../lib/procs.js';
import { CPU_PER_REQUEST_NOTE, wrkReport, type Rss } from '../lib/report.js';
import type { Scenario, ScenarioResult } from '../lib/scenario.js';
import { envInt } from '../lib/settings.js';

const PAGE = '/page.php';
/** What the bypass rows send: scripts/cache-front.* relay a request with a PHP session to PHP. */
const SESSION_COOKIE = 'PHPSESSID=bench';
/** Lodestone's pool to PHP-FPM (per Lodestone). */
const POOL_SIZE = 4;

async function run(ctx: Context, programs: Programs): Promise<ScenarioResult> {
  const settings = loadSettings();
  const pageMs = envInt('BENCH_PAGE_MS', 2, 0);
  const { tmp } = ctx;
  const docroot = path.join(tmp, 'www');
  fs.mkdirSync(docroot);
  fs.copyFileSync(path.join(repoRoot, 'bench/peers/slow-page.php'), path.join(docroot, 'page.php'));
  const [phpPort, luaPort, jsPort, ...sitePorts] = await freePorts(6);
  // nginx keeps up to `connections` to each upstream; each Lodestone's pool up to POOL_SIZE more.
  const children = 2 * settings.connections + 2 * POOL_SIZE;
  const procs: Managed[] = [];
  let nginx: Managed | null = null;
  try {
    const [phpCmd, phpArgs] = phpFpmCommand(programs.phpFpm!, tmp, phpPort!, children);
    const php = start('php-fpm', phpCmd, phpArgs, path.join(tmp, 'php-fpm.log'), { cpus: SERVER_CPU });
    procs.push(php);
    const lodestone = (name: string, port: number, script: string): Managed => {
      const config = path.join(tmp, `${name}.json`);
      fs.writeFileSync(config, JSON.stringify({ backends: { php: { servers: [`127.0.0.1:${phpPort}`], maxConnections: POOL_SIZE } } }));
      const [cmd, args] = lodestoneCommand(`tcp:127.0.0.1:${port}`, '--config', config, '--script', path.join(repoRoot, 'scripts', script));
      const m = start(name, cmd, args, path.join(tmp, `${name}.log`), { cpus: SERVER_CPU, cwd: repoRoot });
      procs.push(m);
      return m;
    };
    const backends: Array<{ id: string; label: string; port: number; proc: Managed; lodestone: boolean }> = [
      { id: 'php-fpm', label: 'PHP-FPM direct', port: phpPort!, proc: php, lodestone: false },
      { id: 'cache-front.lua', label: 'Lodestone cache-front.lua (hits)', port: luaPort!, proc: lodestone('cache-front-lua', luaPort!, 'cache-front.lua'), lodestone: true },
      { id: 'cache-front.js', label: 'Lodestone cache-front.js (hits)', port: jsPort!, proc: lodestone('cache-front-js', jsPort!, 'cache-front.js'), lodestone: true },
    ];
    for (const b of backends) await waitForListen(b.port, b.proc);

    const sites: Site[] = backends.map((b, i) => ({
      listen: sitePorts[i]!,
      backend: b.port,
      keepalive: settings.connections,
      name: b.id.replace(/[-.]/g, '_'),
      root: docroot,
    }));
    // The page's cost reaches PHP as a FastCGI param ($_SERVER), through Lodestone's pass() too.
    const { proc: front, errorLog } = await startNginxFront(programs.nginx!, tmp, sites, {
      configure: (conf) => conf.replace('http {', `http {\n  fastcgi_param BENCH_PAGE_MS ${pageMs};`),
    });
    nginx = front;
    const targets: Target[] = backends.map((b, i) => ({
      id: b.id,
      label: b.label,
      mode: 'FastCGI keep-alive',
      front: 'nginx',
      lodestone: b.lodestone,
      url: `http://127.0.0.1:${sites[i]!.listen}${PAGE}`,
      frontProc: front,
      // Lodestone's rows: its CPU; PHP-FPM's CPU on a hit is ~0 and on the direct row is the page.
      backendProc: b.proc,
    }));
    // The miss path beside the hits (issue 23): a session cookie sends every request through
    // to PHP with pass(..., {emit = true}), as a logged-in user's requests go. Its CPU per
    // request is Lodestone's relay alone (PHP's page is the direct row's).
    const session = path.join(tmp, 'session.lua');
    fs.writeFileSync(session, `wrk.headers["Cookie"] = "${SESSION_COOKIE}"\n`);
    for (const [i, b] of backends.entries()) {
      if (!b.lodestone) continue;
      targets.push({ ...targets[i]!, id: `${b.id}/bypass`, label: b.label.replace('(hits)', '(bypass: session cookie, relayed to PHP)'), script: session });
    }
    const logs = (): string => `--- nginx ---\n${tail(errorLog)}\n${procs.map((m) => `--- ${m.name} ---\n${tail(m.logFile)}`).join('\n')}`;

    // Correctness and a warm cache: PHP's page, then a miss that fills the cache, then a hit.
    const direct = await fetchOnce(targets[0]!.url);
    if (direct.status !== 200 || !direct.body.includes('rendered in')) throw new Error(`php-fpm: got ${direct.status} ${direct.body.slice(0, 200)}\n${logs()}`);
    for (const t of targets.slice(1)) {
      if (t.script) {
        const bypass = await fetchOnce(t.url, 10_000, { Cookie: SESSION_COOKIE });
        if (bypass.status !== 200 || bypass.headers['x-cache'] !== 'BYPASS' || !bypass.body.includes('rendered in')) {
          throw new Error(`${t.label}: not relayed (${String(bypass.headers['x-cache'])}, ${bypass.status})\n${logs()}`);
        }
        continue;
      }
      const first = await fetchOnce(t.url);
      const again = await fetchOnce(t.url);
      if (again.status !== 200 || again.headers['x-cache'] !== 'HIT' || again.body !== first.body || !first.body.includes('rendered in')) {
        throw new Error(`${t.label}: no cache hit (${String(first.headers['x-cache'])} then ${String(again.headers['x-cache'])}, ${again.status})\n${logs()}`);
      }
    }

    const runs = await measure(ctx, 'cache-front', targets, settings);
    const rss = new Map<number, Rss>(procs.map((p) => [p.pid, groupRssKiB(p.pid)]));
    const m = machine();
    const notes = [
      `Versions: ${programVersion(programs.nginx!, ['-v']).replace(/^nginx version:\s*/, '')}; ${programVersion(programs.phpFpm!, ['-v']).replace(/\s*\(built:.*$/, '')}`,
      `The PHP page (bench/peers/slow-page.php) spends ${pageMs} ms of CPU per request and says \`Cache-Control: public, max-age=3600\`; ` +
        `PHP-FPM \`pm = static\`, ${children} children (nginx's pools and Lodestone's ${POOL_SIZE} connections each)`,
      'Lodestone: `lodestone serve --workers 0 --script scripts/cache-front.lua` (or `.js`) with the embedded cache and a ' +
        'backend pool to PHP-FPM; the cache is warmed and a hit checked before timing, so the timed requests are hits',
      `The bypass rows send \`Cookie: ${SESSION_COOKIE}\` (a wrk script): the script relays every such request to PHP with ` +
        '`pass(..., {emit = true})`, the miss path; their "server CPU / req" is the relay alone',
      'server RSS of the PHP-FPM row: all its children, which the Lodestone rows also keep (their misses go there)',
      CPU_PER_REQUEST_NOTE,
    ];
    return wrkReport({
      scenario: 'cache-front',
      heading: 'cache-front: a Lodestone cache in front of PHP-FPM',
      machine: m,
      settings,
      notes,
      targets,
      runs,
      baselines: [{ id: 'php-fpm', heading: '/ PHP-FPM direct' }],
      rss,
      per: 'target',
      chartTitle: `cache-front: req/s, a ${pageMs} ms PHP page (median of ${settings.rounds}, whiskers min–max)`,
      onOneCore: 'servers',
    });
  } finally {
    if (nginx) await stop(nginx);
    for (const p of procs.reverse()) await stop(p);
  }
}

export const cacheFront: Scenario = {
  name: 'cache-front',
  summary: 'scripts/cache-front.lua/.js serving hits vs PHP-FPM rendering a 2 ms page',
  needs: ['nginx', 'wrk', 'taskset', 'php-fpm'],
  run,
};
