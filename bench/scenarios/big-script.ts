/**
 * The big-script scenario: what the script cache is worth end to end, for an application-sized
 * script (~2,000 generated lines, bench/lib/big-script.ts) in Lua and in JavaScript.
 *
 * Two Lodestone processes per language behind nginx (FastCGI keep-alive), serving two copies of
 * the script, which wrk requests in turn:
 * - cached: the default script cache, so every request runs compiled code;
 * - parsed per request: `scriptCache.maxEntries = 1`, so each request evicts the other copy and
 *   the next one must stat, read and compile its script again: the cost without a cache.
 * Same requests, same bytes; only the cache size differs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { groupRssKiB } from '../lib/cpu.js';
import { BIG_OUTPUT, bigJsScript, bigLuaScript } from '../lib/big-script.js';
import { checkAnswers, loadSettings, machine, measure, SERVER_CPU, type Context, type Target } from '../lib/harness.js';
import { startNginxFront, type Site } from '../lib/nginx.js';
import { lodestoneCommand } from '../lib/peers.js';
import type { Programs } from '../lib/prereq.js';
import { freePorts, start, stop, tail, waitForListen, type Managed } from '../lib/procs.js';
import { CPU_PER_REQUEST_NOTE, wrkReport, type Rss } from '../lib/report.js';
import type { Scenario, ScenarioResult } from '../lib/scenario.js';

const LANGS = [
  { ext: 'lua', name: 'Lua', source: bigLuaScript(), typeLine: 'response.headers["Content-Type"] = "text/plain"\n' },
  { ext: 'js', name: 'JS', source: bigJsScript(), typeLine: "response.headers['Content-Type'] = 'text/plain';\n" },
] as const;
const CACHES = [
  { id: 'cached', label: 'cached', config: {} },
  { id: 'parsed', label: 'parsed per request', config: { scriptCache: { maxEntries: 1 } } },
] as const;

/** wrk's request generator: the two copies of the script in turn. */
function alternate(ext: string): string {
  return `-- The big-script scenario: two copies of the script in turn (wrk runs LuaJIT: Lua 5.1).
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/big" .. (i % 2 + 1) .. ".${ext}?x=1")
end
`;
}

async function run(ctx: Context, programs: Programs): Promise<ScenarioResult> {
  const settings = loadSettings();
  const { tmp } = ctx;
  const root = path.join(tmp, 'scripts');
  fs.mkdirSync(root);
  const linesOf = (l: (typeof LANGS)[number]): number => l.source.split('\n').length;
  const lines = Math.max(...LANGS.map(linesOf));
  for (const l of LANGS) {
    // Content-Type first so that every peer's answer is text/plain; the rest is the generated script.
    for (const copy of [1, 2]) fs.writeFileSync(path.join(root, `big${copy}.${l.ext}`), l.typeLine + l.source);
    fs.writeFileSync(path.join(tmp, `alternate-${l.ext}.lua`), alternate(l.ext));
  }
  const ports = await freePorts(CACHES.length * 2);
  const procs: Managed[] = [];
  let nginx: Managed | null = null;
  try {
    const servers = CACHES.map((c) => {
      const port = ports.shift()!;
      const config = path.join(tmp, `${c.id}.json`);
      fs.writeFileSync(config, JSON.stringify(c.config));
      const [cmd, args] = lodestoneCommand(`tcp:127.0.0.1:${port}`, '--root', root, '--config', config);
      const proc = start(`lodestone-${c.id}`, cmd, args, path.join(tmp, `lodestone-${c.id}.log`), { cpus: SERVER_CPU });
      procs.push(proc);
      return { cache: c, port, proc };
    });
    for (const s of servers) await waitForListen(s.port, s.proc);
    const sites: Site[] = servers.map((s) => ({ listen: ports.shift()!, backend: s.port, keepalive: settings.connections, name: s.cache.id, root }));
    const { proc: front, errorLog } = await startNginxFront(programs.nginx!, tmp, sites);
    nginx = front;
    const targets: Target[] = [];
    for (const l of LANGS) {
      for (const [i, s] of servers.entries()) {
        targets.push({
          id: `${l.ext}/${s.cache.id}`,
          label: `Lodestone ${l.name}, ${linesOf(l).toLocaleString('en-US')}-line script`,
          mode: s.cache.label,
          front: 'nginx',
          lodestone: s.cache.id === 'cached',
          url: `http://127.0.0.1:${sites[i]!.listen}/big1.${l.ext}?x=1`,
          script: path.join(tmp, `alternate-${l.ext}.lua`),
          frontProc: front,
          backendProc: s.proc,
        });
      }
    }
    await checkAnswers(targets, `${BIG_OUTPUT}\n`, (t) => `--- nginx ---\n${tail(errorLog)}\n--- ${t.backendProc!.name} ---\n${tail(t.backendProc!.logFile)}`);

    const runs = await measure(ctx, 'big-script', targets, settings);
    const rss = new Map<number, Rss>(procs.map((p) => [p.pid, groupRssKiB(p.pid)]));
    const m = machine();
    const notes = [
      `The scripts: ${LANGS.map((l) => `${l.name} ${linesOf(l).toLocaleString('en-US')}`).join(', ')} generated lines (bench/lib/big-script.ts: modules of helper functions, ` +
        'metatable classes, config tables; one request calls a few and prints one line), two copies requested in turn',
      '"cached": `lodestone serve --root DIR --workers 0`, default script cache; "parsed per request": the same with ' +
        '`scriptCache.maxEntries = 1`, so every request compiles its copy again',
      'nginx → Lodestone with FastCGI keep-alive; one Lodestone process per cache setting serves both languages',
      CPU_PER_REQUEST_NOTE,
    ];
    return wrkReport({
      scenario: 'big-script',
      heading: 'big-script: the script cache, end to end',
      machine: m,
      settings,
      notes,
      targets,
      runs,
      baselines: LANGS.map((l) => ({ id: `${l.ext}/parsed`, heading: `/ ${l.name} parsed per request`, appliesTo: (t) => t.id.startsWith(`${l.ext}/`) })),
      rss,
      per: 'target',
      chartTitle: `big-script: req/s, a ~${(Math.round(lines / 100) * 100).toLocaleString('en-US')}-line script, cached vs parsed (median of ${settings.rounds}, whiskers min–max)`,
      onOneCore: 'servers',
    });
  } finally {
    if (nginx) await stop(nginx);
    await Promise.all(procs.map((p) => stop(p)));
  }
}

export const bigScript: Scenario = {
  name: 'big-script',
  summary: 'a ~2,000-line Lua and JS script through nginx: script cache vs parsing every request',
  needs: ['nginx', 'wrk', 'taskset'],
  run,
};
