/**
 * The idle scenario: what 1,000 kept-alive FastCGI connections (BENCH_IDLE) cost each backend in
 * memory, and whether it still answers a new one.
 *
 * The connections go straight to the backend, each carrying one request with FCGI_KEEP_CONN and
 * then left open and idle: what an nginx `upstream { keepalive 1000; }` pool holds after a burst.
 * Straight, not through nginx, because the question is the backend's memory per kept connection:
 * through nginx the pool would first have to be filled by 1,000 concurrent requests, and nginx's
 * own memory would mix in. The backend's memory is read before (after one warm-up request) and
 * after, summed over its processes: VmRSS, and the private part (Private_Clean + Private_Dirty in
 * smaps_rollup), which is what each extra process really costs.
 *
 * php-fpm and libfcgi hold one connection per process: with pm static of N children, N of the
 * connections are served and the rest wait in the listen queue, unanswered; the report says how
 * many were answered and what a process costs, so that the memory of a pool big enough for 1,000
 * can be estimated (and is marked as an estimate).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_KEEP_CONN, FCGI_PARAMS, FCGI_RESPONDER, FCGI_STDIN } from '../../runtime/fastcgi/constants.js';
import { encodePairs } from '../../runtime/fastcgi/pairs.js';
import { encodeRecord, RecordParser } from '../../runtime/fastcgi/records.js';
import { NODE_FASTCGI_NOTE } from './hello.js';
import { processMemory } from '../lib/cpu.js';
import { machine, SERVER_CPU, type Context } from '../lib/harness.js';
import { repoRoot } from '../../test/shared/repo.js';
import { buildLibfcgi, libfcgiCommand, lodestoneCommand, nodeFastcgiCommand, programVersion } from '../lib/peers.js';
import { phpFpmCommand } from '../lib/php-fpm.js';
import type { Programs } from '../lib/prereq.js';
import { freePorts, sleep, start, stop, waitForListen, type Managed } from '../lib/procs.js';
import { int, mib } from '../lib/report.js';
import type { Scenario, ScenarioResult } from '../lib/scenario.js';
import { envInt } from '../lib/settings.js';

const kibOrMib = (kib: number): string => (kib < 1024 ? `${kib.toFixed(0)} KiB` : mib(kib));

/** Processes of php-fpm and libfcgi: as in the hello scenario. */
const POOL_PROCESSES = 34;
/** How long the connections get to be answered. */
const ANSWER_WAIT_MS = 5000;

/** Memory of a process group: VmRSS and private (unshared) memory, KiB, summed over processes. */
export interface GroupMemory {
  rssKiB: number;
  privateKiB: number;
  processes: number;
}

/** Reads a process group's memory from /proc (VmRSS, and smaps_rollup's private pages). */
export function groupMemory(pgid: number): GroupMemory {
  const out: GroupMemory = { rssKiB: 0, privateKiB: 0, processes: 0 };
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]) !== pgid) continue;
      const mem = processMemory(Number(entry));
      out.rssKiB += mem.rssKiB;
      out.privateKiB += mem.privateKiB;
      out.processes++;
    } catch {
      // exited while we looked, or not ours to read
    }
  }
  return out;
}

/**
 * One FastCGI request, as nginx sends it for a GET (BEGIN with KEEP_CONN, PARAMS, STDIN), as one
 * buffer; with `keepConn` false, as lighttpd sends it (the server closes after the answer).
 */
export function keptRequest(scriptFilename: string, documentRoot: string, keepConn = true): Buffer {
  const begin = Buffer.alloc(8);
  begin.writeUInt16BE(FCGI_RESPONDER, 0);
  begin[2] = keepConn ? FCGI_KEEP_CONN : 0;
  const params = encodePairs([
    ['SCRIPT_FILENAME', scriptFilename],
    ['DOCUMENT_ROOT', documentRoot],
    ['REQUEST_METHOD', 'GET'],
    ['QUERY_STRING', 'hello'],
    ['REQUEST_URI', `/${path.basename(scriptFilename)}?hello`],
    ['SCRIPT_NAME', `/${path.basename(scriptFilename)}`],
    ['SERVER_PROTOCOL', 'HTTP/1.1'],
    ['GATEWAY_INTERFACE', 'CGI/1.1'],
    ['REMOTE_ADDR', '127.0.0.1'],
    ['SERVER_NAME', 'localhost'],
    ['SERVER_PORT', '80'],
  ]);
  return Buffer.concat([
    encodeRecord(FCGI_BEGIN_REQUEST, 1, begin),
    encodeRecord(FCGI_PARAMS, 1, params),
    encodeRecord(FCGI_PARAMS, 1),
    encodeRecord(FCGI_STDIN, 1),
  ]);
}

/** Open connections, each answered (END_REQUEST seen) or not. */
interface Held {
  sockets: net.Socket[];
  answered: number;
  /** Connections the backend closed although the request asked to keep them. */
  closed: number;
}

/** Opens `count` connections to 127.0.0.1:`port`, sends `request` on each, waits up to `waitMs` for the answers. */
async function holdConnections(port: number, count: number, request: Buffer, waitMs: number): Promise<Held> {
  const held: Held = { sockets: [], answered: 0, closed: 0 };
  let pending = count;
  let allDone: () => void = () => {};
  const done = new Promise<void>((resolve) => (allDone = resolve));
  for (let i = 0; i < count; i++) {
    const socket = net.connect({ host: '127.0.0.1', port });
    held.sockets.push(socket);
    let settled = false;
    const settle = (answered: boolean): void => {
      if (settled) return;
      settled = true;
      if (answered) held.answered++;
      if (--pending === 0) allDone();
    };
    const parser = new RecordParser((type) => {
      if (type === FCGI_END_REQUEST) settle(true);
    });
    socket.on('data', (chunk: Buffer) => parser.push(chunk));
    socket.on('error', () => settle(false));
    socket.on('close', () => {
      if (settled) held.closed++;
      settle(false);
    });
    socket.write(request);
    // Connecting 1,000 sockets at once from one loop is fine; pacing keeps the backlog sane.
    if (i % 100 === 99) await sleep(10);
  }
  await Promise.race([done, sleep(waitMs)]);
  return held;
}

interface PeerResult {
  label: string;
  processes: string;
  before: GroupMemory;
  after: GroupMemory;
  answered: number;
  closed: number;
  /** A request on a fresh connection while the others are held: answered in time? */
  fresh: boolean;
  /** Processes of the pool (php-fpm, libfcgi): one serves one kept connection at a time. */
  perConnectionProcess: boolean;
}

async function run(ctx: Context, programs: Programs): Promise<ScenarioResult> {
  const count = envInt('BENCH_IDLE', 1000, 1);
  const { tmp } = ctx;
  const root = path.join(tmp, 'scripts');
  fs.mkdirSync(root);
  fs.writeFileSync(path.join(root, 'hello.lua'), 'response.headers["Content-Type"] = "text/plain"\nwrite("123")\n');
  fs.writeFileSync(path.join(root, 'hello.js'), "response.headers['Content-Type'] = 'text/plain';\nwrite('123');\n");
  fs.copyFileSync(path.join(repoRoot, 'bench/peers/hello.php'), path.join(root, 'hello.php'));
  const libfcgiBin = buildLibfcgi(programs.gcc!, tmp);
  const peers: Array<{ id: string; label: string; script: string; command: (port: number) => [string, string[]]; pool: boolean }> = [
    { id: 'lodestone-lua', label: 'Lodestone (Lua hello)', script: 'hello.lua', command: (p) => lodestoneCommand(`tcp:127.0.0.1:${p}`, '--root', root), pool: false },
    { id: 'lodestone-js', label: 'Lodestone (JS hello)', script: 'hello.js', command: (p) => lodestoneCommand(`tcp:127.0.0.1:${p}`, '--root', root), pool: false },
    { id: 'node-fastcgi', label: 'node-fastcgi', script: 'hello.lua', command: nodeFastcgiCommand, pool: false },
    { id: 'libfcgi', label: 'libfcgi (C)', script: 'hello.lua', command: (p) => libfcgiCommand(libfcgiBin, p, POOL_PROCESSES), pool: true },
    { id: 'php-fpm', label: 'PHP-FPM', script: 'hello.php', command: (p) => phpFpmCommand(programs.phpFpm!, tmp, p, POOL_PROCESSES), pool: true },
  ];
  const ports = await freePorts(peers.length);
  const results: PeerResult[] = [];
  ctx.progress.plan(peers.map((p) => ({ label: `idle: ${count} connections to ${p.label}`, seconds: 8 })));
  for (const [i, p] of peers.entries()) {
    ctx.progress.begin(i);
    const port = ports[i]!;
    const [cmd, args] = p.command(port);
    const proc: Managed = start(p.id, cmd, args, path.join(tmp, `${p.id}.log`), { cpus: SERVER_CPU, cwd: p.id === 'libfcgi' ? tmp : repoRoot });
    let held: Held | null = null;
    try {
      await waitForListen(port, proc);
      const request = keptRequest(path.join(root, p.script), root);
      // One request first, so that "before" includes a served request (engines loaded, script compiled).
      const warm = await holdConnections(port, 1, request, ANSWER_WAIT_MS);
      if (warm.answered !== 1) throw new Error(`${p.label}: no answer to a single request`);
      for (const s of warm.sockets) s.destroy();
      await sleep(500);
      const before = groupMemory(proc.pid);
      held = await holdConnections(port, count, request, ANSWER_WAIT_MS);
      // Let the allocator and the kernel settle before reading.
      await sleep(1000);
      const after = groupMemory(proc.pid);
      const fresh = await holdConnections(port, 1, request, 2000);
      for (const s of fresh.sockets) s.destroy();
      results.push({
        label: p.label,
        processes: p.pool ? `${POOL_PROCESSES} (pool)` : '1',
        before,
        after,
        answered: held.answered,
        closed: held.closed,
        fresh: fresh.answered === 1,
        perConnectionProcess: p.pool,
      });
    } finally {
      for (const s of held?.sockets ?? []) s.destroy();
      await stop(proc);
    }
  }
  ctx.progress.done();

  const m = machine();
  const lines = [
    `# idle: ${int(count)} kept-alive FastCGI connections`,
    '',
    `- Date: ${m.date}; machine: ${m.cpuModel}, ${m.cpus} CPUs, Linux ${m.kernel}; Node ${m.node}` +
      (programs.phpFpm ? `; ${programVersion(programs.phpFpm, ['-v']).replace(/\s*\(built:.*$/, '')}` : ''),
    `- Method: ${int(count)} TCP connections straight to the backend (no nginx: its memory would mix in), each carrying one GET ` +
      `request with FCGI_KEEP_CONN, then held open and idle; answers awaited up to ${ANSWER_WAIT_MS / 1000} s. Memory of the ` +
      'backend before (after one served request) and 1 s after, summed over its processes: VmRSS, and private memory ' +
      '(Private_Clean + Private_Dirty of /proc/PID/smaps_rollup, which leaves out pages shared between processes). ' +
      '"New connection answered": a request on one more connection while the others are held, within 2 s',
    `- Lodestone: \`lodestone serve --root DIR --workers 0\`; libfcgi and PHP-FPM (\`pm = static\`): ${POOL_PROCESSES} processes, ` +
      'as in the hello scenario; each of their processes serves one kept connection until the client closes it',
    '',
    '| Backend | processes | answered | closed by backend | new connection answered | RSS before | RSS after | private before | private after | private per connection |',
    '|---|---:|---:|---:|---|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    const perConn = r.answered > 0 ? `${((r.after.privateKiB - r.before.privateKiB) / count).toFixed(1)} KiB` : '—';
    lines.push(
      `| ${r.label} | ${r.processes} | ${int(r.answered)} of ${int(count)} | ${int(r.closed)} | ${r.fresh ? 'yes' : '**no**'} | ` +
        `${mib(r.before.rssKiB)} | ${mib(r.after.rssKiB)} | ${mib(r.before.privateKiB)} | ${mib(r.after.privateKiB)} | ${perConn} |`,
    );
  }
  lines.push('');
  lines.push('"private per connection" divides the growth by all connections held, answered or not.');
  for (const r of results.filter((x) => x.perConnectionProcess)) {
    const perProcess = r.before.privateKiB / Math.max(1, r.before.processes);
    lines.push(
      `- ${r.label}: ${int(r.answered)} of ${int(count)} connections answered, one per process; a pool that serves all ` +
        `${int(count)} at once needs ${int(count)} processes, about ${mib(perProcess * count)} of private memory at ` +
        `${kibOrMib(perProcess)} a process (estimate: private memory per process now, times ${int(count)}).`,
    );
  }
  for (const r of results.filter((x) => x.closed > 0)) {
    lines.push(`- ${r.label} closed ${int(r.closed)} of the connections after answering, so it holds them neither open nor in memory${r.label === 'node-fastcgi' ? ` (${NODE_FASTCGI_NOTE})` : ''}.`);
  }
  lines.push('');
  const valid = results.every((r) => r.perConnectionProcess || (r.answered === count && r.fresh));
  if (!valid) lines.push('**A single-process backend did not answer every connection: the run is INVALID.**', '');
  return { markdown: lines.join('\n'), valid };
}

export const idle: Scenario = {
  name: 'idle',
  summary: '1,000 idle kept-alive FastCGI connections: memory per connection, Lodestone vs node-fastcgi, libfcgi, PHP-FPM',
  needs: ['gcc', 'libfcgi-dev', 'php-fpm', 'node-fastcgi', 'taskset'],
  run,
};
