/**
 * The client's bytes, without a socket: the records of a request as we write them, and where
 * the CGI header block of a response ends. Apart from the connection for the reason `records.ts`
 * stands alone: byte layout is tested by itself, and the connection keeps only the policy.
 */
import { FCGI_BEGIN_REQUEST, FCGI_KEEP_CONN, FCGI_PARAMS, FCGI_RESPONDER, FCGI_STDIN } from '../constants.js';
import { frameStream, framedLength, writeHeader, writeStream } from '../records.js';

/** php-fpm never multiplexes, and nginx always uses id 1: so do we. */
export const REQUEST_ID = 1;
/** A FCGI_STDERR record is logged as one line, cut at this many characters. */
const STDERR_LINE_CHARS = 1024;
const LF = 10;
const CR = 13;

/** Bytes of a whole request: BEGIN_REQUEST, both streams and their closing empty records. */
export function requestLength(paramsLength: number, bodyLength: number): number {
  return 16 + framedLength(paramsLength) + 8 + framedLength(bodyLength) + 8;
}

/** A whole request in one buffer of `total` ({@link requestLength}) bytes: one write. */
export function requestBuffer(total: number, params: Buffer, body: Buffer | null, keepConn: boolean): Buffer {
  const bodyLength = body?.length ?? 0;
  const out = Buffer.allocUnsafe(total);
  let pos = writeHead(out, params, keepConn);
  pos = writeStream(out, pos, FCGI_STDIN, REQUEST_ID, body ? [body] : [], bodyLength);
  writeHeader(out, pos, FCGI_STDIN, REQUEST_ID, 0, 0);
  return out;
}

/** A whole request as views of the caller's buffers, for one writev: several MB of body are not copied. */
export function requestParts(params: Buffer, body: Buffer | null, keepConn: boolean): Buffer[] {
  const parts: Buffer[] = [];
  const first = Buffer.allocUnsafe(16);
  writeBegin(first, keepConn);
  parts.push(first);
  frameStream(parts, FCGI_PARAMS, REQUEST_ID, [params], params.length);
  parts.push(emptyRecord(FCGI_PARAMS));
  if (body) frameStream(parts, FCGI_STDIN, REQUEST_ID, [body], body.length);
  parts.push(emptyRecord(FCGI_STDIN));
  return parts;
}

/** BEGIN_REQUEST and the PARAMS stream alone, for a body that is streamed after it. */
export function requestHead(params: Buffer, keepConn: boolean): Buffer {
  const out = Buffer.allocUnsafe(16 + framedLength(params.length) + 8);
  writeHead(out, params, keepConn);
  return out;
}

/** One chunk of a streamed body as STDIN records (views of `chunk`). */
export function stdinRecords(chunk: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  frameStream(parts, FCGI_STDIN, REQUEST_ID, [chunk], chunk.length);
  return parts;
}

/** The empty record that closes a stream of `type`. */
export function emptyRecord(type: number): Buffer {
  const out = Buffer.allocUnsafe(8);
  writeHeader(out, 0, type, REQUEST_ID, 0, 0);
  return out;
}

// BEGIN_REQUEST, the PARAMS stream and its closing empty record.
function writeHead(out: Buffer, params: Buffer, keepConn: boolean): number {
  let pos = writeBegin(out, keepConn);
  pos = writeStream(out, pos, FCGI_PARAMS, REQUEST_ID, [params], params.length);
  return writeHeader(out, pos, FCGI_PARAMS, REQUEST_ID, 0, 0);
}

function writeBegin(out: Buffer, keepConn: boolean): number {
  const pos = writeHeader(out, 0, FCGI_BEGIN_REQUEST, REQUEST_ID, 8, 0);
  out[pos] = FCGI_RESPONDER >> 8;
  out[pos + 1] = FCGI_RESPONDER & 0xff;
  out[pos + 2] = keepConn ? FCGI_KEEP_CONN : 0;
  out.fill(0, pos + 3, pos + 8);
  return pos + 8;
}

/**
 * Offset just after the blank line that ends a CGI header block (LF or CRLF line ends), looking
 * only at line feeds at or after `from`; -1 when there is none yet.
 */
export function blankLineEnd(buf: Buffer, from: number): number {
  let lf = buf.indexOf(LF, from);
  while (lf >= 0) {
    const prev = lf > 0 ? buf[lf - 1] : -1;
    if (lf === 0 || prev === LF || (prev === CR && (lf === 1 || buf[lf - 2] === LF))) return lf + 1;
    lf = buf.indexOf(LF, lf + 1);
  }
  return -1;
}

/** The bytes of a CGI header block that spans records, gathered in one buffer that grows. */
export interface HeadBytes {
  head: Buffer | null;
  headLength: number;
}

/** Appends `buf[start, end)` to the header bytes gathered in `into`; returns them all (a view). */
export function appendHead(into: HeadBytes, buf: Buffer, start: number, end: number): Buffer {
  const need = into.headLength + (end - start);
  if (into.head === null || into.head.length < need) {
    const grown = Buffer.allocUnsafe(Math.max(need, 2 * (into.head?.length ?? 0), 4096));
    into.head?.copy(grown, 0, 0, into.headLength);
    into.head = grown;
  }
  buf.copy(into.head, into.headLength, start, end);
  into.headLength = need;
  return into.head.subarray(0, need);
}

/** A FCGI_STDERR record's text as one log line: trimmed, and cut at STDERR_LINE_CHARS. */
export function stderrLine(buf: Buffer, start: number, end: number): string {
  const limit = Math.min(end, start + STDERR_LINE_CHARS * 4);
  const text = buf.toString('utf8', start, limit).trim();
  return text.length > STDERR_LINE_CHARS || limit < end ? text.slice(0, STDERR_LINE_CHARS) + '...' : text;
}
