/**
 * The development HTTP front end (`lodestone serve --http`, like `php -S`): a small web server
 * that maps URL paths to files under the script root and forwards `.lua` / `.js` requests to a
 * real Lodestone FastCGI server through a {@link BackendPool}, with the params nginx's
 * fastcgi_params would send. Every request thus takes the production path; what nginx or
 * lighttpd would do around it (static files, X-Sendfile, error pages) is done here, in small;
 * sending a file and the error page are in dev-file.ts.
 *
 * It is meant for a developer's machine, not for production: no TLS, no caching, no
 * conditional requests, no directory listings, one byte range at most.
 */
import { escapeHtml } from '../handlers/error-page.js';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream';
import { LodestoneError, httpStatus } from '../errors.js';
import { BackendError, BackendPool, cancelOf, defaultPoolOptions, type BackendResponse } from '../fastcgi/client/pool.js';
import { confine } from '../files/confine.js';
import type { Logger } from '../log.js';
import { version } from '../version.js';
import { errorPage, sendFile, writeHead } from './dev-file.js';

/** What {@link startDevHttp} needs. */
export interface DevHttpOptions {
  /** Loopback address to listen on, e.g. '127.0.0.1' or '::1'. */
  readonly host: string;
  /** TCP port; 0 picks a free one (see {@link DevHttp.port}). */
  readonly port: number;
  /** The Lodestone FastCGI server's unix socket path. */
  readonly socket: string;
  /** Script root, a real path: URL paths map to files below it. */
  readonly root: string;
  /** Real paths X-Sendfile from a script may point into (files.roots). */
  readonly fileRoots: readonly string[];
  readonly log: Logger;
  /** Tried in order for a directory; default `['index.lua', 'index.js']`. */
  readonly index?: readonly string[];
  /**
   * Script requests wait for this before they go to FastCGI: the development server listens on
   * its port before its FastCGI worker does, and a request in between would get a 502.
   */
  readonly ready?: Promise<void>;
}

/** A running dev front end. */
export interface DevHttp {
  /** `http://HOST:PORT`, IPv6 hosts in brackets. */
  readonly url: string;
  readonly port: number;
  /** Stops listening, closes every client connection (keep-alive ones too) and the pool. */
  close(): Promise<void>;
}

const SCRIPT_EXTENSIONS = new Set(['.lua', '.js']);
/** Escalation headers honoured as lighttpd does (lower case); X-Accel-Redirect is nginx's and refused. */
const SENDFILE_HEADERS = ['x-sendfile', 'x-lighttpd-send-file'];
const SENDFILE2 = 'x-sendfile2';
const ACCEL = 'x-accel-redirect';
/** How long close() lets in-flight backend requests finish before the pool destroys them. */
const CLOSE_GRACE_MS = 2000;

/**
 * Starts the dev front end and resolves once it listens; rejects with LS_LISTEN_FAILED.
 *
 * @example
 *   const dev = await startDevHttp({ host: '127.0.0.1', port: 8080, socket: '/tmp/ls-x/fcgi.sock',
 *                                    root: '/home/me/scripts', fileRoots: ['/home/me/scripts'], log });
 *   // curl http://127.0.0.1:8080/hello.lua
 *   await dev.close();
 */
export async function startDevHttp(options: DevHttpOptions): Promise<DevHttp> {
  const pool = new BackendPool({ ...defaultPoolOptions, name: 'dev-http', servers: [`unix:${options.socket}`] }, options.log);
  const ctx: Context = {
    options,
    pool,
    index: options.index ?? ['index.lua', 'index.js'],
    software: `lodestone-dev/${version()}`,
  };
  const server = http.createServer((req, res) => {
    handle(ctx, req, res).catch((err: unknown) => internalError(ctx, req, res, err));
  });
  // A client that resets mid-request must cost its request, never the process.
  server.on('clientError', (_err, socket: Socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: options.host, port: options.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await pool.close(0);
    throw new LodestoneError('LS_LISTEN_FAILED', `dev HTTP ${options.host}:${options.port}: ${(err as Error).message}`);
  }
  const port = (server.address() as AddressInfo).port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  let closing: Promise<void> | null = null;
  return {
    url: `http://${host}:${port}`,
    port,
    close: () =>
      (closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        // server.close() alone waits for idle keep-alive clients to time out.
        server.closeAllConnections();
        await stopped;
        await pool.close(CLOSE_GRACE_MS);
      })()),
  };
}

interface Context {
  readonly options: DevHttpOptions;
  readonly pool: BackendPool;
  readonly index: readonly string[];
  readonly software: string;
}

/** What a URL path names under the root. */
type Target =
  | { kind: 'script' | 'static'; file: string; uriPath: string }
  | { kind: 'redirect'; location: string }
  | { kind: 'error'; status: number };

async function handle(ctx: Context, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  logAccess(ctx, req, res);
  const rawUrl = req.url ?? '/';
  const q = rawUrl.indexOf('?');
  const rawPath = q < 0 ? rawUrl : rawUrl.slice(0, q);
  const query = q < 0 ? '' : rawUrl.slice(q + 1);
  const target = await resolve(ctx, rawPath, query);
  switch (target.kind) {
    case 'error':
      return errorPage(res, target.status);
    case 'redirect':
      res.writeHead(301, { Location: target.location, 'Content-Type': 'text/html; charset=utf-8' });
      res.end(`<!DOCTYPE html><title>301 Moved Permanently</title><a href="${escapeHtml(target.location)}">moved</a>\n`);
      return;
    case 'static':
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('Allow', 'GET, HEAD');
        return errorPage(res, 405);
      }
      return sendFile(ctx.options.log, req, res, target.file, 200, [], null);
    case 'script':
      return forward(ctx, req, res, target.file, target.uriPath, rawUrl, query);
  }
}

/**
 * Maps a raw URL path to a file: percent-decoded once, then confined to the root by the rule
 * of confine.ts (lexically, then after realpath), so neither `..` nor a symlink leads out.
 */
async function resolve(ctx: Context, rawPath: string, query: string): Promise<Target> {
  const root = ctx.options.root;
  let uriPath: string;
  try {
    uriPath = decodeURIComponent(rawPath);
  } catch {
    return { kind: 'error', status: 400 };
  }
  if (!uriPath.startsWith('/')) return { kind: 'error', status: 400 };
  // Relative to the root: an absolute input would be taken as a filesystem path.
  const where = await confine(`.${uriPath}`, [root], root);
  if (where.kind === 'refused') {
    ctx.options.log.debug('LS_FILE_FORBIDDEN', `dev HTTP: ${where.reason}`, { uri: rawPath });
    return { kind: 'error', status: 403 };
  }
  if (where.kind === 'missing') return { kind: 'error', status: 404 };
  const st = await statOrNull(where.path);
  if (st === null) return { kind: 'error', status: 404 };
  if (st.isFile()) return fileTarget(where.path, path.posix.normalize(uriPath));
  if (!st.isDirectory()) return { kind: 'error', status: 403 };
  if (!rawPath.endsWith('/')) {
    // One leading slash: `//host/dir` would be a protocol-relative URL, a redirect off site.
    const location = `/${rawPath.replace(/^\/+/, '')}/`;
    return { kind: 'redirect', location: query === '' ? location : `${location}?${query}` };
  }
  for (const name of ctx.index) {
    const candidate = await confine(path.join(where.path, name), [root], root);
    if (candidate.kind !== 'ok') continue;
    const ist = await statOrNull(candidate.path);
    if (ist?.isFile()) return fileTarget(candidate.path, path.posix.join(path.posix.normalize(uriPath), name));
  }
  // No directory listings: nginx answers a directory without an index with 403 too.
  return { kind: 'error', status: 403 };
}

function fileTarget(file: string, uriPath: string): Target {
  return { kind: SCRIPT_EXTENSIONS.has(path.extname(file)) ? 'script' : 'static', file, uriPath };
}

/** Sends the request to the FastCGI server and its answer to the client. */
async function forward(
  ctx: Context,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  file: string,
  uriPath: string,
  rawUrl: string,
  query: string,
): Promise<void> {
  const abort = new AbortController();
  // A client gone before the end: the backend request is aborted (its connection closed).
  res.once('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  // Held while the development server's worker starts (not after: its socket then keeps listening).
  await ctx.options.ready;
  let backend: BackendResponse;
  try {
    backend = await ctx.pool.request({
      params: fastcgiParams(ctx, req, file, uriPath, rawUrl, query),
      body: hasBody ? req : null,
      cancel: cancelOf(abort.signal),
    });
  } catch (err) {
    if (!(err instanceof BackendError)) throw err;
    // The pool has logged it. 499 (client gone) has nobody to answer.
    if (err.status === 499) res.destroy();
    else errorPage(res, err.status);
    return;
  }
  const headers = backend.headers;
  const accel = headers.find(([name]) => name.toLowerCase() === ACCEL);
  if (accel !== undefined) {
    backend.body.resume();
    ctx.options.log.warn('LS_SENDFILE_UNSUPPORTED', 'dev HTTP cannot follow X-Accel-Redirect (nginx only); set files.sendfile to auto or x-sendfile', {
      script: file,
    });
    return errorPage(res, httpStatus.LS_SENDFILE_UNSUPPORTED);
  }
  const escalation = headers.find(([name]) => SENDFILE_HEADERS.includes(name.toLowerCase()) || name.toLowerCase() === SENDFILE2);
  if (escalation !== undefined) {
    // Whatever body came with the header is not sent: the file is the body.
    backend.body.resume();
    return escalate(ctx, req, res, backend, escalation);
  }
  try {
    writeHead(res, backend.status, headers, null);
  } catch (err) {
    backend.body.destroy();
    ctx.options.log.warn('LS_BACKEND_PROTOCOL', `dev HTTP: unusable response header: ${(err as Error).message}`, { script: file });
    return errorPage(res, httpStatus.LS_BACKEND_PROTOCOL);
  }
  pipeline(backend.body, res, () => {
    // A failed backend body was logged by the connection; a gone client by nobody, and needs not.
  });
}

/**
 * The CGI params nginx's fastcgi_params (plus SCRIPT_FILENAME, as in php-fpm setups) would send.
 * Headers become HTTP_*, except Proxy (httpoxy) and names with characters other than letters,
 * digits and '-' (nginx's underscores_in_headers off: `X_Forwarded_For` must not pose as
 * `X-Forwarded-For`).
 */
function fastcgiParams(
  ctx: Context,
  req: http.IncomingMessage,
  file: string,
  uriPath: string,
  rawUrl: string,
  query: string,
): Array<[string, string]> {
  const socket = req.socket;
  const params: Array<[string, string]> = [
    ['GATEWAY_INTERFACE', 'CGI/1.1'],
    ['SERVER_SOFTWARE', ctx.software],
    ['SCRIPT_FILENAME', file],
    ['SCRIPT_NAME', uriPath],
    ['DOCUMENT_URI', uriPath],
    ['DOCUMENT_ROOT', ctx.options.root],
    ['REQUEST_URI', rawUrl],
    ['QUERY_STRING', query],
    ['REQUEST_METHOD', req.method ?? 'GET'],
    ['CONTENT_TYPE', req.headers['content-type'] ?? ''],
    ['CONTENT_LENGTH', req.headers['content-length'] ?? ''],
    ['SERVER_PROTOCOL', `HTTP/${req.httpVersion}`],
    ['REQUEST_SCHEME', 'http'],
    ['REMOTE_ADDR', socket.remoteAddress ?? ''],
    ['REMOTE_PORT', String(socket.remotePort ?? '')],
    ['SERVER_ADDR', socket.localAddress ?? ''],
    ['SERVER_PORT', String(socket.localPort ?? '')],
    ['SERVER_NAME', ctx.options.host],
    ['REDIRECT_STATUS', '200'],
  ];
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || name === 'proxy' || name === 'content-type' || name === 'content-length') continue;
    if (!/^[A-Za-z0-9-]+$/.test(name)) continue;
    // Node joins repeated headers with ', ' (cookies with '; '); set-cookie alone stays an array.
    params.push([`HTTP_${name.toUpperCase().replaceAll('-', '_')}`, Array.isArray(value) ? value.join(', ') : value]);
  }
  return params;
}

/**
 * Sends the file a script escalated with X-Sendfile, X-LIGHTTPD-send-file or X-Sendfile2, as
 * lighttpd would: the path percent-decoded once and confined to the file roots.
 */
async function escalate(
  ctx: Context,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  backend: BackendResponse,
  [name, value]: readonly [string, string],
): Promise<void> {
  const log = ctx.options.log;
  let encoded = value.trim();
  let range: [number, number | null] | null = null;
  if (name.toLowerCase() === SENDFILE2) {
    // `<encoded path> <start>-[<end>]`; lighttpd's comma-separated list of several is not supported.
    const m = /^(\S+) (\d+)-(\d*)$/.exec(encoded);
    if (m === null || (m[3] !== '' && Number(m[3]) < Number(m[2]))) {
      log.warn('LS_BACKEND_PROTOCOL', `dev HTTP: malformed X-Sendfile2 ${JSON.stringify(value)}`, {});
      return errorPage(res, httpStatus.LS_BACKEND_PROTOCOL);
    }
    encoded = m[1]!;
    range = [Number(m[2]), m[3] === '' ? null : Number(m[3])];
  }
  let file: string;
  try {
    file = decodeURIComponent(encoded);
  } catch {
    log.warn('LS_BACKEND_PROTOCOL', `dev HTTP: ${name} path is not percent-encoded UTF-8`, { path: encoded });
    return errorPage(res, httpStatus.LS_BACKEND_PROTOCOL);
  }
  const roots = ctx.options.fileRoots;
  const where = roots.length === 0 ? null : await confine(file, roots, roots[0]!);
  if (where === null || where.kind === 'refused') {
    log.warn('LS_FILE_FORBIDDEN', `dev HTTP: ${name} outside the file roots`, { path: file });
    return errorPage(res, httpStatus.LS_FILE_FORBIDDEN);
  }
  if (where.kind === 'missing') {
    log.info('LS_FILE_NOT_FOUND', `dev HTTP: ${name} names a missing file`, { path: file });
    return errorPage(res, httpStatus.LS_FILE_NOT_FOUND);
  }
  const kept = backend.headers.filter(([n]) => n.toLowerCase() !== name.toLowerCase());
  return sendFile(ctx.options.log, req, res, where.path, backend.status, kept, range);
}

function internalError(ctx: Context, req: http.IncomingMessage, res: http.ServerResponse, err: unknown): void {
  ctx.options.log.error('LS_HANDLER_FAILED', `dev HTTP: ${(err as Error)?.stack ?? String(err)}`, { uri: req.url });
  errorPage(res, httpStatus.LS_HANDLER_FAILED);
}

/** php -S style: one line per request, at info level, once the response is done. */
function logAccess(ctx: Context, req: http.IncomingMessage, res: http.ServerResponse): void {
  const log = ctx.options.log;
  if (!log.enabled('info')) return;
  // Read now: a destroyed socket no longer knows its peer.
  const remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
  res.once('close', () => {
    log.info('-', `${req.method} ${req.url} ${res.statusCode}`, { remote, complete: res.writableFinished });
  });
}

async function statOrNull(file: string): Promise<fs.Stats | null> {
  try {
    return await fs.promises.stat(file);
  } catch {
    return null;
  }
}

