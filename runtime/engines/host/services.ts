/**
 * What the server lends a run beyond the request: file access, the content cache, backend
 * pools, the cache's body-file directory, the slow log and the outbound HTTP client. Separate from the capabilities that
 * use them so that each capability (files.ts, cache.ts, pass.ts, fetch.ts) and the run core (core.ts)
 * name one shared shape, and a server or test builds it without knowing any capability.
 */
import type { ContentCache } from '../../content-cache/content-cache.js';
import type { BackendPool } from '../../fastcgi/client/pool.js';
import type { FetchClient } from '../../fetch/fetch-client.js';
import type { Files } from '../../files/files.js';
import type { SlowLog } from '../slow-log.js';

/** What the server lends a run beyond the request itself; each part may be absent. */
export interface HostServices {
  /** File access for stat() and sendfile(). */
  readonly files: Files | null;
  /** The content cache behind cache.get/set/delete/incr. */
  readonly cache: ContentCache | null;
  /** FastCGI backend pools by name, for pass(). */
  readonly backends: ReadonlyMap<string, BackendPool>;
  /** Where cache.set() writes large response bodies, to be sent with sendfile; null: kept inline. */
  readonly cacheFiles?: CacheFiles | null;
  /** The in-flight slow log (slowRequestMs); null or absent: off. */
  readonly slowLog?: SlowLog | null;
  /** The worker's outbound HTTP client for fetch(); null or absent: every origin is denied. */
  readonly fetch?: FetchClient | null;
}

/** Large cached bodies go to files (seed 001's trick: tmpfs, then X-Sendfile / X-Accel-Redirect). */
export interface CacheFiles {
  /** A directory inside files.roots (real path), ideally on tmpfs. */
  readonly dir: string;
  /** Bodies of at least this many bytes are written there. */
  readonly minBytes: number;
}

/** No files, no cache, no backends: what a bare host (tests, benches) gets. */
export const noServices: HostServices = Object.freeze({ files: null, cache: null, backends: new Map<string, BackendPool>() });
