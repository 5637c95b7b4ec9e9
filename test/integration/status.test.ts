/**
 * The status page (php-fpm's pm.status_path) and the slow log, through real nginx: counters
 * move with real requests (slow, limit-hit, failing), in text, JSON and OpenMetrics.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { startLodestone, tempDir } from '../helpers/lodestone.js';
import { havePrograms, httpRequest, startNginx } from '../helpers/peers.js';

test('status page: counters in text, JSON and OpenMetrics; slow requests logged with the script', { timeout: 60_000 }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const root = fs.realpathSync(tempDir(t));
  const scripts: Record<string, string> = {
    'ok.lua': 'write("ok")',
    'slow.lua': 'sleep(300) write("late")',
    'loop.lua': 'while true do end',
    'bad.js': 'throw new Error("boom")',
    'warm.lua': 'print("warm")',
    'warm.js': 'print("warm")',
  };
  for (const [name, source] of Object.entries(scripts)) fs.writeFileSync(path.join(root, name), source);
  const lodestone = await startLodestone(t, {
    diagnostic: false,
    args: ['--root', root],
    config: { statusPath: '/status', slowRequestMs: 200, scriptLimits: { cpuMs: 50 } },
  });
  const nginx = await startNginx(t, { fastcgiPass: `127.0.0.1:${lodestone.port}`, keepalive: 2, scriptRoot: root });

  // The first run of each language creates its engine (tens of ms quiet, past slowRequestMs on
  // a loaded machine): warm both before the counters are read, so only slow.lua is slow.
  assert.equal((await httpRequest(nginx.url('/warm.lua'))).body.toString(), 'warm\n');
  assert.equal((await httpRequest(nginx.url('/warm.js'))).body.toString(), 'warm\n');
  const before = JSON.parse((await httpRequest(nginx.url('/status?json'))).body.toString()) as Record<string, unknown>;
  for (let i = 0; i < 3; i++) assert.equal((await httpRequest(nginx.url('/ok.lua'))).body.toString(), 'ok');
  assert.equal((await httpRequest(nginx.url('/slow.lua'))).body.toString(), 'late');
  assert.equal((await httpRequest(nginx.url('/loop.lua'))).status, 500);
  assert.equal((await httpRequest(nginx.url('/bad.js'))).status, 500);

  const json = await httpRequest(nginx.url('/status?json'));
  assert.equal(json.headers['content-type'], 'application/json');
  const s = JSON.parse(json.body.toString()) as Record<string, number | null | unknown[]>;
  assert.equal((s['accepted requests'] as number) - (before['accepted requests'] as number), 7, 'six scripts and this status request');
  const moved = (name: string): number => (s[name] as number) - (before[name] as number);
  assert.equal(moved('slow requests'), 1);
  assert.equal(moved('limit hits'), 1);
  assert.equal(moved('script errors'), 1);
  assert.equal(s['active requests'], 1, 'the status request itself');
  assert.ok((s['max active requests'] as number) >= 1);
  assert.ok((s['start since'] as number) >= 0);
  assert.equal(s['listen queue'], null);
  assert.deepEqual((s.workers as Array<{ pid: number }>).map((w) => w.pid), [lodestone.child.pid]);

  const text = (await httpRequest(nginx.url('/status'))).body.toString();
  assert.match(text, /^pool: +lodestone$/m);
  assert.match(text, new RegExp(`^slow requests: +${s['slow requests'] as number}$`, 'm'));
  assert.match(text, /^limit hits: +1$/m);
  assert.match(text, /^accepted requests: +\d+$/m);

  const metrics = await httpRequest(nginx.url('/status?openmetrics'));
  assert.match(metrics.headers['content-type'] ?? '', /^text\/plain/);
  assert.match(metrics.body.toString(), /^lodestone_limit_hits_total\{pool="lodestone"\} 1$/m);
  assert.match(metrics.body.toString(), /^# TYPE lodestone_accepted_requests_total counter$/m);
  assert.match(metrics.body.toString(), new RegExp(`^lodestone_worker_requests_total\\{pool="lodestone",pid="${lodestone.child.pid}"\\} \\d+$`, 'm'));

  // The warm-up requests may have a slow line of their own: this is slow.lua's.
  const slowLine = await lodestone.waitForLog(/LS_SLOW_REQUEST .*slow\.lua/);
  assert.match(slowLine, /slow\.lua/);
  assert.match(slowLine, /ms=\d{3,}/);
  assert.doesNotMatch(lodestone.log().split('\n').filter((l) => l.includes('LS_SLOW_REQUEST')).join('\n'), /ok\.lua/);
});

test('without statusPath the path is an ordinary request', { timeout: 60_000 }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const root = fs.realpathSync(tempDir(t));
  const lodestone = await startLodestone(t, { diagnostic: false, args: ['--root', root] });
  const nginx = await startNginx(t, { fastcgiPass: `127.0.0.1:${lodestone.port}`, keepalive: 2, scriptRoot: root });
  const r = await httpRequest(nginx.url('/status?json'));
  assert.equal(r.status, 404);
});
