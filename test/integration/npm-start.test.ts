/**
 * `npm start` execs node (issue 17, item 5): npm forwards a signal to its child, so SIGTERM to
 * npm's pid stops the development server gracefully. With `sh -c node ...` in between, the
 * shell took the signal's place and node was left running, orphaned.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import test from 'node:test';
import { tempDir } from '../helpers/lodestone.js';
import { repoRoot } from '../shared/repo.js';
import { freePort, killAfter, pidsWithArg } from '../helpers/peers.js';
import { waitFor } from '../shared/poll.js';

test('SIGTERM to npm start stops the development server it started, temp dir and all', { timeout: 60_000 }, async (t) => {
  const root = tempDir(t, 'lodestone-npm-start-');
  const port = await freePort();
  // Later flags win: the test's port and root instead of 8080 and scripts/.
  const npm = spawn('npm', ['start', '--', '--http', `127.0.0.1:${port}`, '--root', root], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  killAfter(t, root);
  let out = '';
  npm.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  npm.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
  const banner = await waitFor(() => /development server: \S+/.exec(out)?.[0], 30_000, () => `the banner in:\n${out}`);
  assert.match(banner, new RegExp(`127\\.0\\.0\\.1:${port}`));
  const devDir = /listen=unix:(\S+)\/fastcgi\.sock/.exec(out)?.[1];
  assert.ok(devDir !== undefined && fs.existsSync(devDir), `the dev server's socket dir:\n${out}`);
  assert.ok(pidsWithArg(root).length > 0, 'node runs');
  npm.kill('SIGTERM');
  await waitFor(() => (pidsWithArg(root).length === 0 ? true : undefined), 10_000, () => `node still runs after SIGTERM to npm: ${pidsWithArg(root).join(',')}\n${out}`);
  assert.match(out, /stopping gracefully signal=SIGTERM/);
  assert.ok(!fs.existsSync(devDir), 'the temp dir is removed');
});
