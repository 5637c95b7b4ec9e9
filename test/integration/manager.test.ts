/**
 * The process manager behind real nginx with kept-alive upstream connections: N worker pids
 * serve, a SIGKILLed worker is replaced, SIGHUP reloads under load with no failed request, and
 * --max-requests recycles workers, the status page sums the workers. Which worker answered comes
 * from the diagnostic report's pid.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { startLodestone, tempDir, type Lodestone } from '../helpers/lodestone.js';
import { havePrograms, signalPid, startNginx, type WebServer } from '../helpers/peers.js';
import { waitFor } from '../shared/poll.js';

const timeout = 20_000;

/** Lodestone with `args` behind nginx; `keepalive`: nginx's idle upstream connections (null: a connection per request). */
async function setup(t: test.TestContext, args: string[], keepalive: number | null = 16): Promise<{ lodestone: Lodestone; nginx: WebServer } | null> {
  if (!havePrograms(t, 'nginx')) return null;
  const dir = tempDir(t);
  const lodestone = await startLodestone(t, {
    listen: `unix:${path.join(dir, 'ls.sock')}`,
    args,
    config: { statusPath: '/status' },
  });
  const nginx = await startNginx(t, { fastcgiPass: `unix:${lodestone.socketPath}`, ...(keepalive !== null ? { keepalive } : {}) });
  return { lodestone, nginx };
}

/** The primary's live child pids (its workers), from /proc. */
function childPids(pid: number): number[] {
  try {
    return readChildren(pid);
  } catch {
    return [];
  }
}

function readChildren(pid: number): number[] {
  const out: number[] = [];
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    const text = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    if (text !== '') out.push(...text.split(/\s+/).map(Number));
  }
  return out.sort((a, b) => a - b);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });

/** One GET of the diagnostic report through nginx on a kept-alive client connection; the answering worker's pid. */
function statusPid(nginx: WebServer): Promise<{ status: number; pid: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get(nginx.url('/report'), { agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (body += s));
      res.on('end', () => {
        let pid = 0;
        try {
          pid = (JSON.parse(body) as { pid: number }).pid;
        } catch {
          // counted as a failure by the status below
        }
        resolve({ status: res.statusCode ?? 0, pid });
      });
      res.on('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

/** Concurrent request loops until `stop()`: counts by pid and every failure with its reason. */
/**
 * `concurrency` request loops through nginx until stopped. Stopped at the end of the test in any
 * case: a test that timed out before its own stop() left them spinning on refused connections,
 * piling up failures (546 MB, half a core) and keeping the test process from ever exiting.
 */
function load(t: TestContext, nginx: WebServer, concurrency: number): { stop(): Promise<void>; pids: Map<number, number>; failures: string[]; total(): number } {
  const pids = new Map<number, number>();
  const failures: string[] = [];
  let running = true;
  let total = 0;
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) {
      try {
        const { status, pid } = await statusPid(nginx);
        total++;
        if (status !== 200 || pid === 0) failures.push(`status ${status}`);
        else pids.set(pid, (pids.get(pid) ?? 0) + 1);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  });
  const stop = async (): Promise<void> => {
    running = false;
    await Promise.all(loops);
  };
  t.after(stop);
  return { pids, failures, total: () => total, stop };
}

test.after(() => agent.destroy());

test('--workers 3: three worker pids serve through nginx', { timeout }, async (t) => {
  // A connection per request: each is a fresh accept race among the three workers. With kept
  // connections, the few nginx opened could all land on two workers and stay there (it failed
  // about one full run in three, CI included).
  const s = await setup(t, ['--workers', '3'], null);
  if (!s) return;
  // Listening, not only forked: a worker that is not accepting yet cannot win a connection.
  await waitFor(() => ((s.lodestone.log().match(/worker listening/g) ?? []).length === 3 ? true : undefined), 5_000, () => 'three workers listening');
  const workers = childPids(s.lodestone.child.pid!);
  const l = load(t, s.nginx, 8);
  await waitFor(() => (l.pids.size === 3 || l.total() > 2000 ? true : undefined), 10_000, () => `pids seen ${[...l.pids.keys()].join(",")}`);
  await l.stop();
  assert.deepEqual(l.failures, []);
  assert.deepEqual([...l.pids.keys()].sort((a, b) => a - b), workers);
});

test('a SIGKILLed worker is replaced within a second and load keeps being served', { timeout }, async (t) => {
  // A connection per request: nginx's kept connections to the surviving worker would carry all
  // the load, and the replacement might win none (it failed a full run so on 2026-12-07).
  const s = await setup(t, ['--workers', '2'], null);
  if (!s) return;
  const primary = s.lodestone.child.pid!;
  const before = await waitFor(() => (childPids(primary).length === 2 ? childPids(primary) : undefined), 5_000, () => 'two workers');
  const l = load(t, s.nginx, 8);
  await waitFor(() => (l.total() > 100 ? true : undefined), 10_000, () => 'some load');
  const victim = before[0]!;
  signalPid(victim, 'SIGKILL');
  const killedAt = Date.now();
  const after = await waitFor(
    () => {
      const now = childPids(primary);
      return now.length === 2 && !now.includes(victim) ? now : undefined;
    },
    5_000,
    () => `replacement for ${victim}: ${childPids(primary).join(",")}`,
  );
  const replacedMs = Date.now() - killedAt;
  const newcomer = after.find((p) => !before.includes(p))!;
  // The replacement serves too; failures are only the requests in flight on the killed worker.
  await waitFor(() => (l.pids.has(newcomer) ? true : undefined), 10_000, () => `requests on ${newcomer}`);
  const failedAtKill = l.failures.length;
  const mark = l.total();
  await waitFor(() => (l.total() > mark + 200 ? true : undefined), 10_000, () => 'load after the kill');
  await l.stop();
  assert.ok(replacedMs < 1000, `replaced after ${replacedMs} ms`);
  assert.ok(failedAtKill <= 8, `at most the in-flight requests fail: ${l.failures.join(', ')}`);
  assert.equal(l.failures.length, failedAtKill, 'no failures after the replacement');
  assert.match(s.lodestone.log(), / warn LS_WORKER_DIED worker died; replacing it /);
});

// Ten reloads take ~1 s each on an idle 2-core machine and twice that when the other test file
// is busy: each one is bounded by its own 8 s waits below, so the whole test gets their sum.
test('SIGHUP reload 10 times under keep-alive load through nginx: 0 failed requests, new pids', { timeout: 90_000 }, async (t) => {
  const s = await setup(t, ['--workers', '2']);
  if (!s) return;
  const primary = s.lodestone.child.pid!;
  const first = await waitFor(() => (childPids(primary).length === 2 ? childPids(primary) : undefined), 5_000, () => 'two workers');
  const l = load(t, s.nginx, 16);
  let seen = first;
  for (let i = 1; i <= 10; i++) {
    const mark = l.total();
    signalPid(primary, 'SIGHUP');
    // Old generation gone and two new workers left: the reload finished.
    seen = await waitFor(
      () => {
        const now = childPids(primary);
        return now.length === 2 && now.every((p) => !seen.includes(p)) ? now : undefined;
      },
      8_000,
      () => `reload ${i}: ${childPids(primary).join(",")}`,
    );
    await waitFor(() => (l.total() > mark + 50 ? true : undefined), 8_000, () => `load during reload ${i}`);
  }
  await l.stop();
  assert.deepEqual(l.failures, [], `${l.failures.length} of ${l.total()} failed; nginx: ${s.nginx.errorLog()}`);
  for (const pid of seen) assert.ok(l.pids.has(pid), `the last generation (${pid}) served`);
  assert.equal((s.lodestone.log().match(/reloaded: old workers finish/g) ?? []).length, 10);
});

test('--max-requests 50: workers retire and are replaced, no failed request', { timeout }, async (t) => {
  const s = await setup(t, ['--workers', '2', '--max-requests', '50']);
  if (!s) return;
  const l = load(t, s.nginx, 4);
  const retired = (): number => (s.lodestone.log().match(/worker retiring after max requests/g) ?? []).length;
  await waitFor(() => (retired() >= 4 ? true : undefined), 15_000, () => `4 retirements, got ${retired()} in ${l.total()} requests`);
  await l.stop();
  assert.deepEqual(l.failures, [], `nginx: ${s.nginx.errorLog()}\nlodestone: ${s.lodestone.log()}`);
  // A retiring worker serves on until its replacement listens, so counts pass 50 a little;
  // replacements served too.
  assert.ok(l.pids.size >= 3, `${l.pids.size} worker pids`);
  assert.match(s.lodestone.log(), /worker retiring after max requests/);
});

test('SIGTERM stops the primary and every worker gracefully (exit 0)', { timeout }, async (t) => {
  const s = await setup(t, ['--workers', '2']);
  if (!s) return;
  const primary = s.lodestone.child.pid!;
  const workers = await waitFor(() => (childPids(primary).length === 2 ? childPids(primary) : undefined), 5_000, () => 'two workers');
  assert.equal(await s.lodestone.stop(), 0);
  for (const pid of workers) assert.throws(() => process.kill(pid, 0), 'worker gone');
});

test('the status page sums every worker, in each format', { timeout }, async (t) => {
  // A connection per request, so both workers get requests (kept connections could all land on
  // one: "both workers served" timed out once on Node 22 under load).
  const s = await setup(t, ['--workers', '2'], null);
  if (!s) return;
  const primary = s.lodestone.child.pid!;
  const workers = await waitFor(() => (childPids(primary).length === 2 ? childPids(primary) : undefined), 5_000, () => 'two workers');
  await waitFor(() => ((s.lodestone.log().match(/worker listening/g) ?? []).length === 2 ? true : undefined), 5_000, () => 'both listening');
  const l = load(t, s.nginx, 8);
  await waitFor(() => (l.pids.size === 2 ? true : undefined), 10_000, () => `both workers served: ${[...l.pids.keys()].join(',')}`);
  await l.stop();
  const served = l.total();
  const json = JSON.parse((await fetchText(s.nginx.url('/status?json')))) as {
    'process manager': string;
    'accepted requests': number;
    workers: Array<{ pid: number; requests: number }>;
  };
  assert.equal(json['process manager'], 'static');
  assert.deepEqual(json.workers.map((w) => w.pid), workers);
  // Every load request plus this status request, counted by the worker that took it.
  assert.equal(json['accepted requests'], served + 1);
  assert.equal(json.workers.reduce((n, w) => n + w.requests, 0), served + 1);
  for (const w of json.workers) assert.ok(w.requests >= l.pids.get(w.pid)!, `worker ${w.pid}`);
  const text = await fetchText(s.nginx.url('/status'));
  assert.match(text, /process manager: +static/);
  for (const pid of workers) assert.match(text, new RegExp(`worker ${pid}: `));
  const metrics = await fetchText(s.nginx.url('/status?openmetrics'));
  for (const pid of workers) assert.match(metrics, new RegExp(`lodestone_worker_requests_total\\{pool="lodestone",pid="${pid}"\\} \\d+`));
  assert.match(metrics, new RegExp(`lodestone_accepted_requests_total\\{pool="lodestone"\\} ${served + 3}`));
});

function fetchText(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`status ${res.statusCode}: ${body}`))));
      })
      .on('error', reject);
  });
}

test('a reload whose new workers cannot start (bad config on disk) keeps the running workers', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const dir = tempDir(t);
  const config = path.join(dir, 'lodestone.toml');
  fs.writeFileSync(config, 'statusPath = "/status"\n');
  const lodestone = await startLodestone(t, { listen: `unix:${path.join(dir, 'ls.sock')}`, args: ['--workers', '2', '--config', config] });
  const nginx = await startNginx(t, { fastcgiPass: `unix:${lodestone.socketPath}`, keepalive: 8 });
  const primary = lodestone.child.pid!;
  await waitFor(() => ((lodestone.log().match(/worker listening/g) ?? []).length === 2 ? true : undefined), 5_000, () => 'two workers listening');
  const workers = childPids(primary);
  fs.writeFileSync(config, 'statusPath = [\n');
  signalPid(primary, 'SIGHUP');
  await lodestone.waitForLog(/reload failed: a new worker did not start/);
  await waitFor(() => (childPids(primary).length === 2 ? true : undefined), 5_000, () => `the failed generation gone: ${childPids(primary).join(',')}`);
  assert.deepEqual(childPids(primary), workers, `the old workers still run: ${lodestone.log()}`);
  const l = load(t, nginx, 4);
  await waitFor(() => (l.total() > 50 ? true : undefined), 10_000, () => 'load after the failed reload');
  await l.stop();
  assert.deepEqual(l.failures, []);
});
