/** Name-value pair codec: 1- and 4-byte lengths, limits, malformed input. */
import assert from 'node:assert/strict';
import test from 'node:test';
import { decodePairs, encodePairs } from '../../runtime/fastcgi/pairs.js';

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
