/**
 * The request view: what a script reads of its request (method, URI, path, query, headers,
 * client address, body), from the FastCGI params the web server sent. Read-only and lazy (the
 * query and headers are built on first use, the body read on first ask), which is why it is
 * apart from the output side: nothing here changes the response or ends the run.
 */
import type { HostCore } from './core.js';

/** REQUEST_METHOD. */
export function method(host: HostCore): string {
  return host.request.param('REQUEST_METHOD') ?? 'GET';
}

/** REQUEST_URI as the client sent it (path and query, not decoded). */
export function uri(host: HostCore): string {
  return host.request.param('REQUEST_URI') ?? '';
}

/** The decoded path of the URI, without the query string. */
export function path(host: HostCore): string {
  const full = uri(host);
  const q = full.indexOf('?');
  const raw = q < 0 ? full : full.slice(0, q);
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** QUERY_STRING, not decoded. */
export function queryString(host: HostCore): string {
  return host.request.param('QUERY_STRING') ?? '';
}

/** The decoded query arguments; for a repeated name the last value wins (as in PHP's $_GET). */
export function query(host: HostCore): Readonly<Record<string, string>> {
  if (!host.queryCache) {
    const out = Object.create(null) as Record<string, string>;
    for (const [name, value] of new URLSearchParams(queryString(host))) out[name] = value;
    host.queryCache = out;
  }
  return host.queryCache;
}

/** Request headers with lower-case names, from the HTTP_* params and CONTENT_TYPE/LENGTH. */
export function headers(host: HostCore): Readonly<Record<string, string>> {
  if (!host.headerCache) {
    const out = Object.create(null) as Record<string, string>;
    const params = host.request.params;
    for (const name in params) {
      if (name.startsWith('HTTP_')) out[name.slice(5).toLowerCase().replaceAll('_', '-')] = params[name]!;
    }
    if (params.CONTENT_TYPE) out['content-type'] = params.CONTENT_TYPE;
    if (params.CONTENT_LENGTH) out['content-length'] = params.CONTENT_LENGTH;
    host.headerCache = out;
  }
  return host.headerCache;
}

/** REMOTE_ADDR: the client's address as the web server saw it. */
export function remoteAddr(host: HostCore): string {
  return host.request.param('REMOTE_ADDR') ?? '';
}

/** The request body, read on demand (once; pass() reuses it); rejects when the run is stopped. */
export function body(host: HostCore): Promise<Buffer> {
  return host.guard(bodyBytes(host), 'request.body()');
}

/** The body is read once: pass() forwards the bytes request.body() gave, or reads them itself. */
export function bodyBytes(host: HostCore): Promise<Buffer> {
  return (host.bodyRead ??= host.request.readBody());
}
