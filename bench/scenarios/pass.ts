/**
 * The pass scenario (issue 23): what relaying through Lodestone's pass() costs against nginx
 * talking to PHP-FPM directly, for a hello page and a 100 KiB page.
 *
 *   wrk -> nginx -> php-fpm                                              (direct)
 *   wrk -> nginx -> lodestone --script pass-*.{lua,js} -> php-fpm      (relayed)
 *
 * Four relays, each its own Lodestone process: `pass("php", { emit = true })` (streamed to the
 * client as it arrives) and `emit(pass("php"))` (read whole, then sent), in Lua and in JS. The
 * control is the Node relay floor (bench/peers/node-relay.mjs): nginx's records forwarded to
 * PHP-FPM byte for byte on kept connections and back, no script: what Node itself costs to
 * relay, the floor under pass(). The
 * request's params go to PHP as nginx sent them (SCRIPT_FILENAME names the PHP page), as a
 * front controller in front of PHP does. FastCGI keep-alive everywhere (nginx `keepalive`,
 * Lodestone's pool); PHP-FPM gets pm static with a child for every connection that can be kept
 * to it. Lodestone's CPU per request is the relay's cost: the table's "server CPU / req" of the
 * Lodestone rows is Lodestone's alone (PHP-FPM's work is the direct row's).
 */
import fs from 'node:fs';
import path from 'node:path';
import { groupRssKiB } from '../lib/cpu.js';
import { fetchOnce, loadSettings, machine, measure, SERVER_CPU, type Context, type Target } from '../lib/harness.js';
import { repoRoot } from '../../test/shared/repo.js';
import { startNginxFront, type Site } from '../lib/nginx.js';
import { lodestoneCommand, nodeRelayCommand, programVersion } from '../lib/peers.js';
import { phpFpmCommand } from '../lib/php-fpm.js';
import type { Programs } from '../lib/prereq.js';
import { freePorts, start, stop, tail, waitForListen, type Managed } from '../lib/procs.js';
import { CPU_PER_REQUEST_NOTE, wrkReport, type Rss } from '../lib/report.js';
import type { Scenario, ScenarioResult } from '../lib/scenario.js';

/** Lodestone's pool to PHP-FPM (per Lodestone). */
const POOL_SIZE = 16;
/** The large page's body. */
const BIG_BYTES = 100 * 1024;

/** The PHP pages, by URL path: what each sends. */
const PAGES = {
  '/hello.php': { label: 'hello', php: "<?php\nheader('Content-Type: text/plain');\nheader('Cache-Control: no-store');\necho '123';\n", body: '123' },
  '/big.php': {
    label: '100 KiB page',
    php: `<?php\nheader('Content-Type: text/plain');\nheader('Cache-Control: no-store');\necho str_repeat('0123456789abcdef', ${BIG_BYTES / 16});\n`,
    body: '0123456789abcdef'.repeat(BIG_BYTES / 16),
  },
} as const;

/** The relays, each a front-controller script of its own Lodestone. */
const RELAYS = [
  { id: 'lua-emit', label: 'Lodestone Lua `pass(..., {emit = true})`', file: 'pass-emit.lua', source: 'return pass("php", { emit = true })\n' },
  { id: 'lua-read', label: 'Lodestone Lua `emit(pass(...))`', file: 'pass-read.lua', source: 'emit(pass("php"))\n' },
  { id: 'js-emit', label: 'Lodestone JS `pass(..., {emit: true})`', file: 'pass-emit.js', source: 'return pass("php", { emit: true });\n' },
  { id: 'js-read', label: 'Lodestone JS `emit(await pass(...))`', file: 'pass-read.js', source: 'emit(await pass("php"));\n' },
] as const;

async function run(ctx: Context, programs: Programs): Promise<ScenarioResult> {
  const settings = loadSettings();
  const { tmp } = ctx;
  const docroot = path.join(tmp, 'www');
  const scripts = path.join(tmp, 'scripts');
  fs.mkdirSync(docroot);
  fs.mkdirSync(scripts);
  for (const [page, p] of Object.entries(PAGES)) fs.writeFileSync(path.join(docroot, page), p.php);
  for (const r of RELAYS) fs.writeFileSync(path.join(scripts, r.file), r.source);
  const [phpPort, floorPort, ...ports] = await freePorts(2 + RELAYS.length + 2 + RELAYS.length);
  const relayPorts = ports.slice(0, RELAYS.length);
  const sitePorts = ports.slice(RELAYS.length);
  // nginx keeps up to `connections` to each upstream, each Lodestone up to POOL_SIZE more.
  const children = settings.connections + (RELAYS.length + 1) * POOL_SIZE + 2;
  const procs: Managed[] = [];
  let nginx: Managed | null = null;
  try {
    const [phpCmd, phpArgs] = phpFpmCommand(programs.phpFpm!, tmp, phpPort!, children);
    const php = start('php-fpm', phpCmd, phpArgs, path.join(tmp, 'php-fpm.log'), { cpus: SERVER_CPU });
    procs.push(php);
    const config = path.join(tmp, 'lodestone.json');
    fs.writeFileSync(config, JSON.stringify({ backends: { php: { servers: [`127.0.0.1:${phpPort}`], maxConnections: POOL_SIZE } } }));
    const backends: Array<{ id: string; label: string; port: number; proc: Managed; lodestone: boolean }> = [
      { id: 'php-fpm', label: 'PHP-FPM direct', port: phpPort!, proc: php, lodestone: false },
    ];
    for (const [i, r] of RELAYS.entries()) {
      const [cmd, args] = lodestoneCommand(`tcp:127.0.0.1:${relayPorts[i]}`, '--config', config, '--root', scripts, '--script', path.join(scripts, r.file));
      const m = start(r.id, cmd, args, path.join(tmp, `${r.id}.log`), { cpus: SERVER_CPU, cwd: repoRoot });
      procs.push(m);
      backends.push({ id: r.id, label: r.label, port: relayPorts[i]!, proc: m, lodestone: true });
    }
    const [floorCmd, floorArgs] = nodeRelayCommand(floorPort!, phpPort!, POOL_SIZE);
    const floor = start('node-relay', floorCmd, floorArgs, path.join(tmp, 'node-relay.log'), { cpus: SERVER_CPU });
    procs.push(floor);
    backends.push({ id: 'node-relay', label: 'Node relay floor (records forwarded, no script)', port: floorPort!, proc: floor, lodestone: false });
    for (const b of backends) await waitForListen(b.port, b.proc);

    const sites: Site[] = backends.map((b, i) => ({ listen: sitePorts[i]!, backend: b.port, keepalive: settings.connections, name: b.id.replace(/[-.]/g, '_'), root: docroot }));
    const { proc: front, errorLog } = await startNginxFront(programs.nginx!, tmp, sites);
    nginx = front;
    const targets: Target[] = [];
    for (const [page, p] of Object.entries(PAGES)) {
      for (const [i, b] of backends.entries()) {
        targets.push({
          id: `${b.id}${page}`,
          label: `${b.label}, ${p.label}`,
          mode: 'FastCGI keep-alive',
          front: 'nginx',
          lodestone: b.lodestone,
          url: `http://127.0.0.1:${sites[i]!.listen}${page}`,
          frontProc: front,
          backendProc: b.proc,
        });
      }
    }
    const logs = (): string => `--- nginx ---\n${tail(errorLog)}\n${procs.map((m) => `--- ${m.name} ---\n${tail(m.logFile)}`).join('\n')}`;
    // Every relay must send PHP's exact page before anything is timed.
    for (const t of targets) {
      const expected = PAGES[t.url.slice(t.url.lastIndexOf('/')) as keyof typeof PAGES].body;
      const got = await fetchOnce(t.url);
      if (got.status !== 200 || got.body !== expected) throw new Error(`${t.label}: got ${got.status} ${got.body.slice(0, 120)}\n${logs()}`);
    }

    const runs = await measure(ctx, 'pass', targets, settings);
    const rss = new Map<number, Rss>(procs.map((p) => [p.pid, groupRssKiB(p.pid)]));
    const m = machine();
    const notes = [
      `Versions: ${programVersion(programs.nginx!, ['-v']).replace(/^nginx version:\s*/, '')}; ${programVersion(programs.phpFpm!, ['-v']).replace(/\s*\(built:.*$/, '')}`,
      `PHP pages: \`hello.php\` (\`123\`) and \`big.php\` (${BIG_BYTES / 1024} KiB), both \`Cache-Control: no-store\`; PHP-FPM \`pm = static\`, ${children} children`,
      `Lodestone: one \`lodestone serve --workers 0 --script pass-*.lua|js\` per relay, a pool of ${POOL_SIZE} kept connections to PHP-FPM; ` +
        '"server CPU / req" of its rows is the relay alone (PHP-FPM\'s work is in the direct rows)',
      `Node relay floor: bench/peers/node-relay.mjs, the same pool of ${POOL_SIZE}: nginx's records forwarded to PHP-FPM byte for byte and back (record headers read only to see END_REQUEST), no script or params decoding; its "server CPU / req" is what Node itself costs per relayed request`,
      CPU_PER_REQUEST_NOTE,
    ];
    return wrkReport({
      scenario: 'pass',
      heading: 'pass: relaying to PHP-FPM through Lodestone',
      machine: m,
      settings,
      notes,
      targets,
      runs,
      baselines: [
        { id: 'php-fpm/hello.php', heading: '/ PHP-FPM direct (hello)', appliesTo: (t) => t.url.endsWith('/hello.php') },
        { id: 'php-fpm/big.php', heading: '/ PHP-FPM direct (100 KiB)', appliesTo: (t) => t.url.endsWith('/big.php') },
      ],
      rss,
      per: 'target',
      chartTitle: `pass: req/s through Lodestone to PHP-FPM (median of ${settings.rounds}, whiskers min–max)`,
      onOneCore: 'servers',
    });
  } finally {
    if (nginx) await stop(nginx);
    for (const p of procs.reverse()) await stop(p);
  }
}

export const pass: Scenario = {
  name: 'pass',
  summary: 'nginx -> PHP-FPM direct vs relayed by pass() (emit and read, Lua and JS) and by a bare Node relay (the floor): hello and a 100 KiB page, CPU per relayed request',
  needs: ['nginx', 'wrk', 'taskset', 'php-fpm'],
  run,
};
