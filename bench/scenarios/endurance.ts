/**
 * The endurance scenario (issue 22): memory of Lodestone's processes over a million requests,
 * under the process manager as it is deployed (a primary and one worker), so the report has each
 * process's memory: the primary's (it forks and supervises, and must load nothing of the request
 * path), the worker's before any script ran (no engine made), after its first Lua request (the
 * engine made), then every BENCH_ENDURANCE_STEP requests up to BENCH_ENDURANCE_REQUESTS, and
 * after one JS request at the end (the second engine). A leak shows as a worker RSS that keeps
 * climbing past the first samples; a bounded cache or heap levels off.
 *
 * The load is hello.lua on the default engine (lua54), straight over FastCGI (no web server:
 * its memory is not the question): BENCH_CONNECTIONS kept-alive connections, each sending its
 * next request when the last one's END_REQUEST arrives, from this process on the client CPU.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { FCGI_END_REQUEST } from '../../runtime/fastcgi/constants.js';
import { RecordParser } from '../../runtime/fastcgi/records.js';
import { keptRequest } from './idle.js';
import { processMemory, type ProcessMemory } from '../lib/cpu.js';
import { machine, SERVER_CPU, type Context } from '../lib/harness.js';
import { lodestoneCommand } from '../lib/peers.js';
import type { Programs } from '../lib/prereq.js';
import { freePorts, sleep, start, stop, waitForListen } from '../lib/procs.js';
import { int, mib } from '../lib/report.js';
import type { Scenario, ScenarioResult } from '../lib/scenario.js';
import { envInt } from '../lib/settings.js';
import { barChart } from '../lib/svg.js';

/** The primary's children (the workers), from /proc. */
function childrenOf(pid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((s) => s !== '')
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * Sends `count` requests over `connections` kept-alive connections, each sending its next
 * request when its last one ended; resolves with the wall time, rejects on a closed connection.
 */
async function drive(port: number, request: Buffer, count: number, connections: number): Promise<number> {
  const started = performance.now();
  let sent = 0;
  let ended = 0;
  await new Promise<void>((resolve, reject) => {
    const sockets: net.Socket[] = [];
    const finish = (err?: Error): void => {
      for (const s of sockets) s.destroy();
      if (err) reject(err);
      else resolve();
    };
    for (let c = 0; c < Math.min(connections, count); c++) {
      const socket = net.connect({ host: '127.0.0.1', port });
      sockets.push(socket);
      socket.setNoDelay(true);
      const parser = new RecordParser((type) => {
        if (type !== FCGI_END_REQUEST) return;
        if (++ended === count) return finish();
        if (sent < count) {
          sent++;
          socket.write(request);
        }
      });
      socket.on('data', (chunk: Buffer) => parser.push(chunk));
      socket.on('error', (err) => finish(err));
      socket.on('close', () => {
        if (ended < count) finish(new Error(`a connection closed after ${ended} of ${count} requests`));
      });
      sent++;
      socket.write(request);
    }
  });
  return performance.now() - started;
}

interface Sample {
  label: string;
  requests: number;
  primary: ProcessMemory;
  worker: ProcessMemory;
  /** Requests per second over the segment that ended here; null for the first samples. */
  rate: number | null;
}

async function run(ctx: Context, _programs: Programs): Promise<ScenarioResult> {
  const quick = process.env.BENCH_QUICK === '1';
  const total = envInt('BENCH_ENDURANCE_REQUESTS', quick ? 20_000 : 1_000_000, 1);
  const stepSize = envInt('BENCH_ENDURANCE_STEP', Math.max(1, Math.round(total / 10)), 1);
  const connections = envInt('BENCH_CONNECTIONS', 16, 1);
  const root = path.join(ctx.tmp, 'endurance-root');
  fs.mkdirSync(root, { recursive: true });
  fs.writeFileSync(path.join(root, 'hello.lua'), 'print("hello")');
  fs.writeFileSync(path.join(root, 'hello.js'), 'print("hello");');
  const [port] = (await freePorts(1)) as [number];
  const [cmd, args] = lodestoneCommand(`tcp:127.0.0.1:${port}`, '--root', root, '--workers', '1');
  const segments = Math.ceil(total / stepSize);
  ctx.progress.plan([{ label: 'endurance: start', seconds: 2 }, ...Array.from({ length: segments }, (_, i) => ({ label: `endurance: requests to ${int(Math.min(total, (i + 1) * stepSize))}`, seconds: stepSize / 15_000 }))]);
  ctx.progress.begin(0);
  const server = start('lodestone', cmd, args, path.join(ctx.tmp, 'endurance.log'), { cpus: SERVER_CPU });
  const samples: Sample[] = [];
  let valid = true;
  try {
    await waitForListen(port, server);
    let worker = 0;
    for (let i = 0; i < 50 && worker === 0; i++) {
      worker = childrenOf(server.pid)[0] ?? 0;
      if (worker === 0) await sleep(100);
    }
    if (worker === 0) throw new Error('the worker did not start');
    // Let startup settle (the worker's spare JS module, lazy imports) before the idle sample.
    await sleep(1500);
    const sample = (label: string, requests: number, rate: number | null): void => {
      samples.push({ label, requests, primary: processMemory(server.pid), worker: processMemory(worker), rate });
    };
    sample('idle: no script run yet', 0, null);
    const lua = keptRequest(path.join(root, 'hello.lua'), root);
    await drive(port, lua, 1, 1);
    await sleep(500);
    sample('after the first Lua request', 1, null);
    let done = 1;
    for (let s = 0; s < segments; s++) {
      ctx.progress.begin(s + 1);
      const n = Math.min(stepSize, total - done);
      const ms = await drive(port, lua, n, connections);
      done += n;
      sample(`${int(done)} Lua requests`, done, (n * 1000) / ms);
    }
    await drive(port, keptRequest(path.join(root, 'hello.js'), root), 1, 1);
    await sleep(500);
    sample('then one JS request', done + 1, null);
    if (childrenOf(server.pid)[0] !== worker) {
      valid = false;
      ctx.note('endurance: the worker was replaced during the run');
    }
  } finally {
    await stop(server);
    ctx.progress.done();
  }

  const m = machine();
  const base = samples[1]!.worker.rssKiB;
  const lines = [
    `# endurance: ${int(total)} requests, memory per process`,
    '',
    `- Date: ${m.date}; machine: ${m.cpuModel}, ${m.cpus} CPUs, Linux ${m.kernel}; Node ${m.node}`,
    `- Method: \`lodestone serve --workers 1\` (a primary and one worker, the server pinned to CPU ${SERVER_CPU}), hello.lua on the ` +
      `default Lua engine straight over FastCGI: ${connections} kept-alive connections, each sending its next request when the last ` +
      `ended, from the bench process. Memory per process after each ${int(stepSize)} requests: VmRSS, and private memory ` +
      '(Private_Clean + Private_Dirty of /proc/PID/smaps_rollup). "vs first request": the worker\'s RSS against the sample after ' +
      'its first Lua request (engine made), where a leak would keep climbing.',
    '',
    '| Sample | primary RSS | primary private | worker RSS | worker private | worker RSS vs first request | req/s in the segment |',
    '|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const s of samples) {
    const vs = s.requests >= 1 ? `${(((s.worker.rssKiB - base) / base) * 100).toFixed(1)}%` : '';
    lines.push(
      `| ${s.label} | ${mib(s.primary.rssKiB)} | ${mib(s.primary.privateKiB)} | ${mib(s.worker.rssKiB)} | ${mib(s.worker.privateKiB)} | ${vs} | ` +
        `${s.rate === null ? '' : int(s.rate)} |`,
    );
  }
  lines.push('');
  if (!valid) lines.push('**The worker was replaced during the run: the run is INVALID.**', '');
  const svg = barChart(
    samples.map((s) => ({ label: s.label, median: s.worker.rssKiB / 1024, min: s.worker.rssKiB / 1024, max: s.worker.rssKiB / 1024, highlight: true })),
    { title: `Worker RSS over ${int(total)} requests (hello.lua)`, unit: 'MiB', subtitle: `primary: ${mib(samples.at(-1)!.primary.rssKiB)}` },
  );
  return { markdown: lines.join('\n'), svg, valid };
}

export const endurance: Scenario = {
  name: 'endurance',
  summary: '1M hello.lua requests through a primary and one worker: RSS of each process every 100k (BENCH_ENDURANCE_REQUESTS, _STEP)',
  needs: ['taskset'],
  run,
};
