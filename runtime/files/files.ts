/**
 * File access for scripts and the stat-accel mode: confinement to the configured roots, a
 * per-worker stat cache, and escalation of the delivery to the web server (X-Sendfile,
 * X-Sendfile2, X-Accel-Redirect). All filesystem work runs on libuv's thread pool; nothing here
 * blocks the event loop.
 */
import type { Request } from '../fastcgi/server/request.js';
import type { Response } from '../fastcgi/server/response.js';
import { confine, type Confined } from './confine.js';
import { accelUri, contentDisposition, escalationHeader, pickMode } from './escalate.js';
import type { FilesConfig } from './files-config.js';
import { openRegular } from './open-regular.js';
import { isUnreadable, StatCache, type FileInfo } from './stat-cache.js';
import { LRUCache } from 'lru-cache';

export type { FileInfo } from './stat-cache.js';
export type { SendfileMode } from './escalate.js';
export type { FilesConfig } from './files-config.js';

/**
 * True for a real path the script store would run: a script's source is code (and often
 * secrets), not a file to hand to a browser, as nginx's `location ~ \.php$ { deny all; }` habit
 * says for PHP.
 */
export type ScriptSources = (realPath: string) => boolean;

/** What a path names, after confinement and stat. */
export type FileLookup =
  /** `special`: neither a regular file nor a directory (a FIFO, socket or device): stat()'s to report, never to send. */
  | { readonly kind: 'file' | 'dir' | 'special'; readonly path: string; readonly info: FileInfo }
  | { readonly kind: 'missing' }
  | { readonly kind: 'refused'; readonly reason: string };

/** How sendfile() delivers: an escalation header, or the bytes themselves (a range nginx cannot take). */
export type Delivery =
  | { readonly kind: 'escalated' }
  | { readonly kind: 'direct'; readonly start: number; readonly end: number }
  | { readonly kind: 'unsatisfiable' }
  | { readonly kind: 'no-mapping' };

/** sendfile()'s optional arguments. */
export interface SendOptions {
  /** First byte to send; with `length`, a range (206 Partial Content). */
  readonly offset?: number | undefined;
  readonly length?: number | undefined;
  /** Content-Type; default: from the file's extension. */
  readonly contentType?: string | undefined;
  /** Offer the file as a download under this name (Content-Disposition: attachment). */
  readonly filename?: string | undefined;
}

/** One worker's file access: roots, stat cache, escalation policy. */
export class Files {
  readonly cache: StatCache;
  // Confinement results by the path as given (realpath walks every component; repeats are the
  // common case), kept as long as stat results and shared by concurrent lookups.
  private readonly confined: LRUCache<string, Promise<Confined>> | null;

  constructor(
    readonly config: FilesConfig,
    /** Script sources refused unless config.allowScripts; null where no script runs. */
    private readonly scriptSources: ScriptSources | null = null,
  ) {
    this.cache = new StatCache({ ttlMs: config.statCacheMs, maxEntries: config.statCacheEntries });
    this.confined =
      config.statCacheMs > 0 ? new LRUCache({ max: config.statCacheEntries, ttl: config.statCacheMs, ttlAutopurge: false }) : null;
  }

  /** Confines `input` to the roots and stats it. Never rejects for a missing or refused path. */
  async lookup(input: string): Promise<FileLookup> {
    const where = await this.confine(input);
    if (where.kind === 'refused') return where;
    if (where.kind === 'missing') return { kind: 'missing' };
    const info = await this.cache.stat(where.path);
    if (info === null) return { kind: 'missing' };
    if (info.is_file && !this.config.allowScripts && this.scriptSources?.(where.path)) {
      return { kind: 'refused', reason: `${where.path} is a script source (files.allowScripts = true serves it)` };
    }
    // What this worker's user cannot read is not reached through it, whoever the web server is.
    if (isUnreadable(info)) return { kind: 'refused', reason: `${where.path}: not readable by this worker's user (uid ${process.geteuid?.()})` };
    return { kind: info.is_dir ? 'dir' : info.is_file ? 'file' : 'special', path: where.path, info };
  }

  private confine(input: string): Promise<Confined> {
    const roots = this.config.roots;
    if (!this.confined) return confine(input, roots, roots[0]!);
    let pending = this.confined.get(input);
    if (!pending) {
      pending = confine(input, roots, roots[0]!);
      this.confined.set(input, pending);
      // A failed realpath (EACCES, EIO) must not be remembered.
      pending.catch(() => this.confined?.delete(input));
    }
    return pending;
  }

  /**
   * Starts looking up the configured param's path as the request arrives, so the script's
   * stat() (or the stat-accel answer) finds it done or in flight. Errors are ignored here:
   * the real lookup reports them.
   */
  prefetch(req: Request): void {
    const p = this.config.prefetch;
    if (!p) return;
    const file = req.param(p.param);
    if (!file) return;
    this.confine(file).then(
      (where) => {
        if (where.kind === 'ok') this.cache.prefetch(where.path, p.read);
      },
      () => {},
    );
  }

  /**
   * Prepares `res` to deliver `file`: headers, status, and the escalation header for the web
   * server that sent the request. The caller ends the response (and, for a direct delivery,
   * writes the bytes first).
   */
  deliver(req: Request, res: Response, file: { path: string; info: FileInfo }, options: SendOptions = {}): Delivery {
    const { info } = file;
    const mode = pickMode(this.config.sendfile, req.param('SERVER_SOFTWARE'));
    let range: [number, number] | null = null;
    if (options.offset !== undefined || options.length !== undefined) {
      const start = options.offset ?? 0;
      const end = options.length !== undefined ? Math.min(start + options.length, info.size) - 1 : info.size - 1;
      if (start >= info.size || end < start) {
        res.reset();
        res.status = 416;
        res.setHeader('Content-Range', `bytes */${info.size}`);
        return { kind: 'unsatisfiable' };
      }
      range = [start, end];
    }
    res.resetBody();
    if (res.getHeader('Content-Type') === undefined) res.setHeader('Content-Type', options.contentType ?? info.content_type);
    else if (options.contentType !== undefined) res.setHeader('Content-Type', options.contentType);
    if (options.filename !== undefined) res.setHeader('Content-Disposition', contentDisposition(options.filename));
    if (range) {
      res.status = 206;
      res.setHeader('Content-Range', `bytes ${range[0]}-${range[1]}/${info.size}`);
    }
    // Only X-Sendfile2 carries a range; lighttpd understands it, so a ranged X-Sendfile becomes
    // one. nginx and Apache cannot take a range from the backend: Lodestone sends those bytes.
    let concrete = mode;
    if (range && mode === 'x-sendfile' && isLighttpd(req)) concrete = 'x-sendfile2';
    if (range && concrete !== 'x-sendfile2') {
      res.setHeader('Content-Length', range[1] - range[0] + 1);
      return { kind: 'direct', start: range[0], end: range[1] };
    }
    if (concrete === 'x-accel-redirect' && accelUri(file.path, this.config.accel) === null) {
      return { kind: 'no-mapping' };
    }
    const header = escalationHeader(concrete, file.path, range, this.config.accel);
    res.setHeader(header.name, header.value);
    return { kind: 'escalated' };
  }
}

function isLighttpd(req: Request): boolean {
  return /^lighttpd\b/i.test(req.param('SERVER_SOFTWARE') ?? '');
}

// Chunks a directly sent range leaves in: big enough for few syscalls, small enough that a slow
// client holds little memory (the socket is drained between chunks).
const CHUNK = 256 * 1024;

/**
 * Sends bytes start..end (inclusive) of `file` as the body of `res`, chunk by chunk with
 * backpressure, then ends it. Stops when the request goes away. If the file shrank meanwhile,
 * the response ends short and the web server sees fewer bytes than Content-Length promised.
 */
export async function sendRange(res: Response, req: Request, file: string, start: number, end: number): Promise<void> {
  // The lookup saw a regular file, but the name may have become a FIFO since: a plain open would
  // then park a thread-pool thread for good.
  const opened = await openRegular(file);
  if (!opened) throw new Error(`${file} is not a regular file`);
  const handle = opened.handle;
  try {
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, end - start + 1));
    for (let at = start; at <= end && !req.aborted && !res.finished; ) {
      const { bytesRead } = await handle.read(buf, 0, Math.min(buf.length, end - at + 1), at);
      if (bytesRead === 0) break;
      // A copy: the next read reuses buf while this chunk may still sit in the socket's queue.
      res.write(Buffer.from(buf.subarray(0, bytesRead)));
      res.flush();
      at += bytesRead;
      await res.drain();
    }
  } finally {
    await handle.close();
  }
  res.end();
}
