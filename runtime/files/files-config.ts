/**
 * The config's `[files]`: which directories scripts and stat-accel may reach, libuv's pool that
 * stats them, the stat cache, and how a file is handed to the web server.
 */
import path from 'node:path';
import { field, integer, invalid, isObject, oneOf, boolean, realDirectory, section, type Context, type ValueOf } from '../config-schema.js';

/**
 * How a file is handed to the web server, as `--sendfile` names it ('auto' decides per request
 * from SERVER_SOFTWARE; escalate.ts sends the headers): here, so that the config loads nothing
 * of the request path.
 */
export const sendfileModes = ['auto', 'x-sendfile', 'x-sendfile2', 'x-lighttpd-send-file', 'x-accel-redirect'] as const;
export type SendfileMode = (typeof sendfileModes)[number];

/** libuv's own pool size when nothing sets UV_THREADPOOL_SIZE. */
const LIBUV_POOL_SIZE = 4;

export const filesSection = section({
  /** Real paths; the first resolves relative paths. */
  roots: field<readonly string[]>({
    doc: 'directories `stat()`/`sendfile()`/stat-accel may reach (relative to the config file)',
    shown: '`[root]`',
    flag: { key: 'fileRoots', name: '--file-root' },
    // The script root, read before this section.
    default: (ctx) => Object.freeze([realDirectory('--root', ctx.done.root as string)]),
    parse(value, at) {
      if (!Array.isArray(value) || value.length === 0 || !value.every((r) => typeof r === 'string')) {
        throw invalid(at.name, 'must be a non-empty array of directories');
      }
      return Object.freeze(value.map((dir: string) => realDirectory(at.name, path.resolve(at.dir, dir))));
    },
  }),
  /** UV_THREADPOOL_SIZE: bin/lodestone.js sets it from here before anything starts the pool. */
  statThreads: integer({
    doc: 'libuv thread pool size, 1-1024; set before the pool starts by `bin/lodestone.js`',
    shown: '4 (or `UV_THREADPOOL_SIZE`)',
    flag: { key: 'statThreads', name: '--stat-threads' },
    min: 1,
    max: 1024,
    default: poolSize,
  }),
  statCacheMs: integer({ doc: 'how long a stat (and realpath) result is reused; 0: every call', min: 0, max: 86_400_000, default: 1000 }),
  statCacheEntries: integer({ doc: 'stat results kept (LRU)', min: 1, max: 10_000_000, default: 10_000 }),
  sendfile: oneOf(sendfileModes, { doc: 'escalation header, as `--sendfile`', flag: { key: 'sendfile', name: '--sendfile' }, default: 'auto' }),
  /** [filesystem root (a real path), internal URI prefix] pairs. */
  accel: field<ReadonlyArray<readonly [string, string]>>({
    doc: 'nginx: `{ "/srv/files": "/protected/" }` maps a file root to the prefix of an `internal` location',
    shown: 'none',
    default: Object.freeze([]),
    parse: accelMap,
  }),
  /** Let stat(), sendfile() and stat-accel reach script sources (see ScriptSources in files.ts). */
  allowScripts: boolean({
    doc: 'let `stat()`, `sendfile()` and stat-accel reach script sources (`.lua`/`.js` under the root, or the `--script` file)',
    default: false,
  }),
  prefetch: field<Prefetch>({
    doc: '`{ "param": "SCRIPT_FILENAME", "read": false }`: stat that param\'s path as the request arrives (and read its first page)',
    shown: '`null`',
    default: null,
    parse: prefetch,
  }),
});

/** Stat this param's path as soon as the request arrives (and read its first page). */
type Prefetch = { readonly param: string; readonly read: boolean } | null;

/** The `files` section of the configuration, validated. */
export type FilesConfig = ValueOf<typeof filesSection>;

// The pool libuv starts with when nothing sets statThreads: its own default, or the variable.
function poolSize(ctx: Context): number {
  const n = Number(ctx.env.UV_THREADPOOL_SIZE);
  return Number.isSafeInteger(n) && n >= 1 && n <= 1024 ? n : LIBUV_POOL_SIZE;
}

// { "/srv/files": "/protected" }: the filesystem root (resolved like roots) and the internal
// URI prefix nginx maps back to it with `alias`.
function accelMap(value: unknown, at: { name: string; dir: string }): ReadonlyArray<readonly [string, string]> {
  if (!isObject(value)) throw invalid(at.name, 'must be an object of filesystem root -> internal URI prefix');
  const out: Array<readonly [string, string]> = [];
  for (const [dir, prefix] of Object.entries(value)) {
    if (typeof prefix !== 'string' || !prefix.startsWith('/')) {
      throw invalid(`${at.name}.${dir}`, 'must be an internal URI prefix starting with /');
    }
    out.push(Object.freeze([realDirectory(`${at.name}.${dir}`, path.resolve(at.dir, dir)), prefix] as const));
  }
  return Object.freeze(out);
}

function prefetch(value: unknown, at: { name: string }): Prefetch {
  if (value === null) return null;
  if (!isObject(value)) throw invalid(at.name, 'must be an object { "param": NAME, "read": BOOLEAN } or null');
  for (const key of Object.keys(value)) {
    if (key !== 'param' && key !== 'read') throw invalid(`${at.name}.${key}`, 'unknown field');
  }
  const param = value.param ?? 'SCRIPT_FILENAME';
  if (typeof param !== 'string' || param === '') throw invalid(`${at.name}.param`, 'must be a FastCGI param name');
  const read = value.read ?? false;
  if (typeof read !== 'boolean') throw invalid(`${at.name}.read`, 'must be true or false');
  return Object.freeze({ param, read });
}
