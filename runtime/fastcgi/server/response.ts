/**
 * The engine-neutral response: status, headers and body chunks, encoded as a CGI response in
 * FCGI_STDOUT records. Output is buffered and framed in one pass at {@link Response.end}, so a
 * typical response leaves in a single socket write together with its END_REQUEST record.
 */
import { STATUS_CODES } from 'node:http';
import { FCGI_HEADER_LEN, FCGI_REQUEST_COMPLETE, FCGI_STDERR, FCGI_STDOUT } from '../constants.js';
import { frameStream, framedLength, writeEndRequest, writeHeader, writeStream } from '../records.js';

/** Where a response's framed bytes go; implemented by the connection. */
export interface ResponseChannel {
  readonly requestId: number;
  /** False once the request is gone; output is then dropped without being encoded. */
  readonly open: boolean;
  /**
   * Writes framed records. `last` means the bytes end with END_REQUEST and the request is over.
   * Returns false when the request is gone (aborted, connection closed): the bytes were dropped.
   */
  send(data: Buffer | Buffer[], last: boolean): boolean;
  /** Resolves once the peer has taken what was sent (the socket drained) or is gone. */
  drain?(): Promise<void>;
}

// Responses up to this size are copied into one buffer; larger ones go out as a corked writev
// of record headers and views of the body, because copying them would cost more than iovecs.
const COPY_LIMIT = 256 * 1024;
// Below COPY_LIMIT, a body over VIEWS_MIN_BYTES made of parts of VIEWS_MIN_PART bytes on average
// (a relayed backend's records, ~8 KiB each from PHP-FPM) also goes out as views: copying a
// relayed 100 KiB page cost ~15% more CPU per request than the writev (relay load straight at
// Lodestone, 3 rounds: 321 -> 255 us median). A script's many small prints are still copied:
// each would be a Buffer and an iovec of its own.
const VIEWS_MIN_BYTES = 16 * 1024;
const VIEWS_MIN_PART = 4 * 1024;

/** What a header name must match (an HTTP token); the JS sandbox checks names with it too. */
export const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Names already checked against TOKEN: handlers set the same few headers on every request.
const validNames = new Set<string>();
const BAD_VALUE = /[\r\n\0]/;

const statusLines: string[] = [];
for (const code of Object.keys(STATUS_CODES)) {
  statusLines[Number(code)] = `Status: ${code} ${STATUS_CODES[code]}\r\n`;
}

/**
 * Throws a TypeError unless `name` is an HTTP token and `value` holds no CR, LF or NUL (which
 * would split or end the CGI header block). Also for headers stored to be sent later (the cache).
 */
export function checkHeader(name: string, value: string): void {
  if (!validNames.has(name)) {
    if (!TOKEN.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
    if (validNames.size < 1024) validNames.add(name);
  }
  if (BAD_VALUE.test(value)) throw new TypeError(`invalid value for header ${name}: CR, LF or NUL`);
}

/**
 * A CGI response built by a handler.
 *
 * @example
 *   res.status = 404;
 *   res.setHeader('Content-Type', 'text/plain');
 *   res.end('not here\n');
 */
export class Response {
  /** HTTP status sent in the CGI `Status:` header. */
  status = 200;
  /** True once the header block has been sent (by flush or end). */
  headersSent = false;
  /** True once END_REQUEST has been sent or the request went away. */
  finished = false;
  /** Body bytes written through this response (the access log's size; streamed relays not counted). */
  bodyBytes = 0;
  private headerList: string[] = [];
  private out: Array<Buffer | string> = [];
  private outLength = 0;
  private err: Array<Buffer | string> | null = null;
  private errLength = 0;
  private stderrUsed = false;

  constructor(private readonly channel: ResponseChannel) {}

  /** Sets a header, replacing any of the same name (case-insensitive). */
  setHeader(name: string, value: string | number): this {
    this.removeHeader(name);
    return this.addHeader(name, value);
  }

  /** Adds a header line, keeping earlier ones of the same name (Set-Cookie). */
  addHeader(name: string, value: string | number): this {
    const text = String(value);
    checkHeader(name, text);
    if (this.headersSent) throw new Error(`header ${name} set after the headers were sent`);
    this.headerList.push(name, text);
    return this;
  }

  /** The first value of a header, or undefined. */
  getHeader(name: string): string | undefined {
    const lower = name.toLowerCase();
    for (let i = 0; i < this.headerList.length; i += 2) {
      if (this.headerList[i]!.toLowerCase() === lower) return this.headerList[i + 1];
    }
    return undefined;
  }

  /** Removes every header of that name. */
  removeHeader(name: string): void {
    const lower = name.toLowerCase();
    for (let i = this.headerList.length - 2; i >= 0; i -= 2) {
      if (this.headerList[i]!.toLowerCase() === lower) this.headerList.splice(i, 2);
    }
  }

  /** Appends to the body. Strings are sent as UTF-8. */
  write(chunk: string | Uint8Array): void {
    if (this.finished) return;
    if (typeof chunk === 'string') {
      if (chunk.length === 0) return;
      this.out.push(chunk);
      const n = Buffer.byteLength(chunk);
      this.outLength += n;
      this.bodyBytes += n;
    } else {
      if (chunk.length === 0) return;
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
      this.out.push(buf);
      this.outLength += buf.length;
      this.bodyBytes += buf.length;
    }
  }

  /** Sends a line on FCGI_STDERR, which the web server writes to its error log. */
  log(line: string): void {
    if (this.finished) return;
    const text = line.endsWith('\n') ? line : line + '\n';
    (this.err ??= []).push(text);
    this.errLength += Buffer.byteLength(text);
  }

  /** Discards buffered headers and body (not yet sent) so an error page can replace them. */
  reset(): void {
    if (this.headersSent) return;
    this.headerList = [];
    this.out = [];
    this.outLength = 0;
  }

  /** Discards the buffered body but keeps status and headers (a sendfile() replaces the body). */
  resetBody(): void {
    if (this.headersSent) return;
    this.out = [];
    this.outLength = 0;
  }

  /** Sends the headers and the body so far, for streaming; later writes follow. */
  flush(): void {
    if (this.finished) return;
    if (this.headersSent && this.outLength === 0 && this.errLength === 0) return;
    this.send(false);
  }

  /**
   * Resolves when what was flushed has left for the peer (or the request is gone): a large
   * streamed body waits here between chunks instead of piling up in the socket's buffer.
   */
  drain(): Promise<void> {
    return this.finished || !this.channel.drain ? Promise.resolve() : this.channel.drain();
  }

  /** Appends `chunk`, then sends everything left and ends the request. */
  end(chunk?: string | Uint8Array): void {
    if (this.finished) return;
    if (chunk !== undefined) this.write(chunk);
    this.send(true);
  }

  private head(): string {
    let head = statusLines[this.status] ?? `Status: ${this.status} Unknown\r\n`;
    const list = this.headerList;
    for (let i = 0; i < list.length; i += 2) head += list[i] + ': ' + list[i + 1] + '\r\n';
    return head + '\r\n';
  }

  private send(last: boolean): void {
    if (!this.channel.open) {
      this.finished = true;
      return;
    }
    if (!this.headersSent) {
      if (!Number.isInteger(this.status) || this.status < 100 || this.status > 999) {
        throw new RangeError(`invalid status ${String(this.status)}`);
      }
      const head = this.head();
      this.out.unshift(head);
      this.outLength += Buffer.byteLength(head);
      this.headersSent = true;
    }
    const id = this.channel.requestId;
    const err = this.err;
    const errLength = this.errLength;
    if (err) this.stderrUsed = true;
    let total = framedLength(this.outLength) + framedLength(errLength);
    if (last) total += FCGI_HEADER_LEN + (this.stderrUsed ? FCGI_HEADER_LEN : 0) + 16;

    let data: Buffer | Buffer[];
    const views = total > COPY_LIMIT || (total > VIEWS_MIN_BYTES && this.outLength >= this.out.length * VIEWS_MIN_PART);
    if (!views) {
      const buf = Buffer.allocUnsafe(total);
      let at = 0;
      if (err) at = writeStream(buf, at, FCGI_STDERR, id, err, errLength);
      at = writeStream(buf, at, FCGI_STDOUT, id, this.out, this.outLength);
      if (last) {
        at = writeHeader(buf, at, FCGI_STDOUT, id, 0, 0);
        if (this.stderrUsed) at = writeHeader(buf, at, FCGI_STDERR, id, 0, 0);
        writeEndRequest(buf, at, id, 0, FCGI_REQUEST_COMPLETE);
      }
      data = buf;
    } else {
      data = [];
      if (err) frameStream(data, FCGI_STDERR, id, toBuffers(err), errLength);
      frameStream(data, FCGI_STDOUT, id, toBuffers(this.out), this.outLength);
      if (last) {
        const tail = Buffer.allocUnsafe(FCGI_HEADER_LEN * (this.stderrUsed ? 2 : 1) + 16);
        let at = writeHeader(tail, 0, FCGI_STDOUT, id, 0, 0);
        if (this.stderrUsed) at = writeHeader(tail, at, FCGI_STDERR, id, 0, 0);
        writeEndRequest(tail, at, id, 0, FCGI_REQUEST_COMPLETE);
        data.push(tail);
      }
    }
    this.out = [];
    this.outLength = 0;
    this.err = null;
    this.errLength = 0;
    if (last) this.finished = true;
    if (!this.channel.send(data, last)) this.finished = true;
  }
}

function toBuffers(parts: Array<Buffer | string>): Buffer[] {
  return parts.map((part) => (typeof part === 'string' ? Buffer.from(part, 'utf8') : part));
}
