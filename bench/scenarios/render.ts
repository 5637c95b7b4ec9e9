/**
 * The render scenario: ordinary edge work, the same in every language, where hello measures
 * nothing but the request. Each peer builds a 200-row HTML table (for row i: id i, name
 * "item <i> & co" escaped with a table of escapes, price i * 1.25 with two decimals), joins the
 * rows with "\n" inside `<table>...</table>` and prints it with a trailing newline: 12,313 bytes,
 * byte for byte the same from every peer (checked before timing; a difference fails the scenario).
 *
 * Peers, each on the server core:
 * - lighttpd mod_magnet: PUC Lua 5.4 inside lighttpd (bench/peers/render-magnet.lua), no hop.
 * - nginx + lua-nginx-module: LuaJIT inside nginx (bench/peers/render-nginx-lua.lua,
 *   `content_by_lua_file`), the OpenResty way, no hop; an nginx of its own.
 * - Lodestone Lua with `luaEngine = "lua54"` and with `luaEngine = "fengari"`, Lodestone JS
 *   (bench/peers/render.lua / render.js), each `lodestone serve --workers 0` behind nginx with
 *   FastCGI keep-alive.
 * - PHP-FPM, pm static (bench/peers/render.php), behind the same nginx with keep-alive.
 * The FastCGI peers listen on Unix sockets (see the note at socketOf).
 *
 * PHP-FPM, mod_magnet and the nginx Lua module are optional: a missing one is named by the
 * runner (which then exits 1) and its peer left out; the others still run.
 */
import fs from 'node:fs';
import path from 'node:path';
import { groupRssKiB } from '../lib/cpu.js';
import { checkSameBody, loadSettings, machine, measure, SERVER_CPU, type Context, type Run, type Target } from '../lib/harness.js';
import { repoRoot } from '../../test/shared/repo.js';
import { lighttpdConfig } from '../lib/lighttpd.js';
import { startNginxFront, type Site } from '../lib/nginx.js';
import { lodestoneCommand, programVersion } from '../lib/peers.js';
import { phpFpmCommand } from '../lib/php-fpm.js';
import { missingOf, nginxLuaModules, type Programs, type Requirement } from '../lib/prereq.js';
import { freePorts, start, stop, tail, waitForListen, type Managed } from '../lib/procs.js';
import { renderPage, RENDER_ROWS } from '../lib/render.js';
import { CPU_PER_REQUEST_NOTE, median, roundRatios, wrkReport, type Rss } from '../lib/report.js';
import type { Scenario, ScenarioResult } from '../lib/scenario.js';

/** Every peer, in report order. */
const RENDER_PEERS = ['mod_magnet', 'nginx-lua', 'lodestone-lua54', 'lodestone-fengari', 'lodestone-js', 'php-fpm'] as const;
type PeerId = (typeof RENDER_PEERS)[number];
type LodestonePeer = Extract<PeerId, `lodestone-${string}`>;

const LABEL: Record<PeerId, string> = {
  mod_magnet: 'lighttpd mod_magnet (Lua 5.4 in-core)',
  'nginx-lua': 'nginx + lua-nginx-module (LuaJIT in-core)',
  'lodestone-lua54': 'Lodestone Lua, lua54',
  'lodestone-fengari': 'Lodestone Lua, fengari',
  'lodestone-js': 'Lodestone JS',
  'php-fpm': 'PHP-FPM (render.php)',
};
/** What a peer needs beyond the scenario's own `needs`. */
const PEER_NEEDS: Record<PeerId, readonly Requirement[]> = {
  mod_magnet: ['lighttpd', 'mod_magnet'],
  'nginx-lua': ['nginx-lua'],
  'lodestone-lua54': [],
  'lodestone-fengari': [],
  'lodestone-js': [],
  'php-fpm': ['php-fpm'],
};
/**
 * Each Lodestone peer's config: `luaEngine` set every time, never the default, so a change of
 * default cannot move a row to the other engine unnoticed.
 */
const LODESTONE: Record<LodestonePeer, { script: string; luaEngine: 'lua54' | 'fengari' }> = {
  'lodestone-lua54': { script: 'render.lua', luaEngine: 'lua54' },
  'lodestone-fengari': { script: 'render.lua', luaEngine: 'fengari' },
  'lodestone-js': { script: 'render.js', luaEngine: 'lua54' },
};
const isLodestone = (p: PeerId): p is LodestonePeer => p.startsWith('lodestone-');
const KEEPALIVE = 'FastCGI keep-alive';

/** The ratios the README quotes, each `[numerator, denominator]` target ids. */
const KEY_RATIOS: ReadonlyArray<[PeerId, PeerId]> = [
  ['lodestone-lua54', 'mod_magnet'],
  ['lodestone-lua54', 'nginx-lua'],
  ['lodestone-lua54', 'lodestone-fengari'],
  ['lodestone-lua54', 'php-fpm'],
  ['lodestone-js', 'php-fpm'],
  ['lodestone-js', 'lodestone-lua54'],
  ['mod_magnet', 'nginx-lua'],
];

/** "a / b: 1.23x (1.20–1.25)" for the verdict list, from the per-round ratios. */
function ratioLine(runs: readonly Run[], a: PeerId, b: PeerId): string | null {
  const r = roundRatios(runs, a, b);
  if (r.length === 0) return null;
  const range = r.length > 1 ? ` (${Math.min(...r).toFixed(2)}–${Math.max(...r).toFixed(2)})` : '';
  return `${LABEL[a]} / ${LABEL[b]}: ${median(r).toFixed(2)}x${range}`;
}

async function run(ctx: Context, programs: Programs): Promise<ScenarioResult> {
  const settings = loadSettings();
  const benchDir = path.join(repoRoot, 'bench');
  const peers = RENDER_PEERS.filter((p) => missingOf(PEER_NEEDS[p], programs, benchDir).length === 0);
  const left = RENDER_PEERS.filter((p) => !peers.includes(p));
  if (left.length > 0) ctx.note(`bench: render without ${left.join(', ')} (not installed)`);
  const { tmp } = ctx;
  const scriptRoot = path.join(tmp, 'scripts');
  fs.mkdirSync(scriptRoot);
  for (const name of ['render.lua', 'render.js', 'render.php']) fs.copyFileSync(path.join(benchDir, 'peers', name), path.join(scriptRoot, name));
  const expected = Buffer.from(renderPage());
  // Only keep-alive here: nginx keeps at most `connections` to PHP-FPM, each pinning a child.
  const children = settings.connections + 2;
  const fastcgi = peers.filter((p) => isLodestone(p) || p === 'php-fpm');

  const ports = await freePorts(fastcgi.length + 2);
  // Unix sockets, not TCP: over kept TCP connections PHP-FPM's answer to this page takes ~42 ms
  // (0.8 ms on a socket; one request at a time, 2026-12-07), the signature of Nagle against
  // nginx's delayed ACK, whatever the page costs. Debian's PHP-FPM pool listens on a Unix socket
  // too. Every FastCGI peer gets one, so they meet on equal terms.
  const socketOf = new Map(fastcgi.map((p) => [p, path.join(tmp, `${p}.sock`)]));
  const procs: Managed[] = [];
  const fronts: Managed[] = [];
  const backend = new Map<PeerId, Managed>();
  try {
    for (const p of fastcgi) {
      const socket = socketOf.get(p)!;
      let cmd: [string, string[]];
      if (isLodestone(p)) {
        const config = path.join(tmp, `${p}.json`);
        fs.writeFileSync(config, JSON.stringify({ luaEngine: LODESTONE[p].luaEngine }));
        cmd = lodestoneCommand(`unix:${socket}`, '--root', scriptRoot, '--config', config);
      } else cmd = phpFpmCommand(programs.phpFpm!, tmp, socket, children);
      const m = start(p, cmd[0], cmd[1], path.join(tmp, `${p}.log`), { cpus: SERVER_CPU, cwd: repoRoot });
      procs.push(m);
      backend.set(p, m);
    }
    for (const p of fastcgi) await waitForListen(socketOf.get(p)!, backend.get(p)!);

    // --- nginx for the FastCGI peers, keep-alive ---
    const sites = fastcgi.map((p) => ({
      listen: ports.shift()!,
      backend: socketOf.get(p)!,
      keepalive: settings.connections,
      name: p.replace(/-/g, '_'),
      root: scriptRoot,
      peer: p,
    }));
    const errorLog = path.join(tmp, 'error.log');
    let nginx: Managed | null = null;
    if (sites.length > 0) {
      const front = await startNginxFront(programs.nginx!, tmp, sites);
      nginx = front.proc;
      fronts.push(front.proc);
    }

    // --- nginx with the Lua module: its own, so the FastCGI rows' nginx loads no LuaJIT ---
    let luaNginx: { port: number; proc: Managed; errorLog: string } | null = null;
    if (peers.includes('nginx-lua')) {
      const dir = path.join(tmp, 'nginx-lua');
      fs.mkdirSync(dir);
      const port = ports.shift()!;
      const site: Site = { listen: port, backend: null, keepalive: null, name: 'nginx_lua', luaFile: path.join(benchDir, 'peers/render-nginx-lua.lua') };
      const front = await startNginxFront(programs.nginx!, dir, [site], { name: 'nginx-lua', logFile: path.join(tmp, 'nginx-lua.log'), modules: nginxLuaModules()! });
      fronts.push(front.proc);
      luaNginx = { port, ...front };
    }

    // --- lighttpd mod_magnet ---
    let magnet: { port: number; proc: Managed } | null = null;
    if (peers.includes('mod_magnet')) {
      const port = ports.shift()!;
      const file = path.join(tmp, 'lighttpd-mod_magnet.conf');
      const handler = { kind: 'magnet', script: path.join(benchDir, 'peers/render-magnet.lua') } as const;
      fs.writeFileSync(file, lighttpdConfig(tmp, { name: 'lighttpd-mod_magnet', port, docRoot: scriptRoot, handler }));
      const proc = start('lighttpd-mod_magnet', programs.lighttpd!, ['-D', '-f', file], path.join(tmp, 'lighttpd-mod_magnet.log'), { cpus: SERVER_CPU });
      fronts.push(proc);
      await waitForListen(port, proc);
      magnet = { port, proc };
    }

    const targets: Target[] = [];
    for (const p of peers) {
      const base = { id: p, label: LABEL[p], lodestone: isLodestone(p) };
      if (p === 'mod_magnet' && magnet) {
        targets.push({ ...base, mode: 'in-core', front: 'lighttpd', url: `http://127.0.0.1:${magnet.port}/render`, frontProc: magnet.proc });
      } else if (p === 'nginx-lua' && luaNginx) {
        targets.push({ ...base, mode: 'in-core', front: 'nginx', url: `http://127.0.0.1:${luaNginx.port}/render`, frontProc: luaNginx.proc });
      } else if (nginx) {
        const site = sites.find((s) => s.peer === p)!;
        const script = isLodestone(p) ? LODESTONE[p].script : 'render.php';
        targets.push({ ...base, mode: KEEPALIVE, front: 'nginx', url: `http://127.0.0.1:${site.listen}/${script}`, frontProc: nginx, backendProc: backend.get(p) });
      }
    }
    const logs = (t: Target): string =>
      (t.id === 'nginx-lua' && luaNginx ? `--- nginx-lua error.log ---\n${tail(luaNginx.errorLog)}\n` : `--- nginx error.log ---\n${tail(errorLog)}\n`) +
      `--- ${t.frontProc.name} ---\n${tail(t.frontProc.logFile)}` +
      (t.backendProc ? `\n--- ${t.backendProc.name} ---\n${tail(t.backendProc.logFile)}` : '');
    await checkSameBody(targets, expected, 'text/html', logs);

    const runs = await measure(ctx, 'render', targets, settings);
    // Memory after all the load: what a long-running server settles at.
    const rss = new Map<number, Rss>();
    for (const m of [...procs, ...fronts]) rss.set(m.pid, groupRssKiB(m.pid));

    const m = machine();
    const versions = [
      programVersion(programs.nginx!, ['-v']).replace(/^nginx version:\s*/, ''),
      ...(magnet ? [programVersion(programs.lighttpd!, ['-v']).replace(/ - a light.*$/, '')] : []),
      ...(peers.includes('php-fpm') ? [programVersion(programs.phpFpm!, ['-v']).replace(/\s*\(built:.*$/, '')] : []),
    ];
    const ratios = KEY_RATIOS.map(([a, b]) => ratioLine(runs, a, b)).filter((l): l is string => l !== null);
    const notes = [
      `Versions: ${versions.join('; ')}`,
      `The page: a ${RENDER_ROWS}-row HTML table (\`string.format\`, \`gsub\` with a table of escapes, \`table.concat\` in Lua; ` +
        `\`replace\`, template strings, \`join\` in JS; \`sprintf\`, \`strtr\`, \`implode\` in PHP), ${expected.length.toLocaleString('en-US')} ` +
        'bytes, checked byte for byte against the same page built here before timing (bench/peers/render.*)',
      'nginx: `worker_processes 1`, `upstream { keepalive ' +
        `${settings.connections}; }\` + \`fastcgi_keep_conn on\` for every FastCGI peer, each on a Unix socket (over TCP, PHP-FPM's ` +
        "answer to this page waits ~40 ms on a kept connection, Nagle against nginx's delayed ACK by the look of it: ~350 req/s " +
        "with PHP 7% busy); lua-nginx-module in an nginx of its own " +
        '(`content_by_lua_file`, code cache on); mod_magnet in a lighttpd of its own',
      'Lodestone: `lodestone serve --root DIR --workers 0 --config FILE` per peer, the config setting `luaEngine` ' +
        '(`lua54` or `fengari`; the JS peer runs only `.js`); script cache, sandbox and limits as deployed',
      `PHP-FPM: \`pm = static\`, \`pm.max_children = ${children}\`, the system's php.ini (OPcache as installed)`,
      ...(left.length > 0 ? [`Not run (not installed): ${left.map((p) => LABEL[p]).join(', ')}`] : []),
      'server RSS: VmRSS at the end, summed over the processes of the backend (or of the front end where it serves the page)',
      CPU_PER_REQUEST_NOTE,
    ];
    return wrkReport({
      scenario: 'render',
      heading: 'render: a 200-row HTML table in every language',
      machine: m,
      settings,
      notes,
      targets,
      runs,
      baselines: [
        { id: 'mod_magnet', heading: '/ mod_magnet' },
        { id: 'nginx-lua', heading: '/ nginx Lua' },
        { id: 'lodestone-fengari', heading: '/ Lodestone fengari' },
        { id: 'php-fpm', heading: '/ PHP-FPM' },
      ],
      rss,
      per: 'peer',
      afterSummary: ['Ratios of req/s, per round (median, min–max):', '', ...ratios.map((l) => `- ${l}`), ''],
      chartTitle: `render: req/s, a ${RENDER_ROWS}-row table (median of ${settings.rounds} round(s), whiskers min–max)`,
      onOneCore: 'server',
    });
  } finally {
    // The front ends first: their kept connections would otherwise hold up the backends' stop.
    await Promise.all(fronts.map((f) => stop(f)));
    await Promise.all(procs.map((p) => stop(p)));
  }
}

export const render: Scenario = {
  name: 'render',
  summary: 'a 200-row HTML table: Lodestone lua54/fengari/JS, PHP-FPM, mod_magnet, nginx + lua-nginx-module (LuaJIT)',
  needs: ['nginx', 'wrk', 'taskset'],
  optional: ['php-fpm', 'lighttpd', 'mod_magnet', 'nginx-lua'],
  run,
};
