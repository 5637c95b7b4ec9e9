/**
 * What the content cache is, apart from which backend holds it: its configuration, its
 * interface and its counters. The factory (content-cache.ts) and both backends import these, so
 * none of them imports another's module for a type.
 */
import type { CacheValue } from './cache-codec.js';

/** Where the content cache lives and how large it may grow. */
export interface ContentCacheConfig {
  readonly backend: 'memory' | 'redis';
  /** Memory backend bound: encoded values plus keys, in bytes. */
  readonly maxBytes: number;
  /** Larger encoded values are not stored (set resolves false). */
  readonly maxValueBytes: number;
  readonly redis: {
    /** "redis://127.0.0.1:6379/0" (also rediss:// and credentials); or */
    readonly url: string | null;
    /** a unix socket path (one of the two when backend is redis). */
    readonly socket: string | null;
    /** Prepended to every key (shares keys with PHP apps that use the same prefix). */
    readonly prefix: string;
    /** Per command; past it the call is a miss/failure. */
    readonly timeoutMs: number;
  };
}

/** 64 MiB in memory, 8 MiB per value, Redis commands answered within 250 ms. */
export const defaultContentCacheConfig: ContentCacheConfig = Object.freeze({
  backend: 'memory',
  maxBytes: 64 * 1024 * 1024,
  maxValueBytes: 8 * 1024 * 1024,
  redis: Object.freeze({ url: null, socket: null, prefix: '', timeoutMs: 250 }),
});

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
