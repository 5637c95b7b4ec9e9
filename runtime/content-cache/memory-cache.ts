/**
 * The embedded content cache: one LRU per worker, bounded in bytes, entries with their own TTL.
 * It holds encoded values (cache-codec.ts), as Redis would: the byte bound is exact, and
 * neither the caller of set() nor of get() can alias (and so change) what is stored.
 *
 * Expired entries are dropped lazily, when read or evicted; no timer runs (no ttlAutopurge), so
 * an idle worker spends nothing on the cache and close() has nothing to stop.
 */
import { LRUCache } from 'lru-cache';
import type { Logger } from '../log.js';
import {
  CacheValueError,
  CorruptRecordError,
  checkIncrement,
  decodeValue,
  encodeValue,
  parseStoredInteger,
  ttlMilliseconds,
  type CacheValue,
} from './cache-codec.js';
import type { CacheStats, ContentCache, ContentCacheConfig, SyncContentCache } from './types.js';

/** The `memory` backend of {@link ContentCache}; build it with createContentCache. */
export class MemoryCache implements ContentCache {
  readonly kind = 'memory';
  readonly now: SyncContentCache = {
    get: (key) => this.getNow(key),
    set: (key, value, ttlSeconds) => this.setNow(key, value, ttlSeconds),
    delete: (key) => this.deleteNow(key),
    incr: (key, by, ttlSeconds) => this.incrNow(key, by, ttlSeconds),
  };
  private readonly entries: LRUCache<string, Buffer>;
  private readonly maxValueBytes: number;
  private readonly maxBytes: number;
  private hits = 0;
  private misses = 0;
  private sets = 0;
  private errors = 0;

  constructor(
    config: ContentCacheConfig,
    private readonly log: Logger,
  ) {
    if (!Number.isSafeInteger(config.maxBytes) || config.maxBytes < 1) {
      throw new RangeError(`cache.maxBytes must be a positive integer, not ${config.maxBytes}`);
    }
    this.maxBytes = config.maxBytes;
    this.maxValueBytes = config.maxValueBytes;
    this.entries = new LRUCache<string, Buffer>({
      maxSize: config.maxBytes,
      // lru-cache wants a positive size: an empty value under an empty key still costs 1.
      sizeCalculation: (value, key) => Math.max(1, entrySize(key, value)),
    });
  }

  get(key: string): Promise<CacheValue | null> {
    return settle(() => this.getNow(key));
  }

  private getNow(key: string): CacheValue | null {
    const stored = this.entries.get(key);
    if (stored === undefined) {
      this.misses++;
      return null;
    }
    try {
      // Decode a copy: the value handed out is the caller's to change.
      const value = decodeValue(Buffer.from(stored));
      this.hits++;
      return value;
    } catch (err) {
      if (!(err instanceof CorruptRecordError)) throw err;
      this.misses++;
      this.errors++;
      this.log.warn('LS_CACHE_RECORD_INVALID', 'a cached response record does not decode; treated as a miss', { key, error: err.message });
      return null;
    }
  }

  set(key: string, value: CacheValue, ttlSeconds: number): Promise<boolean> {
    return settle(() => this.setNow(key, value, ttlSeconds));
  }

  private setNow(key: string, value: CacheValue, ttlSeconds: number): boolean {
    const ttl = ttlMilliseconds(ttlSeconds);
    const encoded = encodeValue(value);
    if (encoded.length > this.maxValueBytes || entrySize(key, encoded) > this.maxBytes) return false;
    this.entries.set(key, encoded, { ttl });
    this.sets++;
    return true;
  }

  delete(key: string): Promise<boolean> {
    return settle(() => this.deleteNow(key));
  }

  private deleteNow(key: string): boolean {
    // lru-cache's delete() also reports an expired entry; Redis (and so this API) does not.
    const present = this.entries.has(key);
    this.entries.delete(key);
    return present;
  }

  incr(key: string, by: number, ttlSeconds?: number): Promise<number | null> {
    return settle(() => this.incrNow(key, by, ttlSeconds));
  }

  private incrNow(key: string, by: number, ttlSeconds?: number): number {
    checkIncrement(by);
    const ttl = ttlSeconds === undefined ? 0 : ttlMilliseconds(ttlSeconds);
    const stored = this.entries.get(key);
    if (stored === undefined) {
      this.entries.set(key, Buffer.from(String(by), 'latin1'), { ttl });
      return by;
    }
    const current = parseStoredInteger(stored);
    if (current === null) throw new CacheValueError(`cache.incr: the value of "${key}" is not an integer`);
    const next = current + by;
    if (!Number.isSafeInteger(next)) throw new CacheValueError(`cache.incr: "${key}" would overflow`);
    // Like INCRBY: the new value keeps the entry's remaining TTL.
    this.entries.set(key, Buffer.from(String(next), 'latin1'), { noUpdateTTL: true });
    return next;
  }

  stats(): CacheStats {
    return { hits: this.hits, misses: this.misses, sets: this.sets, errors: this.errors };
  }

  close(): Promise<void> {
    this.entries.clear();
    return Promise.resolve();
  }
}

/** The result of `fn` as a promise, a throw as a rejection: the API is async for every backend. */
function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

function entrySize(key: string, encoded: Buffer): number {
  return encoded.length + Buffer.byteLength(key, 'utf8');
}
