/**
 * The Redis content cache against a real redis-server on a unix socket: two caches (two workers)
 * sharing keys, concurrent INCRBY, TTLs, bytes exchanged with a raw RESP client, the key prefix,
 * and the outages: Redis stopped and restarted on the same socket, paused with SIGSTOP, absent
 * when the cache is created. close() is checked in a child process that must exit on its own.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import test from 'node:test';
import {
  CacheValueError,
  createContentCache,
  defaultContentCacheConfig,
  type CachedResponse,
  type ContentCache,
  type ContentCacheConfig,
} from '../../runtime/content-cache/content-cache.js';
import { Logger } from '../../runtime/log.js';
import { repoRoot } from '../shared/repo.js';
import { within } from '../helpers/peers.js';
import { waitFor } from '../shared/poll.js';
import { redisRaw, startRedis, type RedisServer } from '../helpers/redis.js';

const TIMEOUT_MS = 250;

interface Worker {
  cache: ContentCache;
  lines: string[];
}

function worker(t: test.TestContext, redis: Partial<ContentCacheConfig['redis']>, level: 'info' | 'debug' = 'info'): Worker {
  const lines: string[] = [];
  const cache = createContentCache(
    {
      ...defaultContentCacheConfig,
      backend: 'redis',
      redis: { ...defaultContentCacheConfig.redis, timeoutMs: TIMEOUT_MS, ...redis },
    },
    new Logger(level, (line) => lines.push(line)),
  );
  t.after(() => cache.close());
  return { cache, lines };
}

function count(lines: string[], code: string): number {
  return lines.filter((line) => line.includes(` ${code} `)).length;
}

/** Resolves once `cache.set(key)` succeeds (the cache is connected and Redis answers). */
async function untilServing(cache: ContentCache, key: string, describe: () => string): Promise<void> {
  let found = false;
  const poll = async (): Promise<void> => {
    while (!found) {
      if (await cache.set(key, Buffer.from('probe'), 0)) found = true;
      else await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const polling = poll();
  try {
    await waitFor(() => (found ? true : undefined), 10_000, describe);
  } finally {
    found = true;
    await polling;
  }
}

/** Every cache call at once, each timed; all must resolve as failures. */
async function allFail(cache: ContentCache, key: string): Promise<number> {
  const started = Date.now();
  const [got, stored, removed, counted] = await Promise.all([
    cache.get(key),
    cache.set(key, Buffer.from('v'), 10),
    cache.delete(key),
    cache.incr(`${key}:n`, 1),
  ]);
  assert.deepEqual([got, stored, removed, counted], [null, false, false, null]);
  return Date.now() - started;
}

test('two workers share values, counters, TTLs and bytes with other Redis clients', async (t) => {
  const redis = await startRedis(t, { tcp: true });
  if (!redis) return;
  const a = worker(t, { socket: redis.socket, prefix: 'ls:' });
  const b = worker(t, { url: redis.url, prefix: 'ls:' });

  // Creation does not wait for the connection; the first call waits for it (up to timeoutMs).
  assert.equal(await a.cache.set('shared', Buffer.from('from a'), 0), true);
  assert.deepEqual(await b.cache.get('shared'), Buffer.from('from a'));

  const page: CachedResponse = {
    status: 200,
    headers: [
      ['Set-Cookie', 'a=1'],
      ['Set-Cookie', 'b=2'],
    ],
    body: Buffer.from([0, 255, 13, 10, 128]),
    storedAt: 1_700_000_000_000,
  };
  assert.equal(await b.cache.set('page', page, 60), true);
  const got = await a.cache.get('page');
  assert.ok(got && !Buffer.isBuffer(got));
  assert.deepEqual([got.status, got.headers, got.body, got.storedAt], [200, page.headers, page.body, page.storedAt]);

  // 2 x 200 concurrent increments from both workers (a's through the INCRBY-with-TTL script).
  const calls: Array<Promise<number | null>> = [];
  for (let i = 0; i < 200; i++) calls.push(a.cache.incr('hits', 1, 60), b.cache.incr('hits', 1));
  const results = await Promise.all(calls);
  assert.deepEqual(
    results.sort((x, y) => (x ?? 0) - (y ?? 0)),
    Array.from({ length: 400 }, (_, i) => i + 1),
    'every increment saw a distinct value',
  );
  assert.equal(await a.cache.incr('hits', 0), 400);

  assert.equal(await a.cache.incr('expiring', 3, 60), 3);
  const ttl = await redisRaw(redis.socket, ['PTTL', 'ls:expiring']);
  assert.ok(typeof ttl === 'number' && ttl > 0 && ttl <= 60_000, `TTL set by the increment that created the key: ${String(ttl)}`);

  // A TTL on incr applies only when the key is created; an existing key keeps its own.
  await redisRaw(redis.socket, ['SET', 'ls:plain', '10']);
  assert.equal(await a.cache.incr('plain', -15, 60), -5);
  assert.equal(await redisRaw(redis.socket, ['PTTL', 'ls:plain']), -1);

  await a.cache.set('word', Buffer.from('abc'), 0);
  await assert.rejects(b.cache.incr('word', 1), CacheValueError);
  await assert.rejects(b.cache.incr('word', 1, 5), CacheValueError);
  await assert.rejects(b.cache.incr('page', 1), CacheValueError);

  // Short TTL (PX: fractions of a second work).
  assert.equal(await a.cache.set('brief', Buffer.from('x'), 0.1), true);
  assert.deepEqual(await b.cache.get('brief'), Buffer.from('x'));
  await new Promise((resolve) => setTimeout(resolve, 250));
  assert.equal(await b.cache.get('brief'), null);

  // Bytes in from another client, bytes out to it; the prefix is part of the real key.
  const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  await redisRaw(redis.socket, ['SET', 'ls:from-php', allBytes]);
  assert.deepEqual(await a.cache.get('from-php'), allBytes);
  assert.equal(await b.cache.set('to-php', allBytes, 0), true);
  assert.deepEqual(await redisRaw(redis.socket, ['GET', 'ls:to-php']), allBytes);
  assert.equal(await redisRaw(redis.socket, ['EXISTS', 'to-php']), 0, 'nothing stored without the prefix');
  await redisRaw(redis.socket, ['SET', 'ls:counter', '41']);
  assert.equal(await a.cache.incr('counter', 1), 42);

  assert.equal(await a.cache.delete('to-php'), true);
  assert.equal(await b.cache.delete('to-php'), false);
  assert.equal(await redisRaw(redis.socket, ['EXISTS', 'ls:to-php']), 0);

  // A key another app holds as a hash: a logged miss, not a crash.
  await redisRaw(redis.socket, ['HSET', 'ls:hash', 'f', 'v']);
  assert.equal(await a.cache.get('hash'), null);
  assert.equal(count(a.lines, 'LS_CACHE_COMMAND_FAILED'), 1, a.lines.join('\n'));

  // A value over maxValueBytes never reaches Redis.
  assert.equal(await a.cache.set('huge', Buffer.alloc(defaultContentCacheConfig.maxValueBytes + 1), 0), false);
  assert.equal(await redisRaw(redis.socket, ['EXISTS', 'ls:huge']), 0);

  assert.deepEqual(b.cache.stats(), { hits: 2, misses: 1, sets: 2, errors: 0 });
  assert.equal(count(a.lines, 'LS_CACHE_UNAVAILABLE') + count(b.lines, 'LS_CACHE_UNAVAILABLE'), 0);
});

test('Redis stopped: calls fail fast, one LS_CACHE_UNAVAILABLE; restarted: LS_CACHE_RECOVERED', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const { cache, lines } = worker(t, { socket: redis.socket });
  assert.equal(await cache.set('k', Buffer.from('v'), 0), true);

  // Stopped with commands in flight: each settles (a number or null), nothing crashes.
  const inFlight = Array.from({ length: 200 }, () => cache.incr('n', 1));
  await redis.stop();
  for (const result of await Promise.all(inFlight)) assert.ok(result === null || typeof result === 'number');
  const took: number[] = [];
  for (let i = 0; i < 20; i++) took.push(await allFail(cache, 'k'));
  // Fast: none waits for the command timeout (a loose bound: the point is "not queued").
  assert.ok(Math.max(...took) < TIMEOUT_MS * 4, `failing calls took ${took.join(',')} ms`);
  assert.equal(count(lines, 'LS_CACHE_UNAVAILABLE'), 1, lines.join('\n'));
  assert.equal(count(lines, 'LS_CACHE_RECOVERED'), 0);
  assert.ok(cache.stats().errors >= 80);

  await redis.start();
  await untilServing(cache, 'k', () => `the cache never reconnected:\n${lines.join('\n')}`);
  assert.equal(await cache.set('k', Buffer.from('again'), 0), true);
  assert.deepEqual(await cache.get('k'), Buffer.from('again'));
  assert.equal(count(lines, 'LS_CACHE_UNAVAILABLE'), 1, lines.join('\n'));
  assert.equal(count(lines, 'LS_CACHE_RECOVERED'), 1, lines.join('\n'));
});

test('Redis paused (SIGSTOP): calls miss after about timeoutMs while it is paused; SIGCONT: works', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const { cache, lines } = worker(t, { socket: redis.socket });
  assert.equal(await cache.set('k', Buffer.from('v'), 0), true);

  redis.pause();
  t.after(() => redis.resume());
  // All resolve while Redis is still stopped: nothing here sends SIGCONT before they settle.
  const first = await allFail(cache, 'k');
  assert.ok(first >= TIMEOUT_MS - 20, `the first calls waited for the timeout (${first} ms)`);
  const later = await Promise.all(Array.from({ length: 50 }, () => cache.get('k')));
  assert.ok(later.every((v) => v === null));
  const status = await redisRaw(redis.socket, ['PING'], 200).catch((err: Error) => err);
  assert.ok(status instanceof Error, 'redis-server was still paused when the calls resolved');
  assert.equal(count(lines, 'LS_CACHE_UNAVAILABLE'), 1, lines.join('\n'));

  redis.resume();
  await untilServing(cache, 'k', () => `no hit after SIGCONT:\n${lines.join('\n')}`);
  assert.equal(await cache.incr('n', 2), 2);
  assert.equal(count(lines, 'LS_CACHE_UNAVAILABLE'), 1, lines.join('\n'));
  assert.equal(count(lines, 'LS_CACHE_RECOVERED'), 1, lines.join('\n'));
});

test('created while Redis is down: misses at once, then works once Redis starts', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  await redis.stop();
  const { cache, lines } = worker(t, { socket: redis.socket });
  assert.equal(await cache.get('k'), null);
  await allFail(cache, 'k');
  assert.equal(count(lines, 'LS_CACHE_UNAVAILABLE'), 1, lines.join('\n'));

  await redis.start();
  await untilServing(cache, 'probe', () => `the cache never connected:\n${lines.join('\n')}`);
  await redisRaw(redis.socket, ['SET', 'k', 'late']);
  assert.deepEqual(await cache.get('k'), Buffer.from('late'));
  assert.equal(count(lines, 'LS_CACHE_RECOVERED'), 1, lines.join('\n'));
});

/**
 * A child process that uses a cache and closes it: right after close() it has no more handles or
 * timers than before it made the cache, and it exits by itself.
 */
async function exitsAfterClose(t: test.TestContext, redis: RedisServer, scenario: string): Promise<void> {
  const module = path.join(repoRoot, 'dist/runtime/content-cache/content-cache.js');
  const logModule = path.join(repoRoot, 'dist/runtime/log.js');
  const script = `
    const { createContentCache, defaultContentCacheConfig } = await import(${JSON.stringify(module)});
    const { Logger } = await import(${JSON.stringify(logModule)});
    void process.stdout, process.stderr;
    const before = process.getActiveResourcesInfo();
    const cache = createContentCache({ ...defaultContentCacheConfig, backend: 'redis',
      redis: { ...defaultContentCacheConfig.redis, socket: ${JSON.stringify(redis.socket)}, timeoutMs: ${TIMEOUT_MS} } },
      new Logger('info', () => {}));
    const scenario = ${JSON.stringify(scenario)};
    await cache.set('k', Buffer.from('v'), 0);
    if (scenario === 'pending') { cache.get('k'); cache.incr('n', 1); }
    const got = await cache.get('k');
    await cache.close();
    // A destroyed socket's handle is released in the close phase of the loop iteration after.
    for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve));
    const left = process.getActiveResourcesInfo();
    for (const resource of before) if (left.includes(resource)) left.splice(left.indexOf(resource), 1);
    console.log('closed', got === null ? 'miss' : 'hit', 'left', JSON.stringify(left));
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  assert.ok(await within(exited, 10_000), `the process did not exit after close() (${scenario}):\n${output}`);
  assert.equal(child.exitCode, 0, output);
  assert.match(output, /^closed (hit|miss) left \[\]$/m);
}

test('close() leaves no handle: connected, down (reconnecting), paused (commands pending)', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  await exitsAfterClose(t, redis, 'connected');
  redis.pause();
  t.after(() => redis.resume());
  await exitsAfterClose(t, redis, 'pending');
  redis.resume();
  await redis.stop();
  await exitsAfterClose(t, redis, 'down');
});
