/** Access-log lines (nginx combined + time and script, nginx's escaping), log files and reopen. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { Logger } from '../../runtime/log.js';
import { accessLine, logSink, reopenLogFiles } from '../../runtime/process/log-files.js';
import type { Request } from '../../runtime/fastcgi/server/request.js';
import type { Response } from '../../runtime/fastcgi/server/response.js';
import { tempDir } from '../helpers/lodestone.js';

function fakeReq(params: Record<string, string>): Request {
  return { param: (name: string) => params[name] } as unknown as Request;
}

test('an access line is nginx combined plus request time and script', () => {
  const req = fakeReq({
    REMOTE_ADDR: '10.0.0.7',
    REQUEST_METHOD: 'GET',
    REQUEST_URI: '/a.lua?x=1',
    SERVER_PROTOCOL: 'HTTP/1.1',
    HTTP_USER_AGENT: 'curl/8.0',
    SCRIPT_FILENAME: '/srv/www/a.lua',
  });
  const res = { status: 404, bodyBytes: 17 } as Response;
  const line = accessLine(req, res, 1.23456, new Date(Date.UTC(2026, 10, 2, 3, 4, 5)));
  assert.equal(line, '10.0.0.7 - - [02/Nov/2026:03:04:05 +0000] "GET /a.lua?x=1 HTTP/1.1" 404 17 "-" "curl/8.0" 1.235 /srv/www/a.lua\n');
});

test('quotes, backslashes, control and non-ASCII bytes are escaped as \\xHH: no forged lines', () => {
  const req = fakeReq({ REQUEST_URI: '/"x"\\\n', HTTP_USER_AGENT: 'é\r\nfake 200' });
  const line = accessLine(req, { status: 200, bodyBytes: 0 } as Response, 0, new Date(0));
  assert.equal(line.split('\n').length, 2, 'one line');
  assert.match(line, /"- \/\\x22x\\x22\\x5C\\x0A -" 200 0 "-" "\\xC3\\xA9\\x0D\\x0Afake 200"/);
});

test('a log file gets the Logger lines; after rename + reopen new lines go to the new file, none lost', (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'error.log');
  const log = new Logger('info', logSink(file));
  log.info('-', 'first', { n: 1 });
  fs.renameSync(file, `${file}.1`);
  log.info('-', 'second, still to the renamed file');
  reopenLogFiles();
  log.info('-', 'third, to the new file');
  const old = fs.readFileSync(`${file}.1`, 'utf8');
  const fresh = fs.readFileSync(file, 'utf8');
  assert.match(old, /info - first n=1\n.*info - second, still to the renamed file\n$/);
  assert.match(fresh, /^\S+ info - third, to the new file\n$/);
});
