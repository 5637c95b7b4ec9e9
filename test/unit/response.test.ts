/**
 * Response encoding: the CGI header block, STDOUT/STDERR framing, END_REQUEST, one write for a
 * small response and a writev list for a big one. The channel here is a recorder of what the
 * connection would have written.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { Response, type ResponseChannel } from '../../runtime/fastcgi/server/response.js';
import { Decoder, T, parseCgi } from '../helpers/fcgi-client.js';

class Recorder implements ResponseChannel {
  readonly requestId = 5;
  open = true;
  writes: Array<{ data: Buffer | Buffer[]; last: boolean }> = [];
  send(data: Buffer | Buffer[], last: boolean): boolean {
    if (!this.open) return false;
    this.writes.push({ data, last });
    return true;
  }
  decoded(): Decoder {
    const d = new Decoder();
    for (const w of this.writes) d.push(Buffer.isBuffer(w.data) ? w.data : Buffer.concat(w.data));
    return d;
  }
}

test('a small response is one buffer: STDOUT, empty STDOUT, END_REQUEST', () => {
  const ch = new Recorder();
  const res = new Response(ch);
  res.setHeader('Content-Type', 'text/plain');
  res.write('hello ');
  res.write(Buffer.from('world'));
  res.end();
  assert.equal(ch.writes.length, 1);
  assert.ok(Buffer.isBuffer(ch.writes[0]!.data));
  assert.equal(ch.writes[0]!.last, true);
  const recs = ch.decoded().records;
  assert.deepEqual(recs.map((r) => [r.type, r.id]), [[T.STDOUT, 5], [T.STDOUT, 5], [T.END_REQUEST, 5]]);
  assert.equal(recs[0]!.content.toString(), 'Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world');
  assert.equal(recs[1]!.content.length, 0);
  assert.equal(recs[2]!.content.toString('hex'), '0000000000000000');
  assert.ok(res.finished);
});

test('status and repeated headers reach the CGI block; setHeader replaces, addHeader appends', () => {
  const ch = new Recorder();
  const res = new Response(ch);
  res.status = 404;
  res.setHeader('X-A', '1').setHeader('x-a', '2');
  res.addHeader('Set-Cookie', 'a=1').addHeader('Set-Cookie', 'b=2');
  res.end('gone');
  const stdout = Buffer.concat(ch.decoded().records.filter((r) => r.type === T.STDOUT).map((r) => r.content));
  assert.equal(
    stdout.toString(),
    'Status: 404 Not Found\r\nx-a: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\ngone',
  );
  assert.equal(parseCgi(stdout).status, 404);
});

test('header injection is refused', () => {
  const res = new Response(new Recorder());
  assert.throws(() => res.setHeader('X-A', 'ok\r\nSet-Cookie: evil=1'), TypeError);
  assert.throws(() => res.setHeader('Bad Name', 'x'), TypeError);
  assert.throws(() => res.setHeader('X-N', 'a\nb'), TypeError);
});

test('an invalid status throws at send time', () => {
  const res = new Response(new Recorder());
  res.status = 42;
  assert.throws(() => res.end(), RangeError);
});

test('stderr lines go out as STDERR records, closed by an empty one', () => {
  const ch = new Recorder();
  const res = new Response(ch);
  res.log('first');
  res.log('second\n');
  res.end('x');
  const recs = ch.decoded().records;
  const err = recs.filter((r) => r.type === T.STDERR);
  assert.equal(Buffer.concat(err.map((r) => r.content)).toString(), 'first\nsecond\n');
  assert.equal(err.at(-1)!.content.length, 0);
  assert.equal(recs.at(-1)!.type, T.END_REQUEST);
});

test('a large body goes out as a writev list that views the body without copying', () => {
  const ch = new Recorder();
  const res = new Response(ch);
  const body = Buffer.alloc(1_000_000, 0x41);
  res.end(body);
  assert.equal(ch.writes.length, 1);
  const data = ch.writes[0]!.data;
  assert.ok(Array.isArray(data));
  assert.ok(data.some((b) => b.buffer === body.buffer));
  const recs = ch.decoded().records;
  const out = recs.filter((r) => r.type === T.STDOUT);
  assert.ok(out.every((r) => r.content.length <= 65535));
  assert.equal(parseCgi(Buffer.concat(out.map((r) => r.content))).body.length, body.length);
  assert.equal(recs.at(-1)!.type, T.END_REQUEST);
});

test('a relayed body of large parts goes out as views; as many small prints of the same size, copied', () => {
  const records = Array.from({ length: 5 }, (_, i) => Buffer.alloc(8 * 1024, 97 + i));
  const relayed = new Recorder();
  const a = new Response(relayed);
  for (const r of records) a.write(r);
  a.end();
  const data = relayed.writes[0]!.data;
  assert.ok(Array.isArray(data), 'a writev list');
  assert.ok(records.every((r) => data.includes(r)), 'every part is sent as it is, not copied');
  assert.ok(parseCgi(Buffer.concat(relayed.decoded().records.filter((r) => r.type === T.STDOUT).map((r) => r.content))).body.equals(Buffer.concat(records)));

  const printed = new Recorder();
  const b = new Response(printed);
  for (let i = 0; i < 4000; i++) b.write('0123456789');
  b.end();
  assert.ok(Buffer.isBuffer(printed.writes[0]!.data), 'one copied buffer');
  assert.equal(parseCgi(Buffer.concat(printed.decoded().records.filter((r) => r.type === T.STDOUT).map((r) => r.content))).body.toString(), '0123456789'.repeat(4000));
});

test('flush sends the headers and the body so far; end sends the rest', () => {
  const ch = new Recorder();
  const res = new Response(ch);
  res.write('a');
  res.flush();
  assert.ok(res.headersSent);
  assert.throws(() => res.setHeader('X-Late', '1'));
  res.flush(); // nothing new: no write
  res.write('b');
  res.end();
  assert.deepEqual(ch.writes.map((w) => w.last), [false, true]);
  const stdout = Buffer.concat(ch.decoded().records.filter((r) => r.type === T.STDOUT).map((r) => r.content));
  assert.equal(parseCgi(stdout).body.toString(), 'ab');
});

test('reset discards unsent headers and body', () => {
  const ch = new Recorder();
  const res = new Response(ch);
  res.setHeader('X-Gone', '1');
  res.write('partial');
  res.reset();
  res.status = 500;
  res.end('error');
  const stdout = Buffer.concat(ch.decoded().records.filter((r) => r.type === T.STDOUT).map((r) => r.content));
  assert.equal(stdout.toString(), 'Status: 500 Internal Server Error\r\n\r\nerror');
});

test('once the channel is closed, output is dropped without encoding', () => {
  const ch = new Recorder();
  const res = new Response(ch);
  ch.open = false;
  res.end('late');
  assert.equal(ch.writes.length, 0);
  assert.ok(res.finished);
  res.write('more'); // no throw after the request went away
});
