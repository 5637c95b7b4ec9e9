/**
 * Byte-level tests of the record codec: hex fixtures written from the spec, fed whole, split at
 * every offset, and byte by byte (as ws tests its receiver).
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import {
  RecordParser,
  encodeEndRequest,
  encodeRecord,
  encodeUnknownType,
  frameStream,
  framedLength,
  paddingFor,
  writeStream,
} from '../../runtime/fastcgi/records.js';
import { MAX_RECORD_CONTENT } from '../../runtime/fastcgi/constants.js';

interface Got {
  type: number;
  id: number;
  hex: string;
}

function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

function parseAll(chunks: Buffer[]): { records: Got[]; error: unknown } {
  const records: Got[] = [];
  const parser = new RecordParser((type, id, buf, start, end) =>
    records.push({ type, id, hex: buf.toString('hex', start, end) }),
  );
  let error: unknown = null;
  for (const chunk of chunks) {
    const err = parser.push(chunk);
    if (err) {
      error = err;
      break;
    }
  }
  return { records, error };
}

// A whole RESPONDER request as nginx would send it, written by hand from the spec:
// BEGIN_REQUEST id 1 role 1 flags KEEP_CONN; PARAMS with two pairs (28 bytes, padded); empty PARAMS;
// STDIN "hello" (padded with 3 bytes); empty STDIN.
const REQUEST = hex(`
  01 01 0001 0008 00 00   0001 01 0000000000
  01 04 0001 001c 04 00   0e 03 52455155455354 5f4d4554484f44 474554   04 03 50415448 2f2f2f   00000000
  01 04 0001 0000 00 00
  01 05 0001 0005 03 00   68656c6c6f 000000
  01 05 0001 0000 00 00
`);

const EXPECTED: Got[] = [
  { type: 1, id: 1, hex: '0001010000000000' },
  { type: 4, id: 1, hex: '0e03' + '524551554553545f4d4554484f44' + '474554' + '0403' + '50415448' + '2f2f2f' },
  { type: 4, id: 1, hex: '' },
  { type: 5, id: 1, hex: '68656c6c6f' },
  { type: 5, id: 1, hex: '' },
];

test('fixture: a whole request parses into its five records', () => {
  // Sanity of the hand-written fixture: PARAMS content is 28 bytes (0x1c) plus 4 of padding.
  assert.equal(REQUEST.length, 16 + 8 + 28 + 4 + 8 + 8 + 5 + 3 + 8);
  const { records, error } = parseAll([REQUEST]);
  assert.equal(error, null);
  assert.deepEqual(records, EXPECTED);
});

test('fixture: split into two chunks at every offset', () => {
  for (let at = 0; at <= REQUEST.length; at++) {
    const { records, error } = parseAll([REQUEST.subarray(0, at), REQUEST.subarray(at)]);
    assert.equal(error, null, `split at ${at}`);
    assert.deepEqual(records, EXPECTED, `split at ${at}`);
  }
});

test('fixture: split into three chunks at every pair of offsets', () => {
  for (let a = 0; a <= REQUEST.length; a += 3) {
    for (let b = a; b <= REQUEST.length; b += 5) {
      const { records } = parseAll([REQUEST.subarray(0, a), REQUEST.subarray(a, b), REQUEST.subarray(b)]);
      assert.deepEqual(records, EXPECTED, `split at ${a}, ${b}`);
    }
  }
});

test('fixture: fed one byte at a time', () => {
  const chunks = [...REQUEST].map((b) => Buffer.from([b]));
  assert.deepEqual(parseAll(chunks).records, EXPECTED);
});

test('a record inside one chunk is a window into it, not a copy', () => {
  const windows: Array<[Buffer, number, number]> = [];
  const parser = new RecordParser((_t, _i, buf, start, end) => windows.push([buf, start, end]));
  const chunk = Buffer.concat([encodeRecord(5, 1, Buffer.from('abcdefgh')), encodeRecord(5, 1, Buffer.from('xyz'))]);
  parser.push(chunk);
  assert.deepEqual(windows, [
    [chunk, 8, 16],
    [chunk, 24, 27],
  ]);
  // A record split across chunks arrives assembled, as its own buffer.
  const split: string[] = [];
  const parser2 = new RecordParser((_t, _i, buf, start, end) => split.push(buf.toString('latin1', start, end)));
  parser2.push(chunk.subarray(0, 12));
  parser2.push(chunk.subarray(12));
  assert.deepEqual(split, ['abcdefgh', 'xyz']);
});

test('maximum content (65535) with maximum padding (255)', () => {
  const content = Buffer.alloc(65535, 0x61);
  const header = hex('01 05 0102 ffff ff 00');
  const stream = Buffer.concat([header, content, Buffer.alloc(255, 0xee), encodeRecord(5, 0x0102)]);
  for (const at of [1, 7, 8, 9, 1000, 65543, 65544, 65790, 65797]) {
    const { records, error } = parseAll([stream.subarray(0, at), stream.subarray(at)]);
    assert.equal(error, null);
    assert.equal(records.length, 2, `split at ${at}`);
    assert.equal(records[0]!.id, 0x0102);
    assert.equal(records[0]!.hex, content.toString('hex'));
    assert.equal(records[1]!.hex, '');
  }
});

test('a version other than 1 is a fatal error, and later input is ignored', () => {
  const bad = hex('02 01 0001 0008 00 00 0001000000000000');
  const records: number[] = [];
  const parser = new RecordParser((type) => records.push(type));
  assert.deepEqual(parser.push(bad), { reason: 'version', version: 2 });
  assert.equal(parser.push(REQUEST), null);
  assert.deepEqual(records, []);
});

test('stop() from the callback stops mid-chunk', () => {
  const seen: number[] = [];
  const parser = new RecordParser((type) => {
    seen.push(type);
    parser.stop();
  });
  parser.push(REQUEST);
  assert.deepEqual(seen, [1]);
});

test('midRecord tells a partial record from a clean boundary', () => {
  const parser = new RecordParser(() => {});
  assert.equal(parser.midRecord, false);
  parser.push(REQUEST.subarray(0, 3));
  assert.equal(parser.midRecord, true);
  parser.push(REQUEST.subarray(3, 16));
  assert.equal(parser.midRecord, false);
});

test('paddingFor aligns to 8', () => {
  assert.deepEqual(
    [0, 1, 7, 8, 9, 65535].map(paddingFor),
    [0, 7, 1, 0, 7, 1],
  );
});

test('encodeRecord: header fields, padding, and refusal of oversized content', () => {
  assert.equal(encodeRecord(6, 0x1234, Buffer.from('abc')).toString('hex'), '010612340003050061626300000000 00'.replace(/ /g, ''));
  assert.equal(encodeRecord(6, 1).toString('hex'), '0106000100000000');
  assert.throws(() => encodeRecord(6, 1, Buffer.alloc(65536)), RangeError);
});

test('encodeEndRequest and encodeUnknownType match the spec layout', () => {
  assert.equal(encodeEndRequest(7, 0x01020304, 3).toString('hex'), '0103000700080000' + '0102030403000000');
  assert.equal(encodeUnknownType(99).toString('hex'), '010b000000080000' + '6300000000000000');
});

function parseStream(bytes: Buffer): { contents: Buffer[]; records: number } {
  const contents: Buffer[] = [];
  const parser = new RecordParser((type, id, buf, start, end) => {
    assert.equal(type, 6);
    assert.equal(id, 3);
    contents.push(Buffer.from(buf.subarray(start, end)));
  });
  assert.equal(parser.push(bytes), null);
  return { contents, records: contents.length };
}

test('writeStream frames mixed strings and buffers across record boundaries', () => {
  const big = 'é'.repeat(MAX_RECORD_CONTENT / 2 + 10); // 2-byte UTF-8 chars straddle the boundary
  const parts: Array<Buffer | string> = ['head\r\n\r\n', Buffer.alloc(100, 1), big, 'tail'];
  const length = parts.reduce<number>((n, p) => n + Buffer.byteLength(p), 0);
  const out = Buffer.alloc(framedLength(length));
  const end = writeStream(out, 0, 6, 3, parts, length);
  assert.equal(end, out.length);
  const { contents } = parseStream(out);
  assert.equal(contents.length, 2);
  assert.equal(contents[0]!.length, MAX_RECORD_CONTENT);
  const joined = Buffer.concat(contents);
  assert.deepEqual(joined, Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p))));
  // The caller's array is left as it was.
  assert.equal(typeof parts[2], 'string');
});

test('frameStream gives the same bytes as writeStream without copying the body', () => {
  const body = Buffer.alloc(3 * MAX_RECORD_CONTENT + 17);
  for (let i = 0; i < body.length; i++) body[i] = i & 0xff;
  const parts = [body.subarray(0, 5000), body.subarray(5000)];
  const out: Buffer[] = [];
  frameStream(out, 6, 3, parts, body.length);
  const copied = Buffer.alloc(framedLength(body.length));
  writeStream(copied, 0, 6, 3, parts, body.length);
  assert.deepEqual(Buffer.concat(out), copied);
  assert.ok(out.some((b) => b.buffer === body.buffer), 'body views are reused');
  assert.deepEqual(Buffer.concat(parseStream(copied).contents), body);
});

test('framedLength counts headers and padding', () => {
  assert.equal(framedLength(0), 0);
  assert.equal(framedLength(1), 16);
  assert.equal(framedLength(MAX_RECORD_CONTENT), 8 + MAX_RECORD_CONTENT);
  assert.equal(framedLength(MAX_RECORD_CONTENT + 1), 8 + MAX_RECORD_CONTENT + 16);
});
