/**
 * Escalation headers: percent-encoding that round-trips every byte, the nginx accel mapping
 * (longest prefix, segment boundaries), the mode picked from SERVER_SOFTWARE, each header with and
 * without a range, and Content-Disposition for ASCII, quoted and non-ASCII names.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { LodestoneError } from '../../runtime/errors.js';
import {
  accelUri,
  contentDisposition,
  encodePath,
  escalationHeader,
  pickMode,
  type ConcreteMode,
  type SendfileMode,
} from '../../runtime/files/escalate.js';

const ENCODED_ONLY = /^[A-Za-z0-9\-._~/%]*$/;

test('encodePath round-trips every character U+0001..U+00FF and non-BMP characters', () => {
  for (let c = 1; c <= 0xff; c++) {
    const p = `/d/${String.fromCharCode(c)}x`;
    const encoded = encodePath(p);
    assert.match(encoded, ENCODED_ONLY, `char ${c}`);
    assert.equal(decodeURIComponent(encoded), p, `char ${c}`);
  }
  let all = '/';
  for (let c = 1; c <= 0xff; c++) all += String.fromCharCode(c);
  assert.equal(decodeURIComponent(encodePath(all)), all);
  for (const p of ['/😀.png', '/𝄞/music', '/\u{10FFFF}', '/日本語/ファイル.txt', '/a\u0301.txt']) {
    const encoded = encodePath(p);
    assert.match(encoded, ENCODED_ONLY, p);
    assert.equal(decodeURIComponent(encoded), p);
  }
  assert.equal(encodePath('/😀'), '/%F0%9F%98%80');
});

test('encodePath keeps only A-Z a-z 0-9 - . _ ~ and /', () => {
  const keep = 'ABCXYZabcxyz0189-._~/';
  assert.equal(encodePath(keep), keep);
  assert.equal(encodePath('/srv/files/a b,c%d?e#f.txt'), '/srv/files/a%20b%2Cc%25d%3Fe%23f.txt');
  assert.equal(encodePath('%20'), '%2520');
  for (const ch of " ,%?#+=&;:@!*'()[]$\"<>\\^`{|}\t\n\r") {
    assert.equal(encodePath(ch), `%${ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`, JSON.stringify(ch));
  }
  assert.equal(encodePath('/é'), '/%C3%A9');
  assert.equal(encodePath(''), '');
});

test('accelUri maps a path under a root to its prefix, the rest encoded', () => {
  const accel: Array<[string, string]> = [['/srv/files', '/protected']];
  assert.equal(accelUri('/srv/files/a.txt', accel), '/protected/a.txt');
  assert.equal(accelUri('/srv/files/sub dir/b,c?d#e%f é.txt', accel), '/protected/sub%20dir/b%2Cc%3Fd%23e%25f%20%C3%A9.txt');
  assert.equal(accelUri('/srv/files', accel), '/protected');
  assert.equal(accelUri('/srv/other/a.txt', accel), null);
  assert.equal(accelUri('/srv/files/a.txt', []), null);
});

test('accelUri respects segment boundaries', () => {
  assert.equal(accelUri('/srv/files2/a.txt', [['/srv/files', '/protected']]), null);
  assert.equal(accelUri('/srv/filesystem', [['/srv/files', '/protected']]), null);
  assert.equal(accelUri('/srv/files2/a.txt', [['/srv/files', '/protected'], ['/srv', '/all']]), '/all/files2/a.txt');
});

test('accelUri: the longest matching root wins, whatever the order', () => {
  const accel: Array<[string, string]> = [
    ['/srv', '/all'],
    ['/srv/files/private', '/priv'],
    ['/srv/files', '/files'],
  ];
  for (const order of [accel, [...accel].reverse()]) {
    assert.equal(accelUri('/srv/x.txt', order), '/all/x.txt');
    assert.equal(accelUri('/srv/files/x.txt', order), '/files/x.txt');
    assert.equal(accelUri('/srv/files/private/x.txt', order), '/priv/x.txt');
    assert.equal(accelUri('/srv/files/privateer/x.txt', order), '/files/privateer/x.txt');
  }
});

test('accelUri tolerates trailing slashes in the configuration', () => {
  assert.equal(accelUri('/srv/files/a.txt', [['/srv/files/', '/protected/']]), '/protected/a.txt');
  assert.equal(accelUri('/srv/files/a.txt', [['/srv/files//', '/protected//']]), '/protected/a.txt');
  assert.equal(accelUri('/srv/files', [['/srv/files/', '/protected/']]), '/protected');
  assert.equal(accelUri('/srv/files2/a', [['/srv/files/', '/protected/']]), null);
  assert.equal(accelUri('/etc/x y', [['/', '/fs/']]), '/fs/etc/x%20y');
  assert.equal(accelUri('/srv/files/a.txt', [['/srv/files', '/']]), '/a.txt');
  // The longest root is measured without its trailing slashes.
  assert.equal(accelUri('/srv/files/a', [['/srv/files', '/long'], ['/srv////', '/short']]), '/long/a');
});

test('pickMode: configured wins; auto picks from SERVER_SOFTWARE', () => {
  assert.equal(pickMode('auto', 'nginx/1.22.1'), 'x-accel-redirect');
  assert.equal(pickMode('auto', 'lighttpd/1.4.69'), 'x-sendfile');
  assert.equal(pickMode('auto', 'Apache/2.4'), 'x-sendfile');
  assert.equal(pickMode('auto', 'Apache/2.4.57 (Debian)'), 'x-sendfile');
  assert.equal(pickMode('auto', undefined), 'x-sendfile');
  assert.equal(pickMode('auto', ''), 'x-sendfile');
  assert.equal(pickMode('auto', 'nginxish/1.0'), 'x-sendfile');
  const concrete: ConcreteMode[] = ['x-sendfile', 'x-sendfile2', 'x-lighttpd-send-file', 'x-accel-redirect'];
  for (const mode of concrete) {
    for (const software of ['nginx/1.22.1', 'lighttpd/1.4.69', 'Apache/2.4', undefined]) {
      assert.equal(pickMode(mode satisfies SendfileMode, software), mode);
    }
  }
});

const FILE = '/srv/files/My Video, part 1%?#é.mp4';
const FILE_ENC = '/srv/files/My%20Video%2C%20part%201%25%3F%23%C3%A9.mp4';
const ACCEL: Array<[string, string]> = [['/srv/files', '/protected']];

test('escalationHeader: one header per mode, the path encoded', () => {
  assert.deepEqual(escalationHeader('x-sendfile', FILE, null, []), { name: 'X-Sendfile', value: FILE_ENC });
  assert.deepEqual(escalationHeader('x-lighttpd-send-file', FILE, null, []), { name: 'X-LIGHTTPD-send-file', value: FILE_ENC });
  assert.deepEqual(escalationHeader('x-accel-redirect', FILE, null, ACCEL), {
    name: 'X-Accel-Redirect',
    value: '/protected/My%20Video%2C%20part%201%25%3F%23%C3%A9.mp4',
  });
  assert.deepEqual(escalationHeader('x-sendfile2', FILE, [0, 1023], []), { name: 'X-Sendfile2', value: `${FILE_ENC} 0-1023` });
  assert.deepEqual(escalationHeader('x-sendfile2', FILE, [100, 100], []), { name: 'X-Sendfile2', value: `${FILE_ENC} 100-100` });
  // Without a range: an open end, "to the end of the file" for lighttpd.
  assert.deepEqual(escalationHeader('x-sendfile2', FILE, null, []), { name: 'X-Sendfile2', value: `${FILE_ENC} 0-` });
  assert.deepEqual(escalationHeader('x-sendfile', FILE, undefined, []), { name: 'X-Sendfile', value: FILE_ENC });
});

test('escalationHeader: the X-Sendfile2 value splits back into path and range', () => {
  const { value } = escalationHeader('x-sendfile2', FILE, [5, 9], []);
  // lighttpd splits at the first space and ends the entry at a comma.
  assert.equal(value.split(' ').length, 2);
  assert.ok(!value.includes(','));
  const [encoded, range] = value.split(' ') as [string, string];
  assert.equal(decodeURIComponent(encoded), FILE);
  assert.equal(range, '5-9');
});

test('escalationHeader throws on a range the mode cannot carry, and on a bad range', () => {
  for (const mode of ['x-sendfile', 'x-lighttpd-send-file', 'x-accel-redirect'] as const) {
    assert.throws(() => escalationHeader(mode, FILE, [0, 10], ACCEL), /range/, mode);
  }
  for (const range of [[5, 4], [-1, 3], [1.5, 2], [0, Number.NaN], [0, Infinity]] as Array<[number, number]>) {
    assert.throws(() => escalationHeader('x-sendfile2', FILE, range, []), RangeError, String(range));
  }
});

test('escalationHeader: X-Accel-Redirect without a mapping is LS_SENDFILE_NO_MAPPING', () => {
  assert.throws(
    () => escalationHeader('x-accel-redirect', '/elsewhere/a.txt', null, ACCEL),
    (err: unknown) => err instanceof LodestoneError && err.code === 'LS_SENDFILE_NO_MAPPING',
  );
  assert.throws(() => escalationHeader('x-accel-redirect', FILE, null, []), LodestoneError);
});

/** The filename*= value decoded, to check it carries the exact name. */
function extended(header: string): string {
  const m = /; filename\*=UTF-8''([^;\s]*)$/.exec(header);
  assert.ok(m, header);
  return decodeURIComponent(m[1]!);
}

test('contentDisposition: an ASCII name appears as is in both forms', () => {
  assert.equal(contentDisposition('report.pdf'), `attachment; filename="report.pdf"; filename*=UTF-8''report.pdf`);
  assert.equal(
    contentDisposition('Q1 report (final).pdf'),
    `attachment; filename="Q1 report (final).pdf"; filename*=UTF-8''Q1%20report%20%28final%29.pdf`,
  );
});

test('contentDisposition escapes quotes and backslashes in the quoted fallback', () => {
  const header = contentDisposition('say "hi" \\ bye.txt');
  assert.equal(header, `attachment; filename="say \\"hi\\" \\\\ bye.txt"; filename*=UTF-8''say%20%22hi%22%20%5C%20bye.txt`);
  assert.equal(extended(header), 'say "hi" \\ bye.txt');
});

test('contentDisposition: non-ASCII names get an ASCII fallback and the exact UTF-8 name', () => {
  assert.equal(contentDisposition('résumé.pdf'), `attachment; filename="resume.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf`);
  assert.equal(contentDisposition('日本語.txt'), `attachment; filename="___.txt"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.txt`);
  assert.equal(contentDisposition('😀.png'), `attachment; filename="_.png"; filename*=UTF-8''%F0%9F%98%80.png`);
  for (const name of ['naïve café.txt', 'Ω≈ç√.bin', 'a,b;c=d.txt', '%41.txt', "it's.txt", 'x*y.txt']) {
    const header = contentDisposition(name);
    assert.equal(extended(header), name);
    assert.match(header, /^[\x20-\x7e]*$/, name);
  }
});

test('contentDisposition cannot break the header line', () => {
  const header = contentDisposition('a\r\nSet-Cookie: x=1\0.txt');
  assert.match(header, /^[\x20-\x7e]*$/);
  assert.equal(extended(header), 'a\r\nSet-Cookie: x=1\0.txt');
});
