/**
 * The launcher (bin/lodestone.js) on every supported Node: on 22.15+ it re-executes itself in
 * place with V8's young generation capped at Node 20's 16 MiB semi-space (see its comment for
 * the measurement), keeping the pid, and leaves a size the user chose alone.
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

test('the launcher caps the semi-space in place: same pid, flag on its command line, still serving', { skip, timeout: 30_000 }, async (t) => {
  const ls = await startLodestone(t);
  const argv = argvOf(ls.child.pid!);
  assert.ok(argv.includes('--max-semi-space-size=16'), `argv: ${argv.join(' ')}`);
  assert.ok(argv.some((a) => a.endsWith('bin/lodestone.js')), 'the same script runs after the exec');
  assert.ok(argv.includes('serve') && argv.includes('--diagnostic'), 'with the same arguments');
  assert.match(ls.log(), /lodestone listening/);
});

test('a semi-space size chosen in NODE_OPTIONS is left alone', { skip, timeout: 30_000 }, async (t) => {
  const ls = await startLodestone(t, { env: { NODE_OPTIONS: '--max-semi-space-size=32' } });
  const argv = argvOf(ls.child.pid!);
  assert.ok(!argv.some((a) => a.startsWith('--max-semi-space-size')), `argv: ${argv.join(' ')}`);
  assert.match(ls.log(), /lodestone listening/);
});
