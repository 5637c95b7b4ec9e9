/** Name-value pair codec: 1- and 4-byte lengths, limits, malformed input. */
import assert from 'node:assert/strict';
import test from 'node:test';
import fc from 'fast-check';
import { decodePairs, encodePairs, findPair, scanPairs } from '../../runtime/fastcgi/pairs.js';

function decode(buf: Buffer, max = 1000): { pairs: Record<string, string>; err: string | null } {
  const pairs = Object.create(null) as Record<string, string>;
  const err = decodePairs(buf, max, pairs);
  return { pairs: { ...pairs }, err };
}

test('1-byte lengths, hand-written fixture', () => {
  // "A"="b", "PATH"="" (empty value)
  const buf = Buffer.from('0101' + '41' + '62' + '0400' + '50415448', 'hex');
  assert.deepEqual(decode(buf), { pairs: { A: 'b', PATH: '' }, err: null });
});

test('4-byte lengths for a name and a value of 128 bytes and more', () => {
  const name = 'N'.repeat(128);
  const value = 'v'.repeat(70000);
  const buf = Buffer.concat([
    Buffer.from([0x80, 0, 0, 128]),
    Buffer.from([0x80, 0x01, 0x11, 0x70]),
    Buffer.from(name),
    Buffer.from(value),
  ]);
  assert.deepEqual(decode(buf), { pairs: { [name]: value }, err: null });
});

test('encode then decode round-trips, UTF-8 values included', () => {
  const input: Array<[string, string]> = [
    ['REQUEST_URI', '/caf%C3%A9?x=1'],
    ['PATH_INFO', '/café/ünïcødé'],
    ['EMPTY', ''],
    ['LONG', 'x'.repeat(200)],
  ];
  const { pairs, err } = decode(encodePairs(input));
  assert.equal(err, null);
  assert.deepEqual(pairs, Object.fromEntries(input));
});

test('a value that runs past the end is malformed, at every truncation', () => {
  const full = encodePairs([['NAME', 'value'], ['LONGER', 'y'.repeat(300)]]);
  for (let len = 1; len < full.length; len++) {
    const { err } = decode(full.subarray(0, len));
    // Truncating exactly after the first pair leaves a valid block.
    if (len === 11) assert.equal(err, null);
    else assert.equal(err, 'malformed', `truncated to ${len}`);
  }
});

test('a huge declared length is malformed, not an allocation', () => {
  const buf = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x01, 0x41, 0x42]);
  assert.equal(decode(buf).err, 'malformed');
});

test('more pairs than allowed stops with too-many', () => {
  const buf = encodePairs([['A', '1'], ['B', '2'], ['C', '3']]);
  assert.equal(decode(buf, 2).err, 'too-many');
  assert.equal(decode(buf, 3).err, null);
});

test('decoded names cannot reach the prototype', () => {
  const { pairs } = decode(encodePairs([['__proto__', 'x'], ['constructor', 'y']]));
  assert.equal(pairs.constructor, 'y');
  assert.equal(Object.getPrototypeOf({}), Object.prototype);
});

/** The spec's rule, written as plainly as possible: the oracle for the optimised scanners. */
function reference(buf: Buffer, max: number): string | null {
  let pos = 0;
  let count = 0;
  const field = (): number | null => {
    if (pos >= buf.length) return null;
    if (buf[pos]! < 128) return buf[pos++]!;
    if (pos + 4 > buf.length) return null;
    const n = buf.readUInt32BE(pos) & 0x7fffffff;
    pos += 4;
    return n;
  };
  while (pos < buf.length) {
    const n = field();
    const v = field();
    if (n === null || v === null || pos + n + v > buf.length) return 'malformed';
    if (++count > max) return 'too-many';
    pos += n + v;
  }
  return null;
}

test('scanPairs and decodePairs give the reference verdict on any bytes', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 0, max: 8 }), (bytes, max) => {
      const buf = Buffer.from(bytes);
      assert.equal(scanPairs(buf, max), reference(buf, max));
      assert.equal(decode(buf, max).err, reference(buf, max));
    }),
    { seed: 7, numRuns: 2000 },
  );
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.string({ maxLength: 150 }), fc.string({ maxLength: 200 })), { maxLength: 6 }), (list) => {
      const buf = encodePairs(list);
      assert.equal(scanPairs(buf, 1000), null);
      for (let cut = 0; cut < buf.length; cut += 7) {
        assert.equal(scanPairs(buf.subarray(0, cut), 1000), reference(buf.subarray(0, cut), 1000));
      }
    }),
    { seed: 8, numRuns: 300 },
  );
});

test('findPair finds what decodePairs decodes, later duplicates winning', () => {
  const long = 'L'.repeat(300);
  const buf = encodePairs([
    ['QUERY_STRING', 'a=1'],
    ['QUERY', 'prefix, not a match'],
    [long, 'long name'],
    ['EMPTY', ''],
    ['QUERY_STRING', 'b=2'],
    ['PATH_INFO', '/café'],
  ]);
  assert.equal(scanPairs(buf, 100), null);
  assert.equal(findPair(buf, 'QUERY_STRING'), 'b=2');
  assert.equal(findPair(buf, 'QUERY'), 'prefix, not a match');
  assert.equal(findPair(buf, long), 'long name');
  assert.equal(findPair(buf, 'EMPTY'), '');
  assert.equal(findPair(buf, 'PATH_INFO'), '/café');
  assert.equal(findPair(buf, 'MISSING'), undefined);
  assert.equal(findPair(Buffer.alloc(0), 'X'), undefined);
  assert.equal(findPair(encodePairs([['', 'empty name']]), ''), 'empty name');
  const all = decode(buf).pairs;
  for (const name of Object.keys(all)) assert.equal(findPair(buf, name), all[name]);
});
