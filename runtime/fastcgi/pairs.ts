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
 * latin1 (CGI variable names are ASCII), values as UTF-8. The block is checked first with
 * {@link scanPairs}: on an error nothing is decoded.
 */
export function decodePairs(buf: Buffer, maxPairs: number, into: Record<string, string>): PairsError | null {
  const err = scanPairs(buf, maxPairs);
  if (err) return err;
  let pos = 0;
  while (pos < buf.length) {
    const nameLength = lengthAt(buf, pos);
    const valueLength = lengthAt(buf, after);
    pos = after;
    const name = buf.toString('latin1', pos, pos + nameLength);
    pos += nameLength;
    into[name] = valueLength === 0 ? '' : buf.toString('utf8', pos, pos + valueLength);
    pos += valueLength;
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
    const nameLength = lengthAt(buf, pos);
    // A length field that runs past the end reads undefined bytes as 0; `after` tells.
    if (after >= end) return 'malformed';
    const valueLength = lengthAt(buf, after);
    pos = after;
    if (pos > end || nameLength > end - pos || valueLength > end - pos - nameLength) return 'malformed';
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
  let pos = 0;
  let found = -1;
  let foundLength = 0;
  const end = buf.length;
  const wanted = name.length;
  const first = name.charCodeAt(0);
  while (pos < end) {
    const nameLength = lengthAt(buf, pos);
    const valueLength = lengthAt(buf, after);
    pos = after;
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

// Where the length field last read by lengthAt ends. A module variable rather than a returned
// pair: the loops above run for every request and should allocate nothing.
let after = 0;

/** A length field at `pos`: one byte under 128, else four bytes with the high bit set. */
function lengthAt(buf: Buffer, pos: number): number {
  const b = buf[pos]!;
  if (b & 0x80) {
    after = pos + 4;
    return ((b & 0x7f) << 24) | (buf[pos + 1]! << 16) | (buf[pos + 2]! << 8) | buf[pos + 3]!;
  }
  after = pos + 1;
  return b;
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
