/**
 * The gc scenario (issue 22): what a connection per request leaves to V8's garbage collector,
 * Lodestone against the Node floor peer (bench/peers/node-floor.mjs), each run with
 * `--trace-gc --trace-gc-nvp` on the server CPU. Node keeps a closed socket alive past a
 * scavenge or two, until its handle is freed, so everything a socket reaches when it closes is
 * promoted to the old generation with it; the mark-compacts that collect it are the long pauses
 * behind the connection-per-request p99 (hello scenario). The report gives, per connection, the
 * bytes promoted by scavenges, and per run the scavenge time, mark-compacts and longest pause.
 *
 * The load comes from this process on the client CPU, straight over FastCGI (no web server: its
 * own allocations are not the question): BENCH_CONNECTIONS loops, each opening a connection,
 * sending one request without FCGI_KEEP_CONN and waiting for the server's close, as lighttpd and
 * nginx without keep-alive do.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { keptRequest } from './idle.js';
import { machine, SERVER_CPU, type Context } from '../lib/harness.js';
import { lodestoneCommand, nodeFloorCommand } from '../lib/peers.js';
import type { Programs } from '../lib/prereq.js';
import { freePorts, sleep, start, stop, waitForListen } from '../lib/procs.js';
import { int, median } from '../lib/report.js';
import type { Scenario, ScenarioResult } from '../lib/scenario.js';
import { envInt } from '../lib/settings.js';
import { barChart } from '../lib/svg.js';

/** What one run's GC trace and client measured. */
interface GcRun {
  peer: string;
  round: number;
  connections: number;
  p99Ms: number;
  promotedPerConnection: number;
  scavengeMsPerS: number;
  markCompacts: number;
  maxPauseMs: number;
}

/**
 * Opens a connection per request from `loops` loops for `ms`; returns the requests answered (an
 * END_REQUEST, then the server's close), their latencies, and the failures.
 */
async function connectionPerRequest(port: number, request: Buffer, loops: number, ms: number): Promise<{ latencies: number[]; failed: number }> {
  const latencies: number[] = [];
  let failed = 0;
  const until = performance.now() + ms;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const t0 = performance.now();
      let answered = false;
      const socket = net.connect({ host: '127.0.0.1', port });
      // END_REQUEST's header: version 1, type 3 (this load never gets a record split across reads
      // from a server that writes each response once).
      socket.on('data', (d: Buffer) => {
        if (d.includes(END_REQUEST_HEADER)) answered = true;
      });
      socket.on('error', () => {});
      socket.on('close', () => {
        if (answered) latencies.push(performance.now() - t0);
        else failed++;
        resolve();
      });
      socket.write(request);
    });
  const loop = async (): Promise<void> => {
    while (performance.now() < until) await one();
  };
  await Promise.all(Array.from({ length: loops }, loop));
  return { latencies, failed };
}

const END_REQUEST_HEADER = Buffer.from([1, 3]);

/** Sums a --trace-gc-nvp log from byte `from`: scavenges' promoted bytes and time, mark-compacts, the longest pause. */
function readTrace(file: string, from: number): { promoted: number; scavengeMs: number; markCompacts: number; maxPauseMs: number } {
  const text = fs.readFileSync(file).subarray(from).toString('utf8');
  let promoted = 0;
  let scavengeMs = 0;
  let markCompacts = 0;
  let maxPauseMs = 0;
  for (const line of text.split('\n')) {
    const kind = / gc=(\w+)/.exec(line)?.[1];
    const pause = Number(/ pause=([\d.]+)/.exec(line)?.[1] ?? NaN);
    if (kind === undefined || Number.isNaN(pause)) continue;
    maxPauseMs = Math.max(maxPauseMs, pause);
    if (kind === 's') {
      scavengeMs += pause;
      promoted += Number(/ promoted=(\d+)/.exec(line)?.[1] ?? 0);
    } else if (kind === 'mc' || kind === 'mmc') {
      markCompacts++;
    }
  }
  return { promoted, scavengeMs, markCompacts, maxPauseMs };
}

async function run(ctx: Context, _programs: Programs): Promise<ScenarioResult> {
  const quick = process.env.BENCH_QUICK === '1';
  const seconds = envInt('BENCH_DURATION', quick ? 2 : 10, 1);
  const rounds = envInt('BENCH_ROUNDS', quick ? 1 : 3, 1);
  const loops = envInt('BENCH_CONNECTIONS', 16, 1);
  const root = path.join(ctx.tmp, 'gc-root');
  fs.mkdirSync(root, { recursive: true });
  fs.writeFileSync(path.join(root, 'hello.lua'), 'response.headers["Content-Type"] = "text/plain"\nwrite("123")\n');
  const request = keptRequest(path.join(root, 'hello.lua'), root, false);
  const peers: Array<{ name: string; command: (port: number) => [string, string[]] }> = [
    { name: 'Lodestone Lua hello', command: (port) => lodestoneCommand(`tcp:127.0.0.1:${port}`, '--root', root) },
    { name: 'Node floor (canned reply)', command: (port) => nodeFloorCommand(port) },
  ];
  ctx.progress.plan(Array.from({ length: rounds * peers.length }, (_, i) => ({ label: `gc: ${peers[i % peers.length]!.name}, round ${Math.floor(i / peers.length) + 1}`, seconds: seconds + 4 })));
  const runs: GcRun[] = [];
  let valid = true;
  let step = 0;
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const peer of peers) {
        ctx.progress.begin(step++);
        const [port] = (await freePorts(1)) as [number];
        const [cmd, args] = peer.command(port);
        const log = path.join(ctx.tmp, `gc-${runs.length}.log`);
        const server = start(peer.name, cmd, ['--trace-gc', '--trace-gc-nvp', ...args], log, { cpus: SERVER_CPU });
        try {
          await waitForListen(port, server);
          await connectionPerRequest(port, request, loops, 2000);
          await sleep(200);
          const from = fs.statSync(log).size;
          const load = await connectionPerRequest(port, request, loops, seconds * 1000);
          const trace = readTrace(log, from);
          const served = load.latencies.length;
          if (load.failed > 0 || served === 0) {
            valid = false;
            ctx.note(`gc: ${peer.name} round ${round}: ${load.failed} connections closed without END_REQUEST`);
          }
          load.latencies.sort((a, b) => a - b);
          runs.push({
            peer: peer.name,
            round,
            connections: served,
            p99Ms: load.latencies[Math.floor(served * 0.99)] ?? NaN,
            promotedPerConnection: trace.promoted / Math.max(1, served),
            scavengeMsPerS: trace.scavengeMs / seconds,
            markCompacts: trace.markCompacts,
            maxPauseMs: trace.maxPauseMs,
          });
        } finally {
          await stop(server);
        }
      }
    }
  } finally {
    ctx.progress.done();
  }

  const m = machine();
  const lines = [
    '# gc: what a connection per request leaves to the garbage collector',
    '',
    `- Date: ${m.date}; machine: ${m.cpuModel}, ${m.cpus} CPUs, Linux ${m.kernel}; Node ${m.node}`,
    `- Method: each server with \`--trace-gc --trace-gc-nvp\`, pinned to CPU ${SERVER_CPU}; ${loops} loops in the bench process ` +
      `each open a connection, send one request without FCGI_KEEP_CONN (hello.lua for Lodestone, \`--workers 0\`) and wait for the ` +
      `close; 2 s warm-up, then ${seconds} s measured, ${rounds} interleaved round(s). Promoted: the bytes scavenges moved to the old ` +
      'generation (trace-gc-nvp `promoted`), per connection served; mark-compacts and the longest pause (any GC) over the measured seconds',
    '',
    '| Peer | connections/s (median) | p99 | promoted per connection | scavenge ms per s | mark-compacts | longest pause |',
    '|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const peer of peers) {
    const mine = runs.filter((r) => r.peer === peer.name);
    const med = (f: (r: GcRun) => number): number => median(mine.map(f));
    lines.push(
      `| ${peer.name} | ${int(med((r) => r.connections / seconds))} | ${med((r) => r.p99Ms).toFixed(2)} ms | ` +
        `${int(med((r) => r.promotedPerConnection))} B | ${med((r) => r.scavengeMsPerS).toFixed(1)} | ${med((r) => r.markCompacts)} | ${med((r) => r.maxPauseMs).toFixed(1)} ms |`,
    );
  }
  lines.push('', 'Per run:', '', '| Round | Peer | connections | p99 | promoted per connection | scavenge ms per s | mark-compacts | longest pause |', '|---:|---|---:|---:|---:|---:|---:|---:|');
  for (const r of runs) {
    lines.push(`| ${r.round} | ${r.peer} | ${int(r.connections)} | ${r.p99Ms.toFixed(2)} ms | ${int(r.promotedPerConnection)} B | ${r.scavengeMsPerS.toFixed(1)} | ${r.markCompacts} | ${r.maxPauseMs.toFixed(1)} ms |`);
  }
  lines.push('');
  if (!valid) lines.push('**A connection closed without its answer: the run is INVALID.**', '');
  const svg = barChart(
    peers.map((p, i) => {
      const values = runs.filter((r) => r.peer === p.name).map((r) => r.promotedPerConnection);
      return { label: p.name, median: median(values), min: Math.min(...values), max: Math.max(...values), highlight: i === 0 };
    }),
    { title: 'Bytes promoted per connection (connection per request)', unit: 'B', subtitle: `${loops} loops, ${seconds} s x ${rounds}` },
  );
  return { markdown: lines.join('\n'), svg, valid };
}

export const gc: Scenario = {
  name: 'gc',
  summary: 'a connection per request, Lodestone vs the Node floor under --trace-gc: bytes promoted per connection, scavenges, mark-compacts, pauses',
  needs: ['taskset'],
  run,
};
