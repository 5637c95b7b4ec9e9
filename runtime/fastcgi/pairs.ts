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
    let nameLength = buf[pos]!;
    if (nameLength & 0x80) {
      if (pos + 4 > end) return 'malformed';
      nameLength = ((nameLength & 0x7f) << 24) | (buf[pos + 1]! << 16) | (buf[pos + 2]! << 8) | buf[pos + 3]!;
      pos += 4;
    } else {
      pos += 1;
    }
    if (pos >= end) return 'malformed';
    let valueLength = buf[pos]!;
    if (valueLength & 0x80) {
      if (pos + 4 > end) return 'malformed';
      valueLength = ((valueLength & 0x7f) << 24) | (buf[pos + 1]! << 16) | (buf[pos + 2]! << 8) | buf[pos + 3]!;
      pos += 4;
    } else {
      pos += 1;
    }
    if (nameLength > end - pos || valueLength > end - pos - nameLength) return 'malformed';
    if (++count > maxPairs) return 'too-many';
    pos += nameLength + valueLength;
  }
  return null;
}

/**
 * The value of `name` in a block that passed {@link scanPairs}, or undefined; a later duplicate
 * wins, as in {@link decodePairs}. Compares bytes, so no other name or value becomes a string.
 */
export function findPair(buf: Buffer, name: string): string | undefined {
  // Called for every param a handler reads, so lengths are decoded inline, not via helpers.
  let pos = 0;
  let found = -1;
  let foundLength = 0;
  const end = buf.length;
  const wanted = name.length;
  const first = name.charCodeAt(0);
  while (pos < end) {
    let nameLength = buf[pos]!;
    if (nameLength & 0x80) {
      nameLength = ((nameLength & 0x7f) << 24) | (buf[pos + 1]! << 16) | (buf[pos + 2]! << 8) | buf[pos + 3]!;
      pos += 4;
    } else {
      pos += 1;
    }
    let valueLength = buf[pos]!;
    if (valueLength & 0x80) {
      valueLength = ((valueLength & 0x7f) << 24) | (buf[pos + 1]! << 16) | (buf[pos + 2]! << 8) | buf[pos + 3]!;
      pos += 4;
    } else {
      pos += 1;
    }
    if (nameLength === wanted && (wanted === 0 || buf[pos] === first)) {
      let i = 1;
      while (i < wanted && buf[pos + i] === name.charCodeAt(i)) i++;
      if (i >= wanted) {
        found = pos + nameLength;
        foundLength = valueLength;
      }
    }
    pos += nameLength + valueLength;
  }
  if (found < 0) return undefined;
  return foundLength === 0 ? '' : buf.toString('utf8', found, found + foundLength);
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
