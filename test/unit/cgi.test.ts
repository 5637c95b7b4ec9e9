/** The CGI header block parser used by raw-output mode. */
import assert from 'node:assert/strict';
import test from 'node:test';
import { parseCgiHead } from '../../runtime/cgi.js';

test('Status, headers and body offset, with CRLF and with bare LF', () => {
  for (const eol of ['\r\n', '\n']) {
    const text = `Status: 404 Not Found${eol}Content-Type: text/plain${eol}Set-Cookie: a=1${eol}Set-Cookie: b=2${eol}${eol}body`;
    const head = parseCgiHead(Buffer.from(text));
    assert.deepEqual(head, {
      status: 404,
      headers: [
        ['Content-Type', 'text/plain'],
        ['Set-Cookie', 'a=1'],
        ['Set-Cookie', 'b=2'],
      ],
      bodyOffset: text.length - 4,
    });
  }
});

test('no Status: 200, or 302 when there is a Location', () => {
  const plain = parseCgiHead(Buffer.from('Content-Type: text/html\n\n<p>'));
  assert.equal((plain as { status: number }).status, 200);
  const moved = parseCgiHead(Buffer.from('Location: /elsewhere\r\n\r\n'));
  assert.equal((moved as { status: number }).status, 302);
  const explicit = parseCgiHead(Buffer.from('Location: /x\r\nStatus: 301\r\n\r\n'));
  assert.equal((explicit as { status: number }).status, 301);
});

test('an unfinished block is incomplete; a bad line or status is an error', () => {
  assert.equal(parseCgiHead(Buffer.from('Content-Type: text/plain\r\n')), 'incomplete');
  assert.equal(parseCgiHead(Buffer.from('')), 'incomplete');
  assert.match((parseCgiHead(Buffer.from('no colon here\n\n')) as { error: string }).error, /malformed CGI header line/);
  assert.match((parseCgiHead(Buffer.from('Status: teapot\n\n')) as { error: string }).error, /malformed Status/);
});

test('an empty first line means no headers at all', () => {
  assert.deepEqual(parseCgiHead(Buffer.from('\r\nbody')), { status: 200, headers: [], bodyOffset: 2 });
});
