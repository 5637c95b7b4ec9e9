/**
 * The built-in diagnostic responder: reports what it received and obeys a few commands in the
 * query string, in the spirit of lighttpd's tests/fcgi-responder.c. Tests and benchmarks use it
 * as a fixture; operators can use it to see what their web server sends (`--diagnostic`).
 *
 * RESPONDER commands (QUERY_STRING, `&`-separated):
 *   hello            body "123" (the benchmark page)
 *   status=N         respond with status N
 *   header=Name:Val  add a response header (repeatable)
 *   stderr=TEXT      write TEXT to FCGI_STDERR
 *   sleep=MS         wait MS milliseconds first (ends early when the request is aborted)
 *   size=N           body of N bytes ("0123456789" repeated)
 *   echo             body = the request body, verbatim
 *   flush            send the headers before waiting/producing the body (streaming)
 *   throw            the handler throws (the client gets a 500)
 * With no body command the body is a JSON report: role, pid of the answering process, request id, keep-conn, connection id,
 * the request's sequence number on its connection, params, and the body's length and SHA-256.
 *
 * AUTHORIZER: 403 when the HTTP_X_LODESTONE_DENY param is present, else 200 with
 * `Variable-LODESTONE_USER: diagnostic`.
 * FILTER: body = the DATA stream, with X-Stdin-Bytes and X-Data-Bytes headers.
 */
import { createHash } from 'node:crypto';
import type { Handler } from '../fastcgi/server/connection.js';
import type { Request } from '../fastcgi/server/request.js';
import type { Response } from '../fastcgi/server/response.js';

const HELLO = Buffer.from('123');

/** The diagnostic {@link Handler}. */
export const diagnostic: Handler = (req, res) => {
  if (req.role === 'AUTHORIZER') return authorize(req, res);
  if (req.role === 'FILTER') return filter(req, res);
  // The benchmark path: no parsing, no allocation beyond the response itself.
  if (req.param('QUERY_STRING') === 'hello') {
    res.setHeader('Content-Type', 'text/plain');
    res.end(HELLO);
    return;
  }
  return respond(req, res);
};

async function respond(req: Request, res: Response): Promise<void> {
  const query = new URLSearchParams(req.param('QUERY_STRING') ?? '');
  if (query.has('throw')) throw new Error('diagnostic responder asked to throw');
  const status = query.get('status');
  if (status !== null) res.status = Number(status);
  for (const header of query.getAll('header')) {
    const colon = header.indexOf(':');
    if (colon > 0) res.addHeader(header.slice(0, colon).trim(), header.slice(colon + 1).trim());
  }
  const stderr = query.get('stderr');
  if (stderr !== null) res.log(stderr);
  if (query.has('flush')) {
    res.setHeader('Content-Type', 'text/plain');
    res.flush();
  }
  const sleep = Number(query.get('sleep') ?? 0);
  if (sleep > 0) await delay(sleep, req.signal);
  if (req.aborted) return;

  const size = query.get('size');
  if (size !== null) {
    if (!res.headersSent) res.setHeader('Content-Type', 'text/plain');
    res.end(pattern(Number(size)));
    return;
  }
  const body = await req.readBody();
  if (query.has('echo')) {
    if (!res.headersSent) res.setHeader('Content-Type', 'application/octet-stream');
    res.end(body);
    return;
  }
  if (!res.headersSent) res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify(report(req, body)) + '\n');
}

function report(req: Request, body: Buffer): Record<string, unknown> {
  return {
    role: req.role,
    // Which process answered: under the process manager, which worker.
    pid: process.pid,
    requestId: req.id,
    keepConn: req.keepConn,
    connection: req.connection.id,
    sequence: req.sequence,
    params: req.params,
    stdinBytes: body.length,
    stdinSha256: createHash('sha256').update(body).digest('hex'),
  };
}

function authorize(req: Request, res: Response): void {
  if (req.param('HTTP_X_LODESTONE_DENY') !== undefined) {
    res.status = 403;
    res.setHeader('Content-Type', 'text/plain');
    res.end('denied\n');
    return;
  }
  res.setHeader('Variable-LODESTONE_USER', 'diagnostic');
  res.end();
}

async function filter(req: Request, res: Response): Promise<void> {
  const stdin = await req.readBody();
  const data = await req.data.bytes();
  res.setHeader('Content-Type', 'application/octet-stream');
  res.setHeader('X-Stdin-Bytes', stdin.length);
  res.setHeader('X-Data-Bytes', data.length);
  res.end(data);
}

function pattern(size: number): Buffer {
  const n = Number.isInteger(size) && size > 0 ? size : 0;
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) out[i] = 48 + (i % 10);
  return out;
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
