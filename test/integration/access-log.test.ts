/**
 * The access log through real nginx with two managed workers: one line per request, in one
 * file both workers append to, and SIGUSR2 to the primary makes every worker reopen it after
 * logrotate's rename.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { startLodestone, tempDir } from '../helpers/lodestone.js';
import { havePrograms, httpRequest, signalPid, startNginx } from '../helpers/peers.js';
import { waitFor } from '../shared/poll.js';

test('access log: a line per request from both workers; SIGUSR2 reopens it after a rename', { timeout: 20_000 }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const dir = tempDir(t);
  const accessLog = path.join(dir, 'access.log');
  const lodestone = await startLodestone(t, {
    listen: `unix:${path.join(dir, 'ls.sock')}`,
    args: ['--workers', '2', '--access-log', accessLog],
  });
  await waitFor(() => ((lodestone.log().match(/worker listening/g) ?? []).length === 2 ? true : undefined), 5000, () => 'two workers listening');
  // A connection per request: kept connections could all land on one worker.
  const nginx = await startNginx(t, { fastcgiPass: `unix:${lodestone.socketPath}` });
  const lines = (file: string): string[] => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : []);

  // Concurrent batches, so both workers take some.
  const pids = new Set<number>();
  let sent = 0;
  for (let batch = 0; batch < 25 && (pids.size < 2 || sent < 40); batch++) {
    const replies = await Promise.all(
      Array.from({ length: 8 }, (_, k) => {
        const i = sent + k;
        return httpRequest(nginx.url(`/page-${i}?n=${i}`), { headers: { 'User-Agent': `test "${i}"` } });
      }),
    );
    sent += 8;
    for (const reply of replies) {
      assert.equal(reply.status, 200);
      pids.add((JSON.parse(reply.body.toString()) as { pid: number }).pid);
    }
  }
  // Both workers wrote to the one file.
  assert.equal(pids.size, 2, `answered by ${[...pids].join(',')}`);
  const before = await waitFor(() => (lines(accessLog).length === sent ? lines(accessLog) : undefined), 5000, () => `${sent} lines, got ${lines(accessLog).length}`);
  for (let i = 0; i < sent; i++) {
    const line = before.find((l) => l.includes(`/page-${i}?`));
    assert.ok(line, `a line for request ${i}`);
    assert.match(line, new RegExp(`^127\\.0\\.0\\.1 - - \\[[^\\]]+\\] "GET /page-${i}\\?n=${i} HTTP/1\\.1" 200 \\d+ "-" "test \\\\x22${i}\\\\x22" \\d+\\.\\d{3} `));
  }

  fs.renameSync(accessLog, `${accessLog}.1`);
  signalPid(lodestone.child.pid!, 'SIGUSR2');
  await lodestone.waitForLog(/log files reopened/);
  await waitFor(() => (fs.existsSync(accessLog) ? true : undefined), 5000, () => 'the reopened access.log');
  // The workers reopen when the primary's message arrives; each says so.
  await waitFor(() => ((lodestone.log().match(/worker reopened its log files/g) ?? []).length === 2 ? true : undefined), 5000, () => lodestone.log());
  for (let i = 0; i < 20; i++) assert.equal((await httpRequest(nginx.url(`/after-${i}`))).status, 200);
  const after = await waitFor(() => (lines(accessLog).length === 20 ? lines(accessLog) : undefined), 5000, () => `20 new lines, got ${lines(accessLog).length}`);
  // One line each. Not in request order: each worker appends its line once its response is out,
  // so of two workers' consecutive requests the later one's line can land first.
  for (let i = 0; i < 20; i++) {
    assert.equal(after.filter((l) => l.includes(`"GET /after-${i} HTTP/1.1" 200`)).length, 1, `one line for /after-${i}:\n${after.join('\n')}`);
  }
  assert.equal(lines(`${accessLog}.1`).length, sent, 'nothing more in the rotated file');
});
