/**
 * The per-worker Files service: lookups share confinement and stat results, prefetch starts the
 * work a later lookup finds done (proven with the stat cache's counters, never timings), and
 * deliver() picks the header per web server and range.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Files, type FilesConfig } from '../../runtime/files/files.js';
import { tempDir } from '../helpers/lodestone.js';
import { makeHost } from '../helpers/script-host.js';
import { waitFor } from '../shared/poll.js';

function setup(t: TestContext, overrides: Partial<FilesConfig> = {}): { dir: string; files: Files } {
  const dir = fs.realpathSync(tempDir(t));
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.writeFileSync(path.join(dir, 'a.txt'), 'x'.repeat(10_000));
  const config: FilesConfig = {
    roots: [dir],
    statThreads: 4,
    statCacheMs: 60_000,
    statCacheEntries: 100,
    sendfile: 'auto',
    accel: [],
    prefetch: null,
    allowScripts: false,
    ...overrides,
  };
  return { dir, files: new Files(config) };
}

test('lookup: file, dir, missing, refused; repeats answered from the cache', async (t) => {
  const { dir, files } = setup(t);
  const a = await files.lookup(path.join(dir, 'a.txt'));
  assert.equal(a.kind, 'file');
  assert.equal((await files.lookup('sub')).kind, 'dir');
  assert.equal((await files.lookup('nope')).kind, 'missing');
  assert.equal((await files.lookup('/etc/passwd')).kind, 'refused');
  const before = files.cache.stats;
  await Promise.all([files.lookup('a.txt'), files.lookup(path.join(dir, 'a.txt'))]);
  assert.equal(files.cache.stats, before, 'the same real path is not stat()ed again within the TTL');
});

test('prefetch: the param path is stat()ed (and its first page read) before anyone asks', async (t) => {
  const { dir, files } = setup(t, { prefetch: { param: 'SCRIPT_FILENAME', read: true } });
  const { request } = makeHost({ scriptFilename: path.join(dir, 'a.txt') });
  files.prefetch(request);
  await waitFor(() => files.cache.stats === 1 && files.cache.reads === 1, 5000, 'the prefetch');
  const found = await files.lookup(path.join(dir, 'a.txt'));
  assert.equal(found.kind, 'file');
  assert.equal(files.cache.stats, 1, 'the lookup used the prefetched stat');

  // Outside the roots: nothing is touched.
  const outside = makeHost({ scriptFilename: '/etc/passwd' });
  files.prefetch(outside.request);
  await sleep(20);
  assert.equal(files.cache.stats, 1);
});

test('prefetch is off unless configured', async (t) => {
  const { dir, files } = setup(t);
  files.prefetch(makeHost({ scriptFilename: path.join(dir, 'a.txt') }).request);
  await sleep(20);
  assert.equal(files.cache.stats, 0);
});

test('deliver: the header follows SERVER_SOFTWARE unless configured; ranges as each server can take them', async (t) => {
  const { dir, files } = setup(t, { accel: [[fs.realpathSync(tempDir(t)), '/elsewhere/']] });
  const found = await files.lookup('a.txt');
  assert.equal(found.kind, 'file');
  if (found.kind !== 'file') return;
  const deliver = (software: string, options = {}) => {
    const h = makeHost({ params: { SERVER_SOFTWARE: software } });
    h.response.setHeader('X-Kept', '1');
    h.response.write('dropped');
    const delivery = files.deliver(h.request, h.response, found, options);
    return { delivery, result: h.result() };
  };
  const l = deliver('lighttpd/1.4.69');
  assert.deepEqual(l.delivery, { kind: 'escalated' });
  assert.equal(l.result.headers['x-sendfile'], path.join(dir, 'a.txt'));
  assert.equal(l.result.headers['x-kept'], '1');
  assert.equal(l.result.body.length, 0);
  assert.equal(deliver('Apache/2.4.57').result.headers['x-sendfile'], path.join(dir, 'a.txt'));
  const r = deliver('lighttpd/1.4.69', { offset: 100, length: 50 });
  assert.equal(r.result.status, 206);
  assert.equal(r.result.headers['x-sendfile2'], `${path.join(dir, 'a.txt')} 100-149`);
  assert.equal(r.result.headers['content-range'], 'bytes 100-149/10000');
  const n = deliver('nginx/1.22.1', { offset: 9990 });
  assert.deepEqual(n.delivery, { kind: 'direct', start: 9990, end: 9999 });
  assert.equal(n.result.headers['content-length'], '10');
  assert.deepEqual(deliver('nginx/1.22.1').delivery, { kind: 'no-mapping' }, 'no accel entry covers the file');
  assert.deepEqual(deliver('lighttpd', { offset: 10_000 }).delivery, { kind: 'unsatisfiable' });
});
