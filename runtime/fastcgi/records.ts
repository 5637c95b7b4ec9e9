/**
 * The FastCGI record codec: bytes in any chunking -> records, records -> bytes. Pure: no sockets,
 * no timers, no policy. Limits and meaning live in `connection.ts`, as in undici's parser/client
 * split; this file only knows the 8-byte header, content and padding.
 */
import {
  FCGI_END_REQUEST,
  FCGI_HEADER_LEN,
  FCGI_UNKNOWN_TYPE,
  FCGI_VERSION_1,
  MAX_RECORD_CONTENT,
} from './constants.js';

/**
 * Receives each complete record. The content is `buf[start, end)`: a window into the caller's
 * chunk when the record lies inside one chunk, else an assembled copy. The window is only valid
 * during the call; a consumer that keeps bytes takes a view (`subarray`) or a copy. Passing a
 * window instead of a view saves an object per record on the hot path.
 */
export type RecordCallback = (type: number, requestId: number, buf: Buffer, start: number, end: number) => void;

/** Why the byte stream cannot be parsed any further. */
export interface ParseError {
  readonly reason: 'version';
  readonly version: number;
}

const S_HEADER = 0;
const S_CONTENT = 1;
const S_PADDING = 2;
const S_DEAD = 3;

const EMPTY = Buffer.alloc(0);

/**
 * Incremental record parser, fed with whatever chunks the socket delivers. A record that lies
 * inside one chunk is handed over as a window into it, without copying; only records split
 * across chunks are copied. After a fatal error, or after {@link stop}, further input is ignored.
 *
 * @example
 *   const parser = new RecordParser((type, id, buf, start, end) => console.log(type, id, end - start));
 *   const err = parser.push(chunk); // null, or why the stream is unusable
 */
export class RecordParser {
  private state = S_HEADER;
  // A header split across reads, made on first need: most connections never split one, and a
  // Buffer of its own (an ArrayBuffer each) is the costliest thing a parser would allocate.
  private header: Buffer | null = null;
  private headerFill = 0;
  private type = 0;
  private requestId = 0;
  private contentLength = 0;
  private paddingLength = 0;
  private content: Buffer = EMPTY;
  private contentFill = 0;
  private paddingLeft = 0;

  constructor(private readonly onRecord: RecordCallback) {}

  /** Stops parsing, even in the middle of a chunk (the callback may call this). */
  stop(): void {
    this.state = S_DEAD;
  }

  /** True while bytes of a record have been received but the record is not complete. */
  get midRecord(): boolean {
    return this.state !== S_DEAD && (this.state !== S_HEADER || this.headerFill > 0);
  }

  /** Feeds bytes; returns null, or a {@link ParseError} after which the parser is dead. */
  push(chunk: Buffer): ParseError | null {
    let pos = 0;
    const end = chunk.length;
    while (pos < end) {
      switch (this.state) {
        case S_HEADER: {
          if (this.headerFill === 0 && end - pos >= FCGI_HEADER_LEN) {
            const err = this.readHeader(chunk, pos);
            pos += FCGI_HEADER_LEN;
            if (err) return err;
          } else {
            const n = Math.min(FCGI_HEADER_LEN - this.headerFill, end - pos);
            const header = (this.header ??= Buffer.alloc(FCGI_HEADER_LEN));
            chunk.copy(header, this.headerFill, pos, pos + n);
            this.headerFill += n;
            pos += n;
            if (this.headerFill < FCGI_HEADER_LEN) return null;
            this.headerFill = 0;
            const err = this.readHeader(header, 0);
            if (err) return err;
          }
          if (this.contentLength === 0) this.emit(EMPTY, 0, 0);
          break;
        }
        case S_CONTENT: {
          if (this.contentFill === 0 && end - pos >= this.contentLength) {
            const start = pos;
            pos += this.contentLength;
            this.emit(chunk, start, pos);
          } else {
            if (this.contentFill === 0) this.content = Buffer.allocUnsafe(this.contentLength);
            const n = Math.min(this.contentLength - this.contentFill, end - pos);
            chunk.copy(this.content, this.contentFill, pos, pos + n);
            this.contentFill += n;
            pos += n;
            if (this.contentFill < this.contentLength) return null;
            const content = this.content;
            this.content = EMPTY;
            this.contentFill = 0;
            this.emit(content, 0, content.length);
          }
          break;
        }
        case S_PADDING: {
          const n = Math.min(this.paddingLeft, end - pos);
          pos += n;
          this.paddingLeft -= n;
          if (this.paddingLeft === 0) this.state = S_HEADER;
          break;
        }
        default:
          return null;
      }
    }
    return null;
  }

  private readHeader(buf: Buffer, at: number): ParseError | null {
    const version = buf[at]!;
    if (version !== FCGI_VERSION_1) {
      this.state = S_DEAD;
      return { reason: 'version', version };
    }
    this.type = buf[at + 1]!;
    this.requestId = (buf[at + 2]! << 8) | buf[at + 3]!;
    this.contentLength = (buf[at + 4]! << 8) | buf[at + 5]!;
    this.paddingLength = buf[at + 6]!;
    this.state = S_CONTENT;
    return null;
  }

  // Padding is skipped after the callback; a callback that stops the parser wins.
  private emit(buf: Buffer, start: number, end: number): void {
    this.paddingLeft = this.paddingLength;
    this.state = this.paddingLength > 0 ? S_PADDING : S_HEADER;
    this.onRecord(this.type, this.requestId, buf, start, end);
  }
}

/** Padding that brings `length` bytes of content to a multiple of 8. */
export function paddingFor(length: number): number {
  return (8 - (length & 7)) & 7;
}

/** Writes an 8-byte record header at `offset`; returns the offset after it. */
export function writeHeader(
  buf: Buffer,
  offset: number,
  type: number,
  requestId: number,
  contentLength: number,
  paddingLength: number,
): number {
  buf[offset] = FCGI_VERSION_1;
  buf[offset + 1] = type;
  buf[offset + 2] = requestId >> 8;
  buf[offset + 3] = requestId & 0xff;
  buf[offset + 4] = contentLength >> 8;
  buf[offset + 5] = contentLength & 0xff;
  buf[offset + 6] = paddingLength;
  buf[offset + 7] = 0;
  return offset + FCGI_HEADER_LEN;
}

/** One record, padded to 8 bytes. `content` must fit in one record (<= 65535 bytes). */
export function encodeRecord(type: number, requestId: number, content: Buffer = EMPTY): Buffer {
  if (content.length > 65535) throw new RangeError('record content over 65535 bytes');
  const padding = paddingFor(content.length);
  const out = Buffer.alloc(FCGI_HEADER_LEN + content.length + padding);
  writeHeader(out, 0, type, requestId, content.length, padding);
  content.copy(out, FCGI_HEADER_LEN);
  return out;
}

/** The 16-byte END_REQUEST record. */
export function encodeEndRequest(requestId: number, appStatus: number, protocolStatus: number): Buffer {
  const out = Buffer.alloc(16);
  writeEndRequest(out, 0, requestId, appStatus, protocolStatus);
  return out;
}

/** Writes END_REQUEST (16 bytes) at `offset`; returns the offset after it. */
export function writeEndRequest(
  buf: Buffer,
  offset: number,
  requestId: number,
  appStatus: number,
  protocolStatus: number,
): number {
  writeHeader(buf, offset, FCGI_END_REQUEST, requestId, 8, 0);
  buf.writeUInt32BE(appStatus >>> 0, offset + 8);
  buf[offset + 12] = protocolStatus;
  buf[offset + 13] = 0;
  buf[offset + 14] = 0;
  buf[offset + 15] = 0;
  return offset + 16;
}

/** The UNKNOWN_TYPE management record answering a record type we do not know. */
export function encodeUnknownType(type: number): Buffer {
  const body = Buffer.alloc(8);
  body[0] = type;
  return encodeRecord(FCGI_UNKNOWN_TYPE, 0, body);
}

/** Bytes needed to frame `length` bytes as a stream of records (without the closing empty one). */
export function framedLength(length: number): number {
  if (length === 0) return 0;
  const full = Math.floor(length / MAX_RECORD_CONTENT);
  const rest = length - full * MAX_RECORD_CONTENT;
  let size = full * (FCGI_HEADER_LEN + MAX_RECORD_CONTENT);
  if (rest > 0) size += FCGI_HEADER_LEN + rest + paddingFor(rest);
  return size;
}

/**
 * Frames the bytes of `parts` (a logical stream) as records of `type` into `out` at `offset`,
 * copying once. `length` is the parts' total byte length. Returns the offset after the last
 * record. Strings are written as UTF-8 straight into `out`, without an intermediate Buffer.
 */
export function writeStream(
  out: Buffer,
  offset: number,
  type: number,
  requestId: number,
  parts: ReadonlyArray<Buffer | string>,
  length: number,
): number {
  let left = length;
  let partIndex = 0;
  let partOffset = 0;
  let converted: Buffer | null = null;
  while (left > 0) {
    const contentLength = Math.min(left, MAX_RECORD_CONTENT);
    const padding = paddingFor(contentLength);
    offset = writeHeader(out, offset, type, requestId, contentLength, padding);
    let need = contentLength;
    while (need > 0) {
      const raw = parts[partIndex]!;
      if (typeof raw === 'string' && converted === null) {
        if (partOffset === 0 && Buffer.byteLength(raw) <= need) {
          const n = out.write(raw, offset, 'utf8');
          offset += n;
          need -= n;
          partIndex++;
          continue;
        }
        // A string that straddles a record boundary is converted once so it can be split at
        // a byte offset.
        converted = Buffer.from(raw, 'utf8');
      }
      const part = converted ?? (raw as Buffer);
      const n = Math.min(part.length - partOffset, need);
      part.copy(out, offset, partOffset, partOffset + n);
      offset += n;
      need -= n;
      partOffset += n;
      if (partOffset === part.length) {
        partIndex++;
        partOffset = 0;
        converted = null;
      }
    }
    for (let i = 0; i < padding; i++) out[offset++] = 0;
    left -= contentLength;
  }
  return offset;
}

/**
 * Frames a large stream without copying its bytes: pushes record headers and views of `parts`
 * onto `out`, to be written with one corked writev. Used where copying would cost more than
 * the extra iovecs.
 */
export function frameStream(
  out: Buffer[],
  type: number,
  requestId: number,
  parts: ReadonlyArray<Buffer>,
  length: number,
): void {
  let left = length;
  let partIndex = 0;
  let partOffset = 0;
  while (left > 0) {
    const contentLength = Math.min(left, MAX_RECORD_CONTENT);
    const padding = paddingFor(contentLength);
    const header = Buffer.allocUnsafe(FCGI_HEADER_LEN);
    writeHeader(header, 0, type, requestId, contentLength, padding);
    out.push(header);
    let need = contentLength;
    while (need > 0) {
      const part = parts[partIndex]!;
      const n = Math.min(part.length - partOffset, need);
      out.push(partOffset === 0 && n === part.length ? part : part.subarray(partOffset, partOffset + n));
      need -= n;
      partOffset += n;
      if (partOffset === part.length) {
        partIndex++;
        partOffset = 0;
      }
    }
    if (padding > 0) out.push(Buffer.alloc(padding));
    left -= contentLength;
  }
}
