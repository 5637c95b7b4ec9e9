/**
 * The byte form of content-cache values, shared by the memory and Redis backends.
 *
 * A Buffer is stored as its raw bytes, so a PHP app, redis-cli and Lodestone read and write the
 * same keys, and INCRBY works on counters. A {@link CachedResponse} is stored as a record:
 *
 *     "\0LSR\1"  magic (5 bytes)
 *     u16        status
 *     f64        storedAt (ms since epoch)
 *     u16        header count, then per header: u16 name length, name, u32 value length, value
 *     u32        body length, then the body; the record ends exactly there
 *
 * All integers big-endian; header names and values are UTF-8. The lengths make a truncated or
 * corrupt record detectable ({@link CorruptRecordError}), so a reader treats it as a miss.
 *
 * Limitation: a raw value that happens to start with the magic bytes reads back as a response
 * record (usually a corrupt one, so a miss). Text and numbers never start with a NUL byte.
 */

/** A whole response, stored by a script to serve later without running the backend again. */
export interface CachedResponse {
  readonly status: number;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Buffer;
  /** When it was stored (ms since epoch), for the Age header. Set by the caller of set(). */
  readonly storedAt: number;
}

/** Strings travel as bytes (Lua strings are bytes; JS bindings encode UTF-8). */
export type CacheValue = Buffer | CachedResponse;

/** Thrown by incr() when the stored value is not an integer (or the result would overflow). */
export class CacheValueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CacheValueError';
  }
}

/** A stored response record that cannot be decoded; readers treat it as a miss and log it. */
export class CorruptRecordError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CorruptRecordError';
  }
}

/** The first bytes of every response record. */
export const RESPONSE_MAGIC: Buffer = Buffer.from('\0LSR\x01', 'latin1');

const FIXED_BYTES = RESPONSE_MAGIC.length + 2 + 8 + 2 + 4;
const MAX_HEADERS = 0xffff;

/**
 * The stored bytes of a value: a copy of a Buffer (the caller may reuse its own), or a response
 * record. Throws TypeError/RangeError on a value that is neither, or a response that cannot be
 * represented (status outside 0-65535, non-finite storedAt, too many or non-string headers).
 */
export function encodeValue(value: CacheValue): Buffer {
  if (Buffer.isBuffer(value)) return Buffer.from(value);
  if (typeof value !== 'object' || value === null || !Buffer.isBuffer(value.body) || !Array.isArray(value.headers)) {
    throw new TypeError('a cache value is a Buffer or a response { status, headers, body, storedAt }');
  }
  const { status, storedAt, body } = value;
  const headers: CachedResponse['headers'] = value.headers as CachedResponse['headers'];
  if (!Number.isInteger(status) || status < 0 || status > 0xffff) throw new RangeError(`bad cached status ${status}`);
  if (!Number.isFinite(storedAt)) throw new RangeError(`bad cached storedAt ${storedAt}`);
  if (headers.length > MAX_HEADERS) throw new RangeError(`a cached response has more than ${MAX_HEADERS} headers`);

  const encoded: Buffer[] = [];
  let size = FIXED_BYTES + body.length;
  for (const header of headers) {
    const [name, text] = header;
    if (typeof name !== 'string' || typeof text !== 'string') throw new TypeError('cached header names and values are strings');
    const nameBytes = Buffer.from(name, 'utf8');
    if (nameBytes.length > 0xffff) throw new RangeError('a cached header name is longer than 65535 bytes');
    const valueBytes = Buffer.from(text, 'utf8');
    encoded.push(nameBytes, valueBytes);
    size += 2 + nameBytes.length + 4 + valueBytes.length;
  }

  const out = Buffer.allocUnsafe(size);
  let at = RESPONSE_MAGIC.copy(out, 0);
  at = out.writeUInt16BE(status, at);
  at = out.writeDoubleBE(storedAt, at);
  at = out.writeUInt16BE(headers.length, at);
  for (let i = 0; i < encoded.length; i += 2) {
    const name = encoded[i]!;
    const text = encoded[i + 1]!;
    at = out.writeUInt16BE(name.length, at);
    at += name.copy(out, at);
    at = out.writeUInt32BE(text.length, at);
    at += text.copy(out, at);
  }
  at = out.writeUInt32BE(body.length, at);
  body.copy(out, at);
  return out;
}

/** True when stored bytes hold a response record rather than a raw value. */
export function isResponseRecord(bytes: Buffer): boolean {
  return bytes.length >= RESPONSE_MAGIC.length && bytes.compare(RESPONSE_MAGIC, 0, RESPONSE_MAGIC.length, 0, RESPONSE_MAGIC.length) === 0;
}

/**
 * The value stored as `bytes`. The result is a view of `bytes` (no copy): pass a buffer nobody
 * else writes to. Throws {@link CorruptRecordError} for a record that does not parse exactly.
 */
export function decodeValue(bytes: Buffer): CacheValue {
  if (!isResponseRecord(bytes)) return bytes;
  if (bytes.length < FIXED_BYTES) throw new CorruptRecordError(`a response record of ${bytes.length} bytes is truncated`);
  let at = RESPONSE_MAGIC.length;
  const status = bytes.readUInt16BE(at);
  const storedAt = bytes.readDoubleBE(at + 2);
  const count = bytes.readUInt16BE(at + 10);
  at += 12;
  const need = (n: number): void => {
    if (at + n > bytes.length) throw new CorruptRecordError(`a response record is truncated at byte ${at}`);
  };
  const headers: Array<readonly [string, string]> = [];
  for (let i = 0; i < count; i++) {
    need(2);
    const nameLength = bytes.readUInt16BE(at);
    at += 2;
    need(nameLength + 4);
    const name = bytes.toString('utf8', at, at + nameLength);
    at += nameLength;
    const valueLength = bytes.readUInt32BE(at);
    at += 4;
    need(valueLength);
    headers.push([name, bytes.toString('utf8', at, at + valueLength)]);
    at += valueLength;
  }
  need(4);
  const bodyLength = bytes.readUInt32BE(at);
  at += 4;
  if (at + bodyLength !== bytes.length) {
    throw new CorruptRecordError(`a response record says its body has ${bodyLength} bytes, ${bytes.length - at} follow`);
  }
  if (!Number.isFinite(storedAt)) throw new CorruptRecordError('a response record has a non-finite storedAt');
  return { status, storedAt, headers, body: bytes.subarray(at) };
}

/**
 * The integer a stored value spells, exactly as Redis's INCRBY accepts it (optional minus, no
 * leading zeros or spaces), or null. Limited to JS safe integers: beyond them arithmetic on a
 * number would silently round.
 */
export function parseStoredInteger(bytes: Buffer): number | null {
  if (bytes.length === 0 || bytes.length > 17) return null;
  const text = bytes.toString('latin1');
  if (!/^(?:0|-?[1-9][0-9]*)$/.test(text)) return null;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : null;
}

/** Milliseconds of a TTL in seconds, 0 for none; RangeError when it is negative or not finite. */
export function ttlMilliseconds(ttlSeconds: number): number {
  if (typeof ttlSeconds !== 'number' || !Number.isFinite(ttlSeconds) || ttlSeconds < 0) {
    throw new RangeError(`a cache TTL is a number of seconds >= 0, not ${String(ttlSeconds)}`);
  }
  // A positive TTL below 1 ms still expires, rather than meaning "forever".
  return ttlSeconds === 0 ? 0 : Math.max(1, Math.round(ttlSeconds * 1000));
}

/** RangeError unless `by` is a safe integer. */
export function checkIncrement(by: number): void {
  if (!Number.isSafeInteger(by)) throw new RangeError(`cache.incr adds an integer, not ${String(by)}`);
}
