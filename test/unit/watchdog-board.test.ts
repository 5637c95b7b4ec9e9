/**
 * The primary's watchdog over its workers (runtime/process/worker-watchdog.ts) and the
 * scoreboard the engines write the running script to (runtime/engines/running.ts). The kill of
 * a real stuck worker under the manager is test/integration/watchdog.test.ts; this file checks
 * the parts on their own: what the board holds, when it is written, and when a worker is
 * killed.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import test from 'node:test';
import { markIdle, markRunning, publishToBoard } from '../../runtime/engines/running.js';
import { Logger } from '../../runtime/log.js';
import { WorkerWatchdog } from '../../runtime/process/worker-watchdog.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function board(fd: number): string {
  const buf = Buffer.alloc(256);
  return buf.subarray(0, fs.readSync(fd, buf, 0, buf.length, 0)).toString();
}

test('the scoreboard is an unlinked file holding the script a slice started last, written only when it changes', (t) => {
  const lines: string[] = [];
  const dog = new WorkerWatchdog(1000, new Logger('debug', (line) => lines.push(line)));
  const fd = dog.openBoard();
  t.after(() => {
    publishToBoard(null);
    fs.closeSync(fd);
  });
  assert.equal(fs.fstatSync(fd).nlink, 0, 'nothing left on disk');
  assert.equal(fs.fstatSync(fd).mode & 0o777, 0o600);
  publishToBoard(fd);
  markRunning('/srv/www/a-rather-long-script-name.lua');
  markIdle();
  markRunning('/srv/www/b.lua');
  assert.match(board(fd), /^\/srv\/www\/b\.lua\n/);
  // The same script again is no write: what is in the file stays.
  fs.writeSync(fd, Buffer.from('sentinel\n'), 0, 9, 0);
  markRunning('/srv/www/b.lua');
  assert.match(board(fd), /^sentinel\n/);
  markRunning('/srv/www/c.lua');
  assert.match(board(fd), /^\/srv\/www\/c\.lua\n/);
});

test('a watched worker is killed once, with its script logged, when its heartbeats stop; not before its first one', async () => {
  const lines: string[] = [];
  // Beats 4x more often than the limit: a loaded machine would have to stall ~750 ms to fail this.
  const limitMs = 1000;
  const dog = new WorkerWatchdog(limitMs, new Logger('debug', (line) => lines.push(line)));
  const quiet = dog.openBoard();
  const stuck = dog.openBoard();
  fs.writeSync(stuck, Buffer.from('/srv/www/stuck.lua\n'), 0, 19, 0);
  const kills: number[] = [];
  dog.watch(1001, quiet, () => kills.push(1001));
  dog.watch(1002, stuck, () => kills.push(1002));
  // 1001 never beats (a worker still starting): never killed. 1002 beats, then stops.
  dog.beat(1002);
  for (let i = 0; i < 4; i++) {
    await sleep(limitMs / 4);
    assert.deepEqual(kills, [], 'beats keep it alive');
    dog.beat(1002);
  }
  await sleep(limitMs * 2.5);
  assert.deepEqual(kills, [1002]);
  const line = lines.find((l) => l.includes('LS_WATCHDOG'));
  assert.match(line ?? '', /event loop stuck; killing the worker .*script=\/srv\/www\/stuck\.lua pid=1002/);
  await sleep(limitMs / 2);
  assert.deepEqual(kills, [1002], 'killed once');
  dog.unwatch(1001);
  dog.unwatch(1002);
});
