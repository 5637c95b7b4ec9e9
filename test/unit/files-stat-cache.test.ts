/**
 * The stat cache against real files, with an injected clock: caching and TTL expiry proven with
 * the `stats` counter (never timings), concurrent calls sharing one stat, the entry bound, the
 * FileInfo fields, and prefetch reading a first page without leaking a descriptor.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { StatCache } from '../../runtime/files/stat-cache.js';
import { tempDir } from '../helpers/lodestone.js';
import { waitFor } from '../shared/poll.js';

/** A clock the test moves by hand. */
function clock(start = 1_000_000): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

async function dirWith(t: TestContext, files: Record<string, string>): Promise<string> {
  const dir = await fs.realpath(tempDir(t));
  for (const [name, body] of Object.entries(files)) await fs.writeFile(path.join(dir, name), body);
  return dir;
}

test('FileInfo: type, size, whole-second mtime, nginx etag', async (t) => {
  const dir = await dirWith(t, { 'a b%,?#é.txt': 'hello' });
  const file = path.join(dir, 'a b%,?#é.txt');
  await fs.utimes(file, 1_700_000_000, 1_700_000_000.75);
  const cache = new StatCache({ ttlMs: 1000, maxEntries: 10 });
  assert.deepEqual(await cache.stat(file), {
    is_file: true,
    is_dir: false,
    size: 5,
    mtime: 1_700_000_000,
    etag: `"${(1_700_000_000).toString(16)}-5"`,
    content_type: 'text/plain; charset=utf-8',
  });
  assert.equal((await cache.stat(file))?.etag, '"6553f100-5"');
  const d = await cache.stat(dir);
  assert.equal(d?.is_dir, true);
  assert.equal(d?.is_file, false);
});

test('content_type: from the extension; text types get a charset; unknown is octet-stream', async (t) => {
  const names = ['a.html', 'b.css', 'c.csv', 'd.json', 'e.png', 'f.pdf', 'g.mp4', 'h.unknownext', 'README', 'i.JPG', '.txt'];
  const dir = await dirWith(t, Object.fromEntries(names.map((n) => [n, 'x'])));
  const cache = new StatCache({ ttlMs: 0, maxEntries: 10 });
  const types: Record<string, string | undefined> = {};
  for (const n of names) types[n] = (await cache.stat(path.join(dir, n)))?.content_type;
  assert.deepEqual(types, {
    'a.html': 'text/html; charset=utf-8',
    'b.css': 'text/css; charset=utf-8',
    'c.csv': 'text/csv; charset=utf-8',
    'd.json': 'application/json',
    'e.png': 'image/png',
    'f.pdf': 'application/pdf',
    'g.mp4': 'video/mp4',
    'h.unknownext': 'application/octet-stream',
    README: 'application/octet-stream',
    'i.JPG': 'image/jpeg',
    // A dot file has no extension.
    '.txt': 'application/octet-stream',
  });
});

test('missing is null (ENOENT and ENOTDIR) and is cached like a hit', async (t) => {
  const dir = await dirWith(t, { 'a.txt': 'a' });
  const c = clock();
  const cache = new StatCache({ ttlMs: 1000, maxEntries: 10, now: c.now });
  assert.equal(await cache.stat(path.join(dir, 'nope.txt')), null);
  assert.equal(await cache.stat(path.join(dir, 'a.txt', 'under-a-file')), null);
  assert.equal(await cache.stat(path.join(dir, 'no', 'dir', 'x')), null);
  assert.equal(cache.stats, 3);
  assert.equal(await cache.stat(path.join(dir, 'nope.txt')), null);
  assert.equal(cache.stats, 3);
  // Created within the TTL: still missing until the answer expires.
  await fs.writeFile(path.join(dir, 'nope.txt'), 'now here');
  assert.equal(await cache.stat(path.join(dir, 'nope.txt')), null);
  c.advance(1000);
  assert.equal((await cache.stat(path.join(dir, 'nope.txt')))?.size, 8);
  assert.equal(cache.stats, 4);
});

test('an answer is reused for ttlMs and refreshed after', async (t) => {
  const dir = await dirWith(t, { 'a.txt': 'one' });
  const file = path.join(dir, 'a.txt');
  const c = clock();
  const cache = new StatCache({ ttlMs: 1000, maxEntries: 10, now: c.now });
  assert.equal((await cache.stat(file))?.size, 3);
  assert.equal(cache.stats, 1);
  await fs.writeFile(file, 'three');
  for (let i = 0; i < 5; i++) assert.equal((await cache.stat(file))?.size, 3);
  c.advance(999);
  assert.equal((await cache.stat(file))?.size, 3);
  assert.equal(cache.stats, 1);
  c.advance(1);
  assert.equal((await cache.stat(file))?.size, 5);
  assert.equal(cache.stats, 2);
  assert.equal((await cache.stat(file))?.size, 5);
  assert.equal(cache.stats, 2);
  await fs.rm(file);
  c.advance(1000);
  assert.equal(await cache.stat(file), null);
  assert.equal(cache.stats, 3);
});

test('concurrent calls for one path share one stat', async (t) => {
  const dir = await dirWith(t, { 'a.txt': 'a', 'b.txt': 'bb' });
  for (const ttlMs of [1000, 0]) {
    const cache = new StatCache({ ttlMs, maxEntries: 10 });
    const [x, y, z] = await Promise.all([
      cache.stat(path.join(dir, 'a.txt')),
      cache.stat(path.join(dir, 'a.txt')),
      cache.stat(path.join(dir, 'b.txt')),
    ]);
    assert.equal(cache.stats, 2, `ttlMs ${ttlMs}`);
    assert.equal(x, y);
    assert.equal(z?.size, 2);
    const missing = await Promise.all([cache.stat(path.join(dir, 'c')), cache.stat(path.join(dir, 'c'))]);
    assert.deepEqual(missing, [null, null]);
    assert.equal(cache.stats, 3, `ttlMs ${ttlMs}`);
  }
});

test('ttlMs 0 stats on every call that does not overlap another', async (t) => {
  const dir = await dirWith(t, { 'a.txt': 'a' });
  const file = path.join(dir, 'a.txt');
  const cache = new StatCache({ ttlMs: 0, maxEntries: 10 });
  for (let i = 1; i <= 4; i++) {
    await cache.stat(file);
    assert.equal(cache.stats, i);
  }
  await fs.writeFile(file, 'longer');
  assert.equal((await cache.stat(file))?.size, 6);
  await Promise.all([cache.stat(file), cache.stat(file), cache.stat(file)]);
  assert.equal(cache.stats, 6);
});

test('maxEntries bounds the cache: the least recently used path goes first', async (t) => {
  const dir = await dirWith(t, { a: 'a', b: 'b', c: 'c' });
  const [a, b, c] = ['a', 'b', 'c'].map((n) => path.join(dir, n)) as [string, string, string];
  const cache = new StatCache({ ttlMs: 60_000, maxEntries: 2 });
  await cache.stat(a);
  await cache.stat(b);
  await cache.stat(a); // a is now the most recent
  assert.equal(cache.stats, 2);
  await cache.stat(c); // evicts b
  assert.equal(cache.stats, 3);
  await cache.stat(a);
  await cache.stat(c);
  assert.equal(cache.stats, 3);
  await cache.stat(b);
  assert.equal(cache.stats, 4);
  const none = new StatCache({ ttlMs: 60_000, maxEntries: 0 });
  await none.stat(a);
  await none.stat(a);
  assert.equal(none.stats, 2);
});

test('a stat error other than missing rejects and is not cached; prefetch swallows it', async (t) => {
  const dir = await dirWith(t, {});
  await fs.symlink('loop-b', path.join(dir, 'loop-a'));
  await fs.symlink('loop-a', path.join(dir, 'loop-b'));
  const loop = path.join(dir, 'loop-a');
  const cache = new StatCache({ ttlMs: 60_000, maxEntries: 10 });
  await assert.rejects(cache.stat(loop), { code: 'ELOOP' });
  await assert.rejects(cache.stat(loop), { code: 'ELOOP' });
  assert.equal(cache.stats, 2);
  cache.prefetch(loop, true);
  cache.prefetch(path.join(dir, 'missing'), true);
  await waitFor(() => cache.stats === 4, 5000, 'the prefetch stats');
  await sleep(10);
  assert.equal(cache.reads, 0);
});

test('prefetch starts the stat a later call shares or finds cached', async (t) => {
  const dir = await dirWith(t, { 'a.txt': 'a' });
  const file = path.join(dir, 'a.txt');
  for (const ttlMs of [1000, 0]) {
    const cache = new StatCache({ ttlMs, maxEntries: 10 });
    cache.prefetch(file, false);
    assert.equal(cache.stats, 1);
    assert.equal((await cache.stat(file))?.size, 1);
    assert.equal(cache.stats, 1, `ttlMs ${ttlMs}`);
    assert.equal(cache.reads, 0);
  }
});

test('prefetch with read reads the first page of regular, non-empty files only', async (t) => {
  const dir = await dirWith(t, { 'big.bin': 'x'.repeat(10_000), 'empty.txt': '' });
  await fs.mkdir(path.join(dir, 'sub'));
  const cache = new StatCache({ ttlMs: 0, maxEntries: 10 });
  for (const name of ['empty.txt', 'sub', 'missing']) {
    cache.prefetch(path.join(dir, name), true);
    // Shares the prefetch's stat; its continuation (which would start a read) runs first.
    await cache.stat(path.join(dir, name));
  }
  await sleep(10);
  assert.equal(cache.reads, 0);
  cache.prefetch(path.join(dir, 'big.bin'), true);
  await waitFor(() => cache.reads === 1, 5000, 'the first-page read');
});

test('prefetch does not block on a FIFO', async (t) => {
  const dir = await dirWith(t, {});
  const fifo = path.join(dir, 'fifo');
  try {
    await promisify(execFile)('mkfifo', [fifo]);
  } catch {
    t.skip('mkfifo is not available');
    return;
  }
  const cache = new StatCache({ ttlMs: 0, maxEntries: 10 });
  cache.prefetch(fifo, true);
  const info = await cache.stat(fifo);
  assert.equal(info?.is_file, false);
  assert.equal(info?.is_dir, false);
  await sleep(10);
  assert.equal(cache.reads, 0);
});

test('a fresh answer is warmed once: repeated prefetches within the TTL read once', async (t) => {
  const dir = await dirWith(t, { 'a.txt': 'aaaa' });
  const file = path.join(dir, 'a.txt');
  const c = clock();
  const cache = new StatCache({ ttlMs: 1000, maxEntries: 10, now: c.now });
  cache.prefetch(file, true);
  await waitFor(() => cache.reads === 1, 5000, 'the first read');
  for (let i = 0; i < 5; i++) cache.prefetch(file, true);
  await sleep(10);
  assert.equal(cache.reads, 1);
  assert.equal(cache.stats, 1);
  c.advance(1000);
  cache.prefetch(file, true);
  await waitFor(() => cache.reads === 2, 5000, 'the read after expiry');
  assert.equal(cache.stats, 2);
});

async function openFds(): Promise<number> {
  return (await fs.readdir('/proc/self/fd')).length;
}

test('prefetch with read closes every descriptor it opens', async (t) => {
  try {
    await openFds();
  } catch {
    t.skip('/proc/self/fd is not available');
    return;
  }
  const names = Array.from({ length: 100 }, (_, i) => `f ${i} %,é.txt`);
  const dir = await dirWith(t, Object.fromEntries(names.map((n) => [n, 'x'.repeat(8192)])));
  const cache = new StatCache({ ttlMs: 0, maxEntries: 1000 });
  const before = await openFds();
  for (let round = 1; round <= 5; round++) {
    for (const n of names) cache.prefetch(path.join(dir, n), true);
    await waitFor(() => cache.reads === round * names.length, 5000, `round ${round}`);
  }
  assert.equal(cache.stats, 500);
  assert.equal(await openFds(), before);
});

test('options are checked', () => {
  assert.throws(() => new StatCache({ ttlMs: -1, maxEntries: 10 }), RangeError);
  assert.throws(() => new StatCache({ ttlMs: Number.NaN, maxEntries: 10 }), RangeError);
  assert.throws(() => new StatCache({ ttlMs: 0, maxEntries: 1.5 }), RangeError);
  assert.throws(() => new StatCache({ ttlMs: 0, maxEntries: -1 }), RangeError);
});
