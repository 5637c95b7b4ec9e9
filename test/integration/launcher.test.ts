/**
 * The launcher (bin/lodestone.js) on every supported Node: on 22.15+ it re-executes itself in
 * place with V8's young generation capped at Node 20's 16 MiB semi-space through NODE_OPTIONS
 * (see its comment for the measurement), keeping the pid, and leaves a size the user chose alone.
 * That systemd's fd 3 and cgi-fcgi's fd 0 survive is proven by cgi-fcgi.test.ts on every version.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import test from 'node:test';
import { startLodestone } from '../helpers/lodestone.js';

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
