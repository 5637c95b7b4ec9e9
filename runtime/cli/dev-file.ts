/**
 * The development server's file sending: a regular file with its length, type, modification
 * time and one byte range, and the error page. Apart from dev-http.ts, which decides what a URL
 * is and forwards scripts, because this is the part nginx or lighttpd would do around
 * Lodestone; both a static file and an X-Sendfile escalation end here.
 */
import fs from 'node:fs';
import type http from 'node:http';
import { pipeline } from 'node:stream';
import { httpStatus } from '../errors.js';
import { contentType, mimeReady } from '../files/stat-cache.js';
import { errorHtml } from '../handlers/error-page.js';
import type { Logger } from '../log.js';

/** Backend headers that describe the FastCGI hop or the body we no longer send as is. */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection']);

/**
 * Sends a regular file with Content-Length and Content-Type (from `headers` or mime). `forced`
 * is a range from X-Sendfile2 (206); without one a single `Range: bytes=` of the client is
 * honoured on a 200. The file is opened once and read through that descriptor, so what was
 * stat'ed is what is sent.
 */
export async function sendFile(
  log: Logger,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  file: string,
  status: number,
  headers: ReadonlyArray<readonly [string, string]>,
  forced: [number, number | null] | null,
): Promise<void> {
  let handle: fs.promises.FileHandle;
  try {
    // O_NONBLOCK: a FIFO swapped in after the check must not park a thread-pool thread.
    handle = await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return errorPage(res, code === 'ENOENT' || code === 'ENOTDIR' ? 404 : 403);
  }
  let st: fs.Stats;
  try {
    st = await handle.stat();
  } catch {
    await handle.close();
    return errorPage(res, 500);
  }
  if (!st.isFile()) {
    await handle.close();
    log.warn('LS_FILE_FORBIDDEN', 'dev HTTP: not a regular file', { path: file });
    return errorPage(res, httpStatus.LS_FILE_FORBIDDEN);
  }
  const size = st.size;
  let start = 0;
  let end = size - 1;
  const ranged = headers.some(([n]) => n.toLowerCase() === 'content-range');
  if (forced !== null) {
    start = forced[0];
    end = forced[1] === null ? size - 1 : Math.min(forced[1], size - 1);
    if (start >= size && size > 0) {
      await handle.close();
      res.setHeader('Content-Range', `bytes */${size}`);
      return errorPage(res, 416);
    }
    if (!ranged && (start !== 0 || end !== size - 1)) {
      status = status === 200 ? 206 : status;
      headers = [...headers, ['Content-Range', `bytes ${start}-${end}/${size}`]];
    }
  } else if (status === 200 && !ranged && req.headers.range !== undefined) {
    const r = parseRange(req.headers.range, size);
    if (r === 'unsatisfiable') {
      await handle.close();
      res.setHeader('Content-Range', `bytes */${size}`);
      return errorPage(res, 416);
    }
    if (r !== null) {
      [start, end] = r;
      status = 206;
      headers = [...headers, ['Content-Range', `bytes ${start}-${end}/${size}`]];
    }
  }
  const length = Math.max(end - start + 1, 0);
  await mimeReady();
  try {
    writeHead(res, status, headers, { length, type: contentType(file), modified: st.mtime });
  } catch (err) {
    await handle.close();
    log.warn('LS_BACKEND_PROTOCOL', `dev HTTP: unusable response header: ${(err as Error).message}`, { path: file });
    return errorPage(res, httpStatus.LS_BACKEND_PROTOCOL);
  }
  if (req.method === 'HEAD' || length === 0) {
    await handle.close();
    res.end();
    return;
  }
  const stream = handle.createReadStream({ start, end, autoClose: true });
  pipeline(stream, res, () => {
    // A client gone mid-file: pipeline has closed the descriptor; nothing else to do.
  });
}

/**
 * One `bytes=` range of a Range header as inclusive [start, end]; null to ignore it (several
 * ranges, other units, malformed: the whole file is sent, as RFC 9110 allows).
 */
export function parseRange(header: string, size: number): [number, number] | 'unsatisfiable' | null {
  const m = /^bytes=\s*(\d*)-(\d*)\s*$/.exec(header);
  if (m === null || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    return [Math.max(size - suffix, 0), size - 1];
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return null;
  if (start >= size) return 'unsatisfiable';
  return [start, end];
}

/** Status and headers in order (Set-Cookie may repeat); hop-by-hop headers are dropped. */
export function writeHead(
  res: http.ServerResponse,
  status: number,
  headers: ReadonlyArray<readonly [string, string]>,
  file: { length: number; type: string; modified: Date } | null,
): void {
  for (const [name, value] of headers) {
    const lower = name.toLowerCase();
    if (HOP_HEADERS.has(lower) || (file !== null && lower === 'content-length')) continue;
    res.appendHeader(name, value);
  }
  if (file !== null) {
    res.setHeader('Content-Length', file.length);
    if (!res.hasHeader('content-type')) res.setHeader('Content-Type', file.type);
    if (!res.hasHeader('last-modified')) res.setHeader('Last-Modified', file.modified.toUTCString());
    if (!res.hasHeader('accept-ranges')) res.setHeader('Accept-Ranges', 'bytes');
  }
  res.statusCode = status;
}

/** The standard error page; replaces headers set so far unless the response has started. */
export function errorPage(res: http.ServerResponse, status: number): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  for (const name of res.getHeaderNames()) if (name !== 'content-range' && name !== 'allow') res.removeHeader(name);
  const body = errorHtml(status);
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}
