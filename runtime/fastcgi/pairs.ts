/**
 * FastCGI name-value pairs (spec section 3.4): each length is one byte when under 128, else four
 * bytes with the high bit set. PARAMS and GET_VALUES carry them. The connection collects a whole
 * PARAMS stream before decoding, so a pair split across records at any byte needs no special
 * case here.
 */

/** Why a pair block could not be decoded. */
export type PairsError = 'malformed' | 'too-many';

/**
 * Decodes every pair in `buf` into `into` (a later duplicate name wins). Names are decoded as
 * latin1 (CGI variable names are ASCII), values as UTF-8. Stops with an error at a pair that runs
 * past the end, or after `maxPairs`.
 */
export function decodePairs(buf: Buffer, maxPairs: number, into: Record<string, string>): PairsError | null {
  let pos = 0;
  let count = 0;
  const end = buf.length;
  while (pos < end) {
    let nameLength = buf[pos]!;
    if (nameLength & 0x80) {
      if (pos + 4 > end) return 'malformed';
      nameLength = buf.readUInt32BE(pos) & 0x7fffffff;
      pos += 4;
    } else {
      pos += 1;
    }
    if (pos >= end) return 'malformed';
    let valueLength = buf[pos]!;
    if (valueLength & 0x80) {
      if (pos + 4 > end) return 'malformed';
      valueLength = buf.readUInt32BE(pos) & 0x7fffffff;
      pos += 4;
    } else {
      pos += 1;
    }
    if (nameLength > end - pos || valueLength > end - pos - nameLength) return 'malformed';
    if (++count > maxPairs) return 'too-many';
    const name = buf.toString('latin1', pos, pos + nameLength);
    pos += nameLength;
    const value = valueLength === 0 ? '' : buf.toString('utf8', pos, pos + valueLength);
    pos += valueLength;
    into[name] = value;
  }
  return null;
}

/**
 * Checks the structure of a pair block (every length inside the block, at most `maxPairs`
 * pairs) without decoding any string. Run once when PARAMS ends; decoding happens later, and
 * only for the params a handler asks for.
 */
export function scanPairs(buf: Buffer, maxPairs: number): PairsError | null {
  let pos = 0;
  let count = 0;
  const end = buf.length;
  while (pos < end) {
    const nameAt = readLength(buf, pos);
    if (nameAt < 0) return 'malformed';
    const valueAt = readLength(buf, nameAt);
    if (valueAt < 0) return 'malformed';
    const nameLength = lengthAt(buf, pos);
    const valueLength = lengthAt(buf, nameAt);
    if (nameLength > end - valueAt || valueLength > end - valueAt - nameLength) return 'malformed';
    if (++count > maxPairs) return 'too-many';
    pos = valueAt + nameLength + valueLength;
  }
  return null;
}

/**
 * The value of `name` in a block that passed {@link scanPairs}, or undefined; a later duplicate
 * wins, as in {@link decodePairs}. Compares bytes, so no other name or value becomes a string.
 */
export function findPair(buf: Buffer, name: string): string | undefined {
  let pos = 0;
  let found = -1;
  let foundLength = 0;
  const end = buf.length;
  const wanted = name.length;
  while (pos < end) {
    const nameLength = lengthAt(buf, pos);
    const valueAt0 = readLength(buf, pos);
    const valueLength = lengthAt(buf, valueAt0);
    const nameAt = readLength(buf, valueAt0);
    const valueAt = nameAt + nameLength;
    if (nameLength === wanted) {
      let i = 0;
      while (i < wanted && buf[nameAt + i] === name.charCodeAt(i)) i++;
      if (i === wanted) {
        found = valueAt;
        foundLength = valueLength;
      }
    }
    pos = valueAt + valueLength;
  }
  if (found < 0) return undefined;
  return foundLength === 0 ? '' : buf.toString('utf8', found, found + foundLength);
}

// The offset after the length field at `pos`, or -1 when it does not fit.
function readLength(buf: Buffer, pos: number): number {
  if (pos >= buf.length) return -1;
  if (buf[pos]! & 0x80) return pos + 4 <= buf.length ? pos + 4 : -1;
  return pos + 1;
}

// The length stored at `pos` (checked by readLength first).
function lengthAt(buf: Buffer, pos: number): number {
  const b = buf[pos]!;
  return b & 0x80 ? buf.readUInt32BE(pos) & 0x7fffffff : b;
}

function lengthSize(length: number): number {
  return length < 128 ? 1 : 4;
}

function writeLength(buf: Buffer, pos: number, length: number): number {
  if (length < 128) {
    buf[pos] = length;
    return pos + 1;
  }
  buf.writeUInt32BE((length | 0x80000000) >>> 0, pos);
  return pos + 4;
}

/** Encodes pairs (values as UTF-8) into one buffer, to be framed as PARAMS or GET_VALUES_RESULT. */
export function encodePairs(pairs: Iterable<readonly [string, string]>): Buffer {
  const encoded: Array<[Buffer, Buffer]> = [];
  let size = 0;
  for (const [name, value] of pairs) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'utf8');
    encoded.push([n, v]);
    size += lengthSize(n.length) + lengthSize(v.length) + n.length + v.length;
  }
  const out = Buffer.allocUnsafe(size);
  let pos = 0;
  for (const [n, v] of encoded) {
    pos = writeLength(out, pos, n.length);
    pos = writeLength(out, pos, v.length);
    pos += n.copy(out, pos);
    pos += v.copy(out, pos);
  }
  return out;
}
