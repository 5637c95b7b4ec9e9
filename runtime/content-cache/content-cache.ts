/**
 * The content cache scripts reach through `cache.get/set/delete/incr`: byte strings and whole
 * responses, with a TTL. Two backends behind one interface: an embedded per-worker LRU bounded in
 * bytes (memory-cache.ts), and Redis shared by every worker and host (redis-cache.ts).
 *
 * Redis rather than memcached for the shared backend: its Node client (@redis/client) is the
 * official, maintained and typed one, while Node memcached clients are stale; INCRBY is atomic and
 * creates a missing key; SET takes a TTL in milliseconds (PX).
 *
 * A cache is an optimisation, so the backend being down is never an error for a script: get
 * misses, set and delete resolve false, incr resolves null. Only misuse rejects (a bad TTL or
 * increment: RangeError; incr on a non-integer value: {@link CacheValueError}).
 */
import type { Logger } from '../log.js';
import { MemoryCache } from './memory-cache.js';
import { RedisCache } from './redis-cache.js';

import type { ContentCache, ContentCacheConfig } from './types.js';

export { CacheValueError, type CachedResponse, type CacheValue } from './cache-codec.js';
export { defaultContentCacheConfig, type CacheStats, type ContentCache, type ContentCacheConfig, type SyncContentCache } from './types.js';

/**
 * The content cache a worker uses. Never waits for or fails on a Redis connection: that happens
 * in the background, and calls miss until it is up.
 *
 * @example
 *   const cache = createContentCache({ ...defaultContentCacheConfig, backend: 'redis',
 *     redis: { ...defaultContentCacheConfig.redis, socket: '/run/redis/redis.sock' } }, log);
 *   await cache.set('page:/', { status: 200, headers: [['Content-Type', 'text/html']],
 *                               body, storedAt: Date.now() }, 60);
 */
export function createContentCache(config: ContentCacheConfig, log: Logger): ContentCache {
  if (!Number.isSafeInteger(config.maxValueBytes) || config.maxValueBytes < 0) {
    throw new RangeError(`cache.maxValueBytes must be a non-negative integer, not ${config.maxValueBytes}`);
  }
  if (config.backend === 'memory') return new MemoryCache(config, log);
  if (config.backend === 'redis') return new RedisCache(config, log);
  throw new RangeError(`cache.backend must be "memory" or "redis", not ${String(config.backend)}`);
}
