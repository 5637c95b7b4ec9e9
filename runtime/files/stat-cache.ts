/**
 * A per-worker stat cache, fcgi-stat-accel's job: stat a file through libuv's thread pool, share
 * one stat between concurrent requests for the same path, and reuse the answer for a short TTL.
 * Missing files are cached too, so a flood of requests for one absent path costs one stat per TTL.
 *
 * The cache is keyed by real path (the caller confines first), bounded by count (lru-cache), and
 * keeps its own expiry against an injectable clock, so tests can move time without sleeping.
 */
import fs from 'node:fs';
import type { default as MimeTypes } from 'mime';
import { LRUCache } from 'lru-cache';

/**
 * mime, imported on the first stat: its full table (the IANA types and the common others:
 * .ico, .docx, .tar, .mkv...) costs a process ~5.4 MiB of RSS (measured: import alone, after
 * the rest of the loader), which a worker that never stats a file should not pay at idle.
 * `mime/lite` would be 0.8 MiB but knows none of those.
 */
let mime: typeof MimeTypes | null = null;
let mimeLoading: Promise<void> | null = null;

/** Resolves once {@link contentType} can answer (mime imported); null when it already can. */
export function mimeReady(): Promise<void> | null {
  if (mime !== null) return null;
  mimeLoading ??= import('mime').then((m) => {
    mime = m.default;
  });
  return mimeLoading;
}

/** What stat() reports about a file; the field names are the script API's. */
export interface FileInfo {
  readonly is_file: boolean;
  readonly is_dir: boolean;
  readonly size: number;
  /** Modification time in whole seconds since the epoch. */
  readonly mtime: number;
  /** nginx's form: `"<mtime seconds hex>-<size hex>"`, quotes included. */
  readonly etag: string;
  /** From the name's extension; text types carry `; charset=utf-8`. */
  readonly content_type: string;
}

/** Options of a {@link StatCache}. */
export interface StatCacheOptions {
  /** How long an answer is reused, in ms; 0 stats on every call (concurrent calls still share one). */
  readonly ttlMs: number;
  /** Paths kept at most (least recently used go first); 0 keeps none. */
  readonly maxEntries: number;
  /** The clock in ms, for tests; default `Date.now`. */
  readonly now?: () => number;
}

interface Entry {
  readonly info: FileInfo | null;
  readonly expires: number;
  /** The first page was read while this answer was fresh (prefetch with read). */
  warmed: boolean;
}

/** How much prefetch reads: one page, enough for the kernel's readahead to start. */
const FIRST_PAGE = 4096;

// prefetch reads only to pull the page into the page cache and never looks at the bytes, so
// every read may share one scratch buffer.
const scratch = Buffer.alloc(FIRST_PAGE);

/**
 * @example
 *   const cache = new StatCache({ ttlMs: 1000, maxEntries: 10_000 });
 *   const info = await cache.stat('/srv/files/report.pdf');
 *   if (info?.is_file) res.setHeader('ETag', info.etag);
 */
export class StatCache {
  private readonly ttlMs: number;
  private readonly now: () => number;
  private readonly entries: LRUCache<string, Entry> | null;
  private readonly inflight = new Map<string, Promise<FileInfo | null>>();
  private readonly reading = new Set<string>();
  private statCalls = 0;
  private pageReads = 0;

  constructor(options: StatCacheOptions) {
    if (!(options.ttlMs >= 0) || !Number.isFinite(options.ttlMs)) throw new RangeError(`ttlMs must be >= 0 (got ${options.ttlMs})`);
    if (!Number.isInteger(options.maxEntries) || options.maxEntries < 0) {
      throw new RangeError(`maxEntries must be an integer >= 0 (got ${options.maxEntries})`);
    }
    this.ttlMs = options.ttlMs;
    this.now = options.now ?? Date.now;
    this.entries = options.ttlMs > 0 && options.maxEntries > 0 ? new LRUCache({ max: options.maxEntries }) : null;
  }

  /** Number of real fs stat calls made (tests prove caching with it). */
  get stats(): number {
    return this.statCalls;
  }

  /** Number of first-page reads prefetch has finished (each opened and closed one descriptor). */
  get reads(): number {
    return this.pageReads;
  }

  /**
   * Stats `realPath` through libuv's thread pool; null when it is missing (ENOENT, ENOTDIR).
   * Concurrent calls for one path share one stat; the answer is reused for `ttlMs`. Other errors
   * (EACCES, EIO) reject and are not cached.
   */
  stat(realPath: string): Promise<FileInfo | null> {
    const entry = this.fresh(realPath);
    if (entry) return Promise.resolve(entry.info);
    let pending = this.inflight.get(realPath);
    if (pending) return pending;
    // The answer is as old as the moment the stat was asked for, so the TTL counts from there.
    const asked = this.now();
    this.statCalls++;
    pending = statFile(realPath)
      .then((info) => {
        this.entries?.set(realPath, { info, expires: asked + this.ttlMs, warmed: false });
        return info;
      })
      .finally(() => this.inflight.delete(realPath));
    this.inflight.set(realPath, pending);
    return pending;
  }

  /**
   * Starts a stat of `realPath` (and, with `readFirstPage`, reads its first 4 KiB to warm the page
   * cache, once per fresh answer); returns at once. Errors are swallowed: the real lookup that
   * follows reports them.
   */
  prefetch(realPath: string, readFirstPage: boolean): void {
    this.stat(realPath)
      .then((info) => (readFirstPage && info?.is_file && info.size > 0 ? this.warm(realPath) : undefined))
      .catch(() => undefined);
  }

  private fresh(realPath: string): Entry | undefined {
    const entry = this.entries?.get(realPath);
    if (!entry) return undefined;
    if (this.now() < entry.expires) return entry;
    this.entries!.delete(realPath);
    return undefined;
  }

  private async warm(realPath: string): Promise<void> {
    const entry = this.fresh(realPath);
    if (entry?.warmed || this.reading.has(realPath)) return;
    this.reading.add(realPath);
    try {
      await readFirstPage(realPath);
      if (entry) entry.warmed = true;
    } finally {
      this.reading.delete(realPath);
      this.pageReads++;
    }
  }
}

// Regular files this process may not read, by their (frozen) info: see isUnreadable.
const unreadable = new WeakSet<FileInfo>();

/**
 * True when `info` is a regular file this process could not open for reading when it was
 * stat()ed (access(2): mode bits and ACLs against the worker's user). sendfile() hands the
 * web server only what the worker itself could read: the web server may run as another user.
 */
export function isUnreadable(info: FileInfo): boolean {
  return unreadable.has(info);
}

async function statFile(realPath: string): Promise<FileInfo | null> {
  let st: fs.Stats;
  // Root reads everything; otherwise the access check runs beside the stat, on the same miss.
  const access = process.geteuid?.() === 0 ? null : fs.promises.access(realPath, fs.constants.R_OK).then(() => true, () => false);
  try {
    st = await fs.promises.stat(realPath);
  } catch (err) {
    await access;
    const code = err instanceof Error && 'code' in err ? err.code : undefined;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw err;
  }
  await mimeReady();
  const mtime = Math.floor(st.mtimeMs / 1000);
  const info: FileInfo = Object.freeze({
    is_file: st.isFile(),
    is_dir: st.isDirectory(),
    size: st.size,
    mtime,
    etag: `"${mtime.toString(16)}-${st.size.toString(16)}"`,
    content_type: contentType(realPath),
  });
  if (access !== null && !(await access) && st.isFile()) unreadable.add(info);
  return info;
}

/**
 * The Content-Type for a file name: mime's guess, `; charset=utf-8` on text types, else
 * octet-stream. Await {@link mimeReady} once first.
 */
export function contentType(file: string): string {
  if (mime === null) throw new Error('contentType() before mimeReady()');
  const type = mime.getType(file);
  if (type === null) return 'application/octet-stream';
  return type.startsWith('text/') ? `${type}; charset=utf-8` : type;
}

/**
 * Reads the first page of `realPath` and always closes the descriptor (the C program this
 * replaces leaked a FILE* per request).
 */
async function readFirstPage(realPath: string): Promise<void> {
  // O_NONBLOCK: the name was a regular file at stat time, but if it has since become a FIFO a
  // blocking open would park a thread-pool thread until a writer appears.
  const handle = await fs.promises.open(realPath, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  try {
    // Check the descriptor itself, not the name (lighttpd's TOCTOU rule): only read a regular file.
    if ((await handle.stat()).isFile()) await handle.read(scratch, 0, FIRST_PAGE, 0);
  } finally {
    await handle.close();
  }
}
