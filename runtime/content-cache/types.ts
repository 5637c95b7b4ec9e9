/**
 * What the content cache is, apart from which backend holds it: its configuration, its
 * interface and its counters. The factory (content-cache.ts) and both backends import these, so
 * none of them imports another's module for a type.
 */
import path from 'node:path';
import { defaults, field, integer, invalid, section, stringValue, type Context, type Values } from '../config-schema.js';
import type { CacheValue } from './cache-codec.js';

const REDIS_URL = /^rediss?:\/\//;

/** Where the content cache lives and how large it may grow: the config's `[cache]`. */
export const contentCacheFields = {
  backend: field<'memory' | 'redis'>({
    doc: '`memory` (per worker) or `redis` (shared); `--cache` sets it too',
    default: 'memory',
    parse(value, at) {
      if (value !== 'memory' && value !== 'redis') throw invalid(at.name, 'must be "memory" or "redis"');
      return value;
    },
  }),
  /** Memory backend bound: encoded values plus keys. */
  maxBytes: integer({ doc: 'bytes the memory cache keeps (LRU)', min: 1024, max: Number.MAX_SAFE_INTEGER, default: 64 * 1024 * 1024 }),
  /** Larger encoded values are not stored (set resolves false). */
  maxValueBytes: integer({
    doc: 'larger values are not stored (`set` returns false)',
    min: 1,
    max: 512 * 1024 * 1024,
    default: 8 * 1024 * 1024,
  }),
  /** One of url and socket when backend is redis. */
  redis: section({
    /** "redis://127.0.0.1:6379/0" (also rediss:// and credentials). */
    url: field<string | null>({
      doc: '`redis://HOST:PORT[/DB]` (or `rediss://`); this or `socket`',
      default: null,
      parse(value, at) {
        if (typeof value !== 'string' || !REDIS_URL.test(value)) throw invalid(at.name, 'must be a redis:// or rediss:// URL');
        return value;
      },
    }),
    socket: field<string | null>({
      doc: 'Redis unix socket path (relative to the config file)',
      default: null,
      parse(value, at) {
        if (typeof value !== 'string' || value === '') throw invalid(at.name, 'must be a unix socket path');
        return path.resolve(at.dir, value);
      },
    }),
    /** Shares keys with PHP apps that use the same prefix. */
    prefix: field({ doc: 'prepended to every key', default: '', parse: (value, at) => stringValue(value, at.name) }),
    /** Per command; past it the call is a miss/failure. */
    timeoutMs: integer({
      doc: 'a command slower than this is a miss; Redis is then treated as down until it answers again',
      min: 1,
      max: 60_000,
      default: 250,
    }),
  }),
};

export type ContentCacheConfig = Values<typeof contentCacheFields>;

/**
 * `--cache memory|redis://...|unix:/path` over the file's choice, then the one rule across the
 * fields: the redis backend needs exactly one of url and socket. `C` may carry more fields.
 */
export function withCacheFlag<C extends ContentCacheConfig>(config: C, name: string, ctx: Context): C {
  const flag = ctx.cli.cache;
  let { backend } = config;
  let { url, socket } = config.redis;
  if (typeof flag === 'string') {
    if (flag === 'memory') backend = 'memory';
    else if (REDIS_URL.test(flag)) [backend, url, socket] = ['redis', flag, null];
    else if (flag.startsWith('unix:') && flag.length > 5) [backend, url, socket] = ['redis', null, path.resolve(flag.slice(5))];
    else throw invalid('--cache', 'must be "memory", a redis:// URL or unix:/path/to/redis.sock');
  }
  if (backend === 'redis' && (url === null) === (socket === null)) {
    throw invalid(`${name}.redis`, 'give exactly one of url and socket for the redis backend');
  }
  return { ...config, backend, redis: Object.freeze({ ...config.redis, url, socket }) };
}

/** 64 MiB in memory, 8 MiB per value, Redis commands answered within 250 ms. */
export const defaultContentCacheConfig: ContentCacheConfig = defaults(section(contentCacheFields));

/**
 * Counters since creation. `hits + misses` counts every get() (a get that failed on the backend
 * is a miss and an error); `sets` counts values stored; `errors` counts calls the backend could
 * not answer (down, timed out, refused) and records that did not decode.
 */
export interface CacheStats {
  readonly hits: number;
  readonly misses: number;
  readonly sets: number;
  readonly errors: number;
}

/**
 * The calls of {@link ContentCache} answered at once, for a backend that never waits (memory).
 * Engines use it to skip the async round trip (a coroutine yield, a promise, the wall clock),
 * which cost more than the lookup itself; the results and errors are the same.
 */
export interface SyncContentCache {
  get(key: string): CacheValue | null;
  set(key: string, value: CacheValue, ttlSeconds: number): boolean;
  delete(key: string): boolean;
  incr(key: string, by: number, ttlSeconds?: number): number | null;
}

/** One worker's handle on the content cache. */
export interface ContentCache {
  readonly kind: 'memory' | 'redis';
  /** The same calls without promises, when the backend can answer at once; else null. */
  readonly now: SyncContentCache | null;
  get(key: string): Promise<CacheValue | null>;
  /**
   * ttlSeconds > 0 expires (fractions allowed, ms precision); 0 = no expiry (LRU bound only).
   * Resolves false when not stored (too large, backend down); a refused value leaves any older
   * value of the key in place.
   */
  set(key: string, value: CacheValue, ttlSeconds: number): Promise<boolean>;
  /** Resolves true when a key was removed; false when absent or backend down. */
  delete(key: string): Promise<boolean>;
  /**
   * Adds `by` (integer, may be negative); a missing key starts at 0 and gets ttlSeconds if given
   * (>0); an existing key keeps its remaining TTL. Resolves the new value, or null when the backend
   * is down. Rejects with CacheValueError when the stored value is not an integer string.
   */
  incr(key: string, by: number, ttlSeconds?: number): Promise<number | null>;
  stats(): CacheStats;
  /** Releases the connection; leaves no handle or timer behind. Later calls miss. */
  close(): Promise<void>;
}
