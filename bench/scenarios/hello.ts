/**
 * The hello scenario: every peer answering 200 text/plain "123", the per-request cost of each
 * server with nothing else in the way.
 *
 * Behind one nginx (worker_processes 1), each FastCGI peer in both of nginx's modes (a new
 * connection per request, and `keepalive` + `fastcgi_keep_conn on`):
 * - Lodestone Lua / JS: `lodestone serve --root DIR` running hello.lua / hello.js (script cache,
 *   sandbox and limits on, as deployed).
 * - libfcgi: the canonical C program (bench/peers/hello-libfcgi.c), built here, pre-forked.
 * - PHP-FPM: pm static, hello.php.
 * - node-fastcgi: the Node library's hello world (bench/peers/node-fastcgi.mjs).
 * - Node floor: the least a Node FastCGI responder can do (bench/peers/node-floor.mjs), to tell
 *   Node's own per-request cost from Lodestone's.
 * - nginx `return 200 "123"`: no backend at all, the front end's ceiling.
 * lighttpd as the front end (where noted): mod_magnet runs its Lua inside lighttpd, so it has no
 * FastCGI hop and no nginx in front; Lodestone Lua and libfcgi behind a lighttpd of the same
 * configuration give the comparison on equal terms (lighttpd opens a backend connection per
 * request: it does not keep FastCGI connections).
 *
 * php-fpm and libfcgi serve one connection at a time per process, and a kept connection pins its
 * process: both get 2 x connections + 2 processes, enough for nginx's pools of both modes and a
 * lighttpd's connections at once, or they would starve and the benchmark would time a few.
 *
 * BENCH_PEERS: a comma-separated subset of the peer ids below (default: all but
 * lodestone-diagnostic, the built-in responder without any engine).
 */
import fs from 'node:fs';
import path from 'node:path';
import { groupRssKiB } from '../lib/cpu.js';
import { checkAnswers, loadSettings, machine, measure, SERVER_CPU, type Context, type Target } from '../lib/harness.js';
import { repoRoot } from '../../test/shared/repo.js';
import { lighttpdConfig } from '../lib/lighttpd.js';
import { startNginxFront, type Site } from '../lib/nginx.js';
import {
  buildLibfcgi,
  libfcgiCommand,
  lodestoneCommand,
  nodeFastcgiCommand,
  nodeFloorCommand,
  programVersion,
} from '../lib/peers.js';
import { phpFpmCommand } from '../lib/php-fpm.js';
import type { Programs } from '../lib/prereq.js';
import { freePorts, start, stop, tail, waitForListen, type Managed } from '../lib/procs.js';
import { CPU_PER_REQUEST_NOTE, wrkReport, type Rss } from '../lib/report.js';
import type { Scenario, ScenarioResult } from '../lib/scenario.js';
import { SettingsError } from '../lib/settings.js';

/** FastCGI peers behind nginx, in report order. */
const FASTCGI_PEERS = ['lodestone-lua', 'lodestone-fengari', 'lodestone-js', 'libfcgi', 'php-fpm', 'node-fastcgi', 'node-floor', 'lodestone-diagnostic'] as const;
type FastcgiPeer = (typeof FASTCGI_PEERS)[number];
/** Every peer id BENCH_PEERS may name. */
export const HELLO_PEERS = ['nginx-return', ...FASTCGI_PEERS, 'mod_magnet'] as const;
type PeerId = (typeof HELLO_PEERS)[number];
const DEFAULT_OFF: readonly PeerId[] = ['lodestone-diagnostic'];

const LABEL: Record<PeerId, string> = {
  'nginx-return': 'nginx `return 200` (ceiling)',
  'lodestone-lua': 'Lodestone Lua hello',
  'lodestone-fengari': 'Lodestone Lua hello (fengari)',
  'lodestone-js': 'Lodestone JS hello',
  libfcgi: 'libfcgi (C)',
  'php-fpm': 'PHP-FPM (hello.php)',
  'node-fastcgi': 'node-fastcgi (Node library)',
  'node-floor': 'Node floor (canned reply)',
  'lodestone-diagnostic': 'Lodestone (diagnostic, no engine)',
  mod_magnet: 'lighttpd mod_magnet (in-core Lua)',
};
// The diagnostic responder answers `?hello` with "123"; everything else answers any URL.
const PATH: Record<FastcgiPeer, string> = {
  'lodestone-lua': '/hello.lua?hello',
  'lodestone-fengari': '/hello.lua?hello',
  'lodestone-js': '/hello.js?hello',
  libfcgi: '/hello.lua?hello',
  'php-fpm': '/hello.php?hello',
  'node-fastcgi': '/hello.lua?hello',
  'node-floor': '/hello.lua?hello',
  'lodestone-diagnostic': '/hello.lua?hello',
};
/** The script backends' pages: the same bytes as the others send (the default type is text/html). */
const HELLO_SCRIPTS: Record<string, string> = {
  'hello.lua': '-- The benchmark page: the same bytes as the other peers send.\nresponse.headers["Content-Type"] = "text/plain"\nwrite("123")\n',
  'hello.js': "// The benchmark page: the same bytes as the other peers send.\nresponse.headers['Content-Type'] = 'text/plain';\nwrite('123');\n",
};
/** Why node-fastcgi has no keep-alive row (checked against its source, and by the idle scenario). */
export const NODE_FASTCGI_NOTE =
  'connection per request only: node-fastcgi 2.0.0 tests `BeginRequest.flags.KEEP_CONN`, which its codec fastcgi-stream 1.x ' +
  'calls `KEEPCONN`, so FCGI_KEEP_CONN always reads as 0 and it closes the connection after every request';
const MODES = [
  ['keepalive', 'FastCGI keep-alive'],
  ['close', 'connection per request'],
] as const;

/** BENCH_PEERS, in report order. */
export function selectedPeers(raw = process.env.BENCH_PEERS): PeerId[] {
  if (raw === undefined || raw.trim() === '') return HELLO_PEERS.filter((p) => !DEFAULT_OFF.includes(p));
  const names = raw.split(',').map((n) => n.trim()).filter((n) => n !== '');
  const unknown = names.filter((n) => !(HELLO_PEERS as readonly string[]).includes(n));
  if (unknown.length > 0 || names.length === 0) {
    throw new SettingsError(`BENCH_PEERS: unknown peer(s) ${JSON.stringify(unknown)}; choose from ${HELLO_PEERS.join(', ')}`);
  }
  return HELLO_PEERS.filter((p) => names.includes(p));
}

async function run(ctx: Context, programs: Programs): Promise<ScenarioResult> {
  const settings = loadSettings();
  const peers = selectedPeers();
  const fastcgi = FASTCGI_PEERS.filter((p) => peers.includes(p));
  const { tmp } = ctx;
  const scriptRoot = path.join(tmp, 'scripts');
  fs.mkdirSync(scriptRoot);
  for (const [name, source] of Object.entries(HELLO_SCRIPTS)) fs.writeFileSync(path.join(scriptRoot, name), source);
  fs.copyFileSync(path.join(repoRoot, 'bench/peers/hello.php'), path.join(scriptRoot, 'hello.php'));
  const processes = 2 * settings.connections + 2;
  const libfcgiBin = fastcgi.includes('libfcgi') ? buildLibfcgi(programs.gcc!, tmp) : '';

  // lighttpd fronts mod_magnet, and Lodestone Lua and libfcgi for the comparison with it.
  const lighttpdPeers = peers.includes('mod_magnet')
    ? (['mod_magnet', 'lodestone-lua', 'libfcgi'] as const).filter((p) => p === 'mod_magnet' || fastcgi.includes(p))
    : [];
  const ports = await freePorts(fastcgi.length * 3 + 1 + lighttpdPeers.length);
  const backendPort = new Map<FastcgiPeer, number>(fastcgi.map((p) => [p, ports.shift()!]));
  const procs: Managed[] = [];
  const fronts: Managed[] = [];
  const backend = new Map<FastcgiPeer, Managed>();
  const commandOf = (p: FastcgiPeer, port: number): [string, string[]] => {
    switch (p) {
      case 'lodestone-lua':
      case 'lodestone-js':
        return lodestoneCommand(`tcp:127.0.0.1:${port}`, '--root', scriptRoot);
      case 'lodestone-fengari': {
        // The Lua engine before lua54 became the default, for the same-run comparison.
        const config = path.join(tmp, 'fengari.json');
        fs.writeFileSync(config, JSON.stringify({ luaEngine: 'fengari' }));
        return lodestoneCommand(`tcp:127.0.0.1:${port}`, '--root', scriptRoot, '--config', config);
      }
      case 'lodestone-diagnostic':
        return lodestoneCommand(`tcp:127.0.0.1:${port}`, '--diagnostic');
      case 'libfcgi':
        return libfcgiCommand(libfcgiBin, port, processes);
      case 'php-fpm':
        return phpFpmCommand(programs.phpFpm!, tmp, port, processes);
      case 'node-fastcgi':
        return nodeFastcgiCommand(port);
      case 'node-floor':
        return nodeFloorCommand(port);
    }
  };
  try {
    for (const p of fastcgi) {
      const [cmd, args] = commandOf(p, backendPort.get(p)!);
      const m = start(p, cmd, args, path.join(tmp, `${p}.log`), { cpus: SERVER_CPU, cwd: p === 'libfcgi' ? tmp : repoRoot });
      procs.push(m);
      backend.set(p, m);
    }
    for (const p of fastcgi) await waitForListen(backendPort.get(p)!, backend.get(p)!);

    // --- nginx: a server block per peer and mode ---
    const sites: Array<Site & { peer: PeerId; mode: string }> = [];
    if (peers.includes('nginx-return')) {
      sites.push({ listen: ports.shift()!, backend: null, returnBody: '123', keepalive: null, name: 'nginx_return', peer: 'nginx-return', mode: 'no backend' });
    }
    for (const [mode, modeLabel] of MODES) {
      // node-fastcgi cannot keep a FastCGI connection (see NODE_FASTCGI_NOTE): no keep-alive row.
      for (const p of fastcgi.filter((x) => mode === 'close' || x !== 'node-fastcgi')) {
        sites.push({
          listen: ports.shift()!,
          backend: backendPort.get(p)!,
          keepalive: mode === 'keepalive' ? settings.connections : null,
          name: `${p.replace(/-/g, '_')}_${mode}`,
          root: scriptRoot,
          peer: p,
          mode: modeLabel,
        });
      }
    }
    const { proc: nginx, errorLog } = await startNginxFront(programs.nginx!, tmp, sites);
    fronts.push(nginx);

    // --- lighttpd: one per peer, the same configuration but for the handler ---
    const lighty: Array<{ peer: PeerId; port: number; proc: Managed }> = [];
    for (const p of lighttpdPeers) {
      const port = ports.shift()!;
      const name = `lighttpd-${p}`;
      const file = path.join(tmp, `${name}.conf`);
      const handler =
        p === 'mod_magnet'
          ? ({ kind: 'magnet', script: path.join(repoRoot, 'bench/peers/hello-magnet.lua') } as const)
          : ({ kind: 'fastcgi', port: backendPort.get(p)! } as const);
      fs.writeFileSync(file, lighttpdConfig(tmp, { name, port, docRoot: scriptRoot, handler }));
      const proc = start(name, programs.lighttpd!, ['-D', '-f', file], path.join(tmp, `${name}.log`), { cpus: SERVER_CPU });
      fronts.push(proc);
      lighty.push({ peer: p, port, proc });
    }
    for (const l of lighty) await waitForListen(l.port, l.proc);

    const targets: Target[] = [];
    for (const s of sites) {
      const b = s.peer === 'nginx-return' ? undefined : backend.get(s.peer as FastcgiPeer);
      targets.push({
        id: `${s.peer}/${s.mode}`,
        label: LABEL[s.peer],
        mode: s.mode,
        front: 'nginx',
        lodestone: s.peer.startsWith('lodestone'),
        reference: s.peer === 'nginx-return',
        url: `http://127.0.0.1:${s.listen}${s.peer === 'nginx-return' ? '/' : PATH[s.peer as FastcgiPeer]}`,
        frontProc: nginx,
        backendProc: b,
      });
    }
    for (const l of lighty) {
      targets.push({
        id: `${l.peer}/lighttpd`,
        label: LABEL[l.peer],
        mode: l.peer === 'mod_magnet' ? 'in-core' : 'connection per request',
        front: 'lighttpd',
        lodestone: l.peer.startsWith('lodestone'),
        reference: l.peer === 'mod_magnet',
        url: `http://127.0.0.1:${l.port}${l.peer === 'mod_magnet' ? '/' : PATH[l.peer as FastcgiPeer]}`,
        frontProc: l.proc,
        backendProc: l.peer === 'mod_magnet' ? undefined : backend.get(l.peer as FastcgiPeer),
      });
    }
    const logs = (t: Target): string =>
      `--- nginx error.log ---\n${tail(errorLog)}\n--- ${t.frontProc.name} ---\n${tail(t.frontProc.logFile)}` +
      (t.backendProc ? `\n--- ${t.backendProc.name} ---\n${tail(t.backendProc.logFile)}` : '');
    await checkAnswers(targets, '123', logs);

    const runs = await measure(ctx, 'hello', targets, settings);
    // Memory after all the load: what a long-running server settles at.
    const rss = new Map<number, Rss>();
    for (const m of [...procs, ...fronts]) rss.set(m.pid, groupRssKiB(m.pid));

    const m = machine();
    const versions = [
      programVersion(programs.nginx!, ['-v']).replace(/^nginx version:\s*/, ''),
      ...(lighty.length > 0 ? [programVersion(programs.lighttpd!, ['-v']).replace(/ - a light.*$/, '')] : []),
      ...(fastcgi.includes('php-fpm') ? [programVersion(programs.phpFpm!, ['-v']).replace(/\s*\(built:.*$/, '')] : []),
    ];
    const notes = [
      `Versions: ${versions.join('; ')}`,
      'nginx: `worker_processes 1`, keep-alive mode `upstream { keepalive ' +
        `${settings.connections}; }\` + \`fastcgi_keep_conn on\`, Debian's fastcgi_params; lighttpd: one process per peer, ` +
        '`mod_fastcgi` with `check-local disable` (a new backend connection per request)',
      'Lodestone: `lodestone serve --root DIR --workers 0` (one process; script cache, sandbox and limits as deployed), ' +
        '`hello.lua` / `hello.js` set `Content-Type: text/plain` and `write("123")`',
      `libfcgi: ${processes} pre-forked processes (FCGI_Accept loop, gcc -O2); PHP-FPM: \`pm = static\`, ` +
        `\`pm.max_children = ${processes}\`, the system's php.ini (OPcache as installed): a process of either serves one kept connection at a time`,
      `node-fastcgi: its hello world, one process; ${NODE_FASTCGI_NOTE}. Node floor: a Node process that parses record headers and sends a canned reply`,
      'mod_magnet runs in lighttpd itself: no FastCGI hop and no nginx, so compare it with the other lighttpd rows',
      'server RSS: VmRSS at the end, summed over the processes of the backend (or of the front end where it serves the page); ' +
        'shared pages count once per process',
      CPU_PER_REQUEST_NOTE,
    ];
    return wrkReport({
      scenario: 'hello',
      heading: 'hello: every peer answering "123"',
      machine: m,
      settings,
      notes,
      targets,
      runs,
      baselines: [
        { id: 'php-fpm/FastCGI keep-alive', heading: '/ PHP-FPM keep-alive' },
        { id: 'libfcgi/FastCGI keep-alive', heading: '/ libfcgi keep-alive' },
      ],
      rss,
      per: 'peer',
      chartTitle: `hello: req/s per peer (median of ${settings.rounds} round(s), whiskers min–max)`,
      onOneCore: 'server',
    });
  } finally {
    // The front ends first: their kept connections would otherwise hold up the backends' stop.
    await Promise.all(fronts.map((f) => stop(f)));
    await Promise.all(procs.map((p) => stop(p)));
  }
}

export const hello: Scenario = {
  name: 'hello',
  summary: 'every peer answering "123": Lodestone Lua/JS, libfcgi, PHP-FPM, node-fastcgi, mod_magnet, nginx ceiling',
  needs: ['nginx', 'wrk', 'taskset', 'gcc', 'libfcgi-dev', 'php-fpm', 'lighttpd', 'mod_magnet', 'node-fastcgi'],
  run,
};
