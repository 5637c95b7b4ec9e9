/**
 * The launcher (bin/lodestone.js) on every supported Node: it sizes libuv's thread pool from
 * files.statThreads in the config file, TOML or JSON, with or without the process manager. On
 * 22.15+ it re-executes itself in place with V8's young generation capped at Node 20's 16 MiB
 * semi-space through NODE_OPTIONS (see its comment for the measurement), keeping the pid, and
 * leaves a size the user chose alone.
 * That systemd's fd 3 and cgi-fcgi's fd 0 survive is proven by cgi-fcgi.test.ts on every version.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { parseCgi, RawClient, request } from '../helpers/fcgi-client.js';
import { run, startLodestone, tempDir, type Lodestone } from '../helpers/lodestone.js';

const canExec = typeof (process as { execve?: unknown }).execve === 'function';
const skip = canExec ? false : `Node ${process.version} has no process.execve; its semi-space is already capped at 16 MiB`;

function argvOf(pid: number): string[] {
  return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
}

/** NODE_OPTIONS the process was started with (its environment as exec'd). */
function nodeOptionsOf(pid: number): string | undefined {
  const entry = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').find((e) => e.startsWith('NODE_OPTIONS='));
  return entry?.slice('NODE_OPTIONS='.length);
}

test('the launcher caps the semi-space in place: same pid, flag on its command line, still serving', { skip, timeout: 30_000 }, async (t) => {
  const ls = await startLodestone(t);
  // The environment a process was exec'd with: set only by the launcher's own execve.
  assert.equal(nodeOptionsOf(ls.child.pid!), '--max-semi-space-size=16');
  const argv = argvOf(ls.child.pid!);
  assert.ok(argv.some((a) => a.endsWith('bin/lodestone.js')), 'the same script runs after the exec');
  assert.ok(argv.includes('serve') && argv.includes('--diagnostic'), 'with the same arguments');
  assert.match(ls.log(), /lodestone listening/);
});

test('a semi-space size chosen in NODE_OPTIONS is left alone', { skip, timeout: 30_000 }, async (t) => {
  const ls = await startLodestone(t, { env: { NODE_OPTIONS: '--max-semi-space-size=32' } });
  assert.equal(nodeOptionsOf(ls.child.pid!), '--max-semi-space-size=32');
  assert.match(ls.log(), /lodestone listening/);
});

// files.statThreads sizes libuv's pool, which starts once per process: the launcher must read
// it from the config file, TOML or JSON, before anything starts the pool. Counted in /proc in the
// process that serves (the worker under the manager), after a script request has used the pool.

/** The threads of a process, by name. */
function threadNames(pid: number): string[] {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim());
}

// libuv names its pool threads "libuv-worker" on Node 22 and 24; on Node 20 every thread is
// "node", and the pool is what a serving process has beyond one started the same way (alone,
// or as a managed worker: only the one-process server has a watchdog thread) whose pool is a
// single thread.
const namesPoolThreads =
  run(process.execPath, [
    '-e',
    `require('fs').stat('/', () => { const fs = require('fs');
      console.log(fs.readdirSync('/proc/self/task').some((t) => fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim() === 'libuv-worker')); })`,
  ]).stdout.toString().trim() === 'true';
const otherThreads = new Map<string, number>();

async function serve(t: TestContext, args: string[]): Promise<{ ls: Lodestone; pid: number }> {
  const root = tempDir(t);
  fs.writeFileSync(path.join(root, 'hello.lua'), 'print("hi")');
  const env = { ...process.env };
  delete env.UV_THREADPOOL_SIZE;
  const ls = await startLodestone(t, { diagnostic: false, args: ['--root', root, ...args], env });
  const worker = /worker listening .*pid=(\d+)/.exec(ls.log());
  const pid = worker ? Number(worker[1]) : ls.child.pid!;
  const client = await RawClient.connect({ port: ls.port });
  await client.write(request(1, { SCRIPT_FILENAME: path.join(root, 'hello.lua'), REQUEST_METHOD: 'GET' }));
  assert.equal(parseCgi((await client.reply(1)).stdout).body.toString(), 'hi\n');
  client.close();
  return { ls, pid };
}

async function poolThreads(t: TestContext, pid: number, workers: string): Promise<number> {
  const names = threadNames(pid);
  if (namesPoolThreads) return names.filter((n) => n === 'libuv-worker').length;
  let others = otherThreads.get(workers);
  if (others === undefined) {
    const one = await serve(t, ['--workers', workers, '--stat-threads', '1']);
    others = threadNames(one.pid).length - 1;
    otherThreads.set(workers, others);
    await one.ls.stop();
  }
  return names.length - others;
}

for (const [file, text] of [
  ['lodestone.toml', '[files]\nstatThreads = 20\n'],
  ['lodestone.json', '{ "files": { "statThreads": 20 } }'],
] as const) {
  for (const workers of ['0', '1']) {
    test(`files.statThreads = 20 in ${file}, --workers ${workers}: the serving process has 20 pool threads`, { timeout: 60_000 }, async (t) => {
      const config = path.join(tempDir(t), file);
      fs.writeFileSync(config, text);
      const { ls, pid } = await serve(t, ['--config', config, '--workers', workers]);
      assert.equal(await poolThreads(t, pid, workers), 20, `threads of ${pid}: ${threadNames(pid).join(' ')}`);
      assert.doesNotMatch(ls.log(), /cannot take effect/);
    });
  }
}
