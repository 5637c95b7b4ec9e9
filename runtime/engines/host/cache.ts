/**
 * The content cache as scripts use it: cache.get/set/delete/incr, keys and TTLs checked, whole
 * responses cached (a large body written to a file in cacheFiles.dir and sent by the web server
 * on a hit), and a hit whose body file is gone turned into a miss. Separate because it is the
 * one capability that writes files and answers synchronously or not depending on the backend
 * (the embedded cache answers at once, Redis through a promise).
 */
import { createHash, randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import nodePath from 'node:path';
import { CacheValueError, type CachedResponse, type CacheValue, type ContentCache } from '../../content-cache/content-cache.js';
import type { HostCore } from './core.js';
import { BODY_FILE, bodyFile, checkResponse, type ScriptResponse } from './script-response.js';
import type { CacheFiles } from './services.js';

/** Longest cache key accepted from a script (Redis allows more; a long key is a script bug). */
export const MAX_CACHE_KEY = 1024;

function contentCache(host: HostCore): ContentCache {
  if (!host.services.cache) throw new Error('the content cache is not configured on this server');
  return host.services.cache;
}

function checkKey(key: string): void {
  if (key.length === 0 || Buffer.byteLength(key) > MAX_CACHE_KEY) throw new TypeError(`cache key must be 1 to ${MAX_CACHE_KEY} bytes`);
}

function checkTtl(ttl: number): void {
  if (!Number.isFinite(ttl) || ttl < 0) throw new TypeError('cache ttl must be a number of seconds >= 0');
}

/**
 * cache.get(key): the value, or null on a miss (or when a shared cache is down). The
 * embedded cache answers at once (a value, not a promise), so the script need not wait.
 */
export function cacheGet(host: HostCore, key: string): CacheValue | null | Promise<CacheValue | null> {
  checkKey(key);
  const cache = contentCache(host);
  const found = cache.now ? cache.now.get(key) : host.guard(cache.get(key), 'cache.get()');
  if (found instanceof Promise) return found.then((value) => checkBodyFile(host, value));
  return found !== null && !Buffer.isBuffer(found) && bodyFile(found).file !== undefined ? checkBodyFile(host, found) : found;
}

// A response whose body file is gone (tmpfs after a reboot, another host's file in a shared
// Redis) is a miss, not a hit that sends nothing. The check is the confined lookup sendfile()
// uses, so a reference planted in a shared cache cannot probe outside files.roots.
async function checkBodyFile(host: HostCore, value: CacheValue | null): Promise<CacheValue | null> {
  if (value === null || Buffer.isBuffer(value)) return value;
  const file = bodyFile(value).file;
  if (file === undefined) return value;
  if (!host.services.files) return null;
  const found = await host.guard(host.services.files.lookup(file), 'cache.get()');
  return found.kind === 'file' ? value : null;
}

/**
 * cache.set(key, value, ttl): false when not stored (too large, shared cache down). A response
 * body of at least cacheFiles.minBytes is written to a file in cacheFiles.dir and cached as a
 * reference, so a hit is sent by the web server (sendfile) instead of through Lodestone.
 */
export function cacheSet(host: HostCore, key: string, value: Buffer | ScriptResponse, ttl: number): boolean | Promise<boolean> {
  checkKey(key);
  checkTtl(ttl);
  const cache = contentCache(host);
  let stored: CacheValue;
  if (Buffer.isBuffer(value)) stored = value;
  else {
    const checked = checkResponse(value);
    const { headers, file } = bodyFile(checked);
    const files = host.services.cacheFiles;
    if (file === undefined && files && checked.body.length >= files.minBytes) {
      return host.guard(storeBodyFile(host, files, key, checked, ttl), 'cache.set()');
    }
    // Only a reference this server made (re-caching a hit) may name a file.
    if (file !== undefined && !(files && nodePath.dirname(file) === files.dir)) {
      throw new TypeError('cache.set(): a response file must be one cache.set() wrote into cache.fileDir');
    }
    stored = { status: checked.status, headers: file === undefined ? headers : [...headers, [BODY_FILE, file]], body: checked.body, storedAt: Date.now() };
  }
  return cache.now ? cache.now.set(key, stored, ttl) : host.guard(cache.set(key, stored, ttl), 'cache.set()');
}

// One file per key (a hash of it), replaced atomically: a web server still sending the old
// one keeps its open file. Expired entries leave their file until the key is stored again.
async function storeBodyFile(host: HostCore, files: CacheFiles, key: string, value: ScriptResponse, ttl: number): Promise<boolean> {
  const final = nodePath.join(files.dir, `${createHash('sha256').update(key).digest('hex')}.body`);
  const temp = `${final}.${process.pid}.${randomBytes(6).toString('hex')}`;
  try {
    await fsp.writeFile(temp, value.body, { mode: 0o644 });
    await fsp.rename(temp, final);
  } catch (err) {
    await fsp.rm(temp, { force: true }).catch(() => undefined);
    // Lodestone's own line: not charged to the script's log budget.
    host.response.log(`lodestone: cache.set(${JSON.stringify(key)}): cannot write ${final}: ${(err as Error).message}`);
    return false;
  }
  const stored: CachedResponse = { status: value.status, headers: [...value.headers, [BODY_FILE, final]], body: Buffer.alloc(0), storedAt: Date.now() };
  const cache = contentCache(host);
  return cache.now ? cache.now.set(key, stored, ttl) : cache.set(key, stored, ttl);
}

/** cache.delete(key): whether a value was removed. */
export function cacheDelete(host: HostCore, key: string): boolean | Promise<boolean> {
  checkKey(key);
  const cache = contentCache(host);
  return cache.now ? cache.now.delete(key) : host.guard(cache.delete(key), 'cache.delete()');
}

/** cache.incr(key, by[, ttl]): the new value, or null when a shared cache is down. */
export function cacheIncr(host: HostCore, key: string, by: number, ttl?: number): number | null | Promise<number | null> {
  checkKey(key);
  if (!Number.isSafeInteger(by)) throw new TypeError('cache.incr(): the increment must be an integer');
  if (ttl !== undefined) checkTtl(ttl);
  const cache = contentCache(host);
  try {
    return cache.now ? cache.now.incr(key, by, ttl) : host.guard(cache.incr(key, by, ttl), 'cache.incr()').catch(scriptError);
  } catch (err) {
    return scriptError(err);
  }
}

// A counter holding text is the script's mistake: a TypeError it sees, not a cache failure.
function scriptError(err: unknown): never {
  if (err instanceof CacheValueError) throw new TypeError(err.message, { cause: err });
  throw err;
}
