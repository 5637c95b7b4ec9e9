/** The micro-benchmarks' own parts: the request they time is a real one, and their units read right. */
import assert from 'node:assert/strict';
import test from 'node:test';
import { duration, perSecond, requestDecoder, typicalRequest } from '../scenarios/micro.js';

test('the timed request decodes to one request with its script, however the bytes are split', () => {
  const req = typicalRequest();
  for (let cut = 0; cut <= req.length; cut++) {
    const d = requestDecoder();
    d.push(req.subarray(0, cut));
    d.push(req.subarray(cut));
    assert.equal(d.requests, 1, `split at ${cut}`);
    assert.equal(d.records, 4);
    assert.equal(d.lastScript, '/srv/www/hello.lua');
  }
  // A malformed stream is an error, not a silently faster benchmark.
  const bad = Buffer.from(req);
  bad[0] = 2;
  assert.throws(() => requestDecoder().push(bad), /parse error/);
});

test('durations and rates are printed in the unit that fits', () => {
  assert.equal(duration(512), '512 ns');
  assert.equal(duration(4_100), '4.10 µs');
  assert.equal(duration(44_500), '44.5 µs');
  assert.equal(duration(21_770_000), '21.77 ms');
  assert.equal(duration(NaN), '—');
  assert.equal(perSecond(6_670), '150,000');
  assert.equal(perSecond(21_770_000), '45.9');
  assert.equal(perSecond(0), '—');
});
