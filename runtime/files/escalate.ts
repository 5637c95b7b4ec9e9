/**
 * Escalation: handing the delivery of a file back to the web server with a response header
 * (X-Sendfile for Apache's mod_xsendfile and lighttpd, X-Sendfile2 for a byte range on lighttpd,
 * X-Accel-Redirect for nginx), plus the Content-Disposition for downloads. Pure functions: the
 * caller has already confined and stat'ed the path.
 *
 * Every header value carries the path percent-encoded: lighttpd and mod_xsendfile URL-decode
 * X-Sendfile, X-Sendfile2 splits on spaces and commas, and nginx treats '?' in X-Accel-Redirect
 * as the start of a query string. Encoding everything but the unreserved characters and '/'
 * makes any file name survive all three.
 */
import { LodestoneError } from '../errors.js';
import type { SendfileMode } from './files-config.js';

// How a file is handed to the web server ('auto' decides per request from SERVER_SOFTWARE): the
// modes are the config's (files-config.ts), so that loading the config loads none of this file.
export { sendfileModes, type SendfileMode } from './files-config.js';

/** A mode that names one header. */
export type ConcreteMode = Exclude<SendfileMode, 'auto'>;

/** nginx X-Accel-Redirect mapping: [filesystem root, internal URI prefix]. */
export type AccelMap = ReadonlyArray<readonly [string, string]>;

/**
 * The concrete mode: `configured` unless it is 'auto', else from SERVER_SOFTWARE (`nginx/*` ->
 * x-accel-redirect; lighttpd, Apache and anything unknown -> x-sendfile).
 *
 * @example
 *   pickMode('auto', 'nginx/1.22.1');      // 'x-accel-redirect'
 *   pickMode('auto', 'lighttpd/1.4.69');   // 'x-sendfile'
 *   pickMode('x-sendfile2', 'nginx/1.22'); // 'x-sendfile2' (configuration wins)
 */
export function pickMode(configured: SendfileMode, serverSoftware: string | undefined): ConcreteMode {
  if (configured !== 'auto') return configured;
  // nginx has no X-Sendfile; everyone else that escalates at all (lighttpd, mod_xsendfile)
  // understands X-Sendfile, so it is also the guess for a server we do not recognise.
  return /^nginx(\/|$)/i.test(serverSoftware ?? '') ? 'x-accel-redirect' : 'x-sendfile';
}

/** '%XX' for every byte, uppercase as RFC 3986 recommends. */
const PCT = Array.from({ length: 256 }, (_, b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`);
const PATH_SAFE = /^[A-Za-z0-9\-._~/]*$/;
const ATTR_SAFE = /^[A-Za-z0-9\-._~]*$/;

function isUnreserved(b: number): boolean {
  return (
    (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39) || b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e
  );
}

/** Percent-encodes the UTF-8 bytes of `s`, keeping the unreserved characters (and '/' when asked). */
function percentEncode(s: string, keepSlash: boolean): string {
  if ((keepSlash ? PATH_SAFE : ATTR_SAFE).test(s)) return s;
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    out += isUnreserved(b) || (keepSlash && b === 0x2f) ? String.fromCharCode(b) : PCT[b]!;
  }
  return out;
}

/**
 * Percent-encodes a path for an escalation header: every UTF-8 byte except `A-Z a-z 0-9 - . _ ~`
 * and `/`, so '%', ',', '?', '#', space and non-ASCII are encoded. `decodeURIComponent` gives the
 * path back.
 *
 * @example
 *   encodePath('/srv/files/a b,c%.txt'); // '/srv/files/a%20b%2Cc%25.txt'
 */
export function encodePath(path: string): string {
  return percentEncode(path, true);
}

/** A configured path or prefix without trailing slashes ('/' becomes ''). */
function trimSlashes(s: string): string {
  let end = s.length;
  while (end > 0 && s.charCodeAt(end - 1) === 0x2f) end--;
  return s.slice(0, end);
}

/**
 * The internal URI nginx should serve `realPath` from: the longest filesystem root in `accel`
 * that contains it (on a segment boundary) is replaced by its URI prefix, and the rest of the path
 * is encoded with {@link encodePath}; null when no root contains it. Trailing slashes in either
 * side of the mapping are ignored; the URI prefix is used as configured (it is a URI already).
 *
 * @example
 *   accelUri('/srv/files/a b.pdf', [['/srv/files', '/protected']]); // '/protected/a%20b.pdf'
 *   accelUri('/srv/files2/x', [['/srv/files', '/protected']]);      // null
 */
export function accelUri(realPath: string, accel: AccelMap): string | null {
  let bestRoot = -1;
  let bestPrefix = '';
  for (const [fsRoot, uriPrefix] of accel) {
    const root = trimSlashes(fsRoot);
    if (root.length <= bestRoot) continue;
    // root '' (configured as '/') contains every absolute path.
    if (realPath === root || realPath.startsWith(`${root}/`)) {
      bestRoot = root.length;
      bestPrefix = uriPrefix;
    }
  }
  if (bestRoot < 0) return null;
  const uri = trimSlashes(bestPrefix) + encodePath(realPath.slice(bestRoot));
  return uri === '' ? '/' : uri;
}

/**
 * The header that hands `realPath` to the web server. `range` is inclusive `[start, end]`; only
 * x-sendfile2 carries one (`<encoded path> <start>-<end>`), and x-sendfile2 without a range sends
 * `<encoded path> 0-` (lighttpd reads an open end as "to the end of the file").
 *
 * Throws on a range with x-sendfile, x-lighttpd-send-file or x-accel-redirect (the caller sends
 * those bytes itself), on a malformed range, and with LS_SENDFILE_NO_MAPPING when x-accel-redirect
 * finds no `accel` entry for the path.
 *
 * @example
 *   escalationHeader('x-sendfile2', '/srv/files/v.mp4', [0, 1023], []);
 *   // { name: 'X-Sendfile2', value: '/srv/files/v.mp4 0-1023' }
 */
export function escalationHeader(
  mode: ConcreteMode,
  realPath: string,
  range: readonly [number, number] | null | undefined,
  accel: AccelMap,
): { name: string; value: string } {
  if (range) checkRange(range);
  if (mode === 'x-sendfile2') {
    return { name: 'X-Sendfile2', value: `${encodePath(realPath)} ${range ? `${range[0]}-${range[1]}` : '0-'}` };
  }
  if (range) throw new Error(`${mode} cannot carry a byte range; send the bytes instead`);
  switch (mode) {
    case 'x-sendfile':
      return { name: 'X-Sendfile', value: encodePath(realPath) };
    case 'x-lighttpd-send-file':
      return { name: 'X-LIGHTTPD-send-file', value: encodePath(realPath) };
    case 'x-accel-redirect': {
      const uri = accelUri(realPath, accel);
      if (uri === null) throw new LodestoneError('LS_SENDFILE_NO_MAPPING', `no files.accel entry covers ${realPath}`);
      return { name: 'X-Accel-Redirect', value: uri };
    }
    default:
      throw new Error(`unknown sendfile mode ${String(mode satisfies never)}`);
  }
}

function checkRange([start, end]: readonly [number, number]): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw new RangeError(`bad byte range ${start}-${end}`);
  }
}

/**
 * `Content-Disposition: attachment` for a download named `filename` (RFC 6266, RFC 5987): an ASCII
 * `filename` for old clients (accents dropped, other non-ASCII and control characters as '_',
 * quotes and backslashes escaped) and the exact name as UTF-8 in `filename*`.
 *
 * @example
 *   contentDisposition('résumé "final".pdf');
 *   // 'attachment; filename="resume \"final\".pdf"; filename*=UTF-8\'\'r%C3%A9sum%C3%A9%20%22final%22.pdf'
 */
export function contentDisposition(filename: string): string {
  const fallback = filename
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    // Control characters included: a CR or LF here would start a new header line.
    .replace(/[^\x20-\x7e]/gu, '_')
    .replace(/["\\]/g, '\\$&');
  return `attachment; filename="${fallback}"; filename*=UTF-8''${percentEncode(filename, false)}`;
}
