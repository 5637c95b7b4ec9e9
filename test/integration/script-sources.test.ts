/**
 * Script sources are not downloads (issue 17, item 3): by default stat(), sendfile() and
 * stat-accel refuse any file the script store would run (403, LS_FILE_FORBIDDEN), so
 * `download.lua?file=download.lua` no longer hands out the script (and its secrets);
 * `files.allowScripts = true` opts out. With --script only the front controller is a script;
 * in stat-accel mode no file is (a docroot's browser .js is a static file there).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { LANGUAGES, startSandbox } from '../helpers/sandbox.js';

const SEND = {
  lua: 'return sendfile(request.query.file)',
  js: 'return sendfile(request.query.file);',
} as const;
const STAT = {
  lua: 'local ok, info = pcall(stat, request.query.file)\nprint(info and info.size or "nil")',
  js: 'print((await stat(request.query.file))?.size ?? "nil");',
} as const;

for (const lang of LANGUAGES) {
  test(`${lang}: sendfile() and stat() refuse script sources under the root by default`, async (t) => {
    const sb = await startSandbox(t);
    sb.script(`send.${lang}`, SEND[lang]);
    sb.script(`stat.${lang}`, STAT[lang]);
    sb.script('secret.lua', 'local PASSWORD = "hunter2"');
    sb.script('lib/other.js', 'const key = "k";');
    sb.script('data.txt', 'plain data');
    for (const file of [`send.${lang}`, 'secret.lua', 'lib/other.js']) {
      const a = await sb.get(`send.${lang}`, `file=${file}`);
      assert.equal(a.status, 403, `${file}: ${a.stderr}`);
      assert.doesNotMatch(a.body, /hunter2|PASSWORD/);
      assert.equal(a.headers['x-sendfile'] ?? a.headers['x-accel-redirect'], undefined, `${file} is not escalated`);
    }
    assert.ok(sb.logged('LS_FILE_FORBIDDEN').some((l) => l.includes('secret.lua') && l.includes('script source')), sb.lodestone.log());
    const stat = await sb.get(`stat.${lang}`, 'file=secret.lua');
    assert.equal(stat.status, 403, stat.stderr);
    // Other files are still served.
    const data = await sb.get(`send.${lang}`, 'file=data.txt');
    assert.equal(data.status, 200, data.stderr);
    assert.equal(data.headers['x-sendfile'], fs.realpathSync(path.join(sb.root, 'data.txt')));
  });
}

test('files.allowScripts = true serves script sources again', async (t) => {
  const sb = await startSandbox(t, { config: { files: { allowScripts: true } } });
  sb.script('send.lua', SEND.lua);
  sb.script('secret.lua', 'local PASSWORD = "hunter2"');
  const a = await sb.get('send.lua', 'file=secret.lua');
  assert.equal(a.status, 200, a.stderr);
  assert.equal(a.headers['x-sendfile'], fs.realpathSync(path.join(sb.root, 'secret.lua')));
});

test('with --script only the front controller is a script source; stat-accel refuses none', async (t) => {
  const sb = await startSandbox(t, {
    files: { 'index.lua': SEND.lua, 'app.js': 'console.log("browser code")' },
    args: (root) => ['--script', path.join(root, 'index.lua')],
  });
  const own = await sb.get('index.lua', 'file=index.lua');
  assert.equal(own.status, 403, own.stderr);
  const browser = await sb.get('index.lua', 'file=app.js');
  assert.equal(browser.status, 200, `app.js: ${browser.stderr} ${sb.lodestone.log()}`);

  const accel = await startSandbox(t, { args: ['--stat-accel'] });
  accel.script('app.js', 'console.log("browser code")');
  const asset = await accel.get('app.js');
  assert.equal(asset.status, 200, `stat-accel: ${asset.stderr} ${accel.lodestone.log()}`);
  assert.equal(asset.headers['x-sendfile'], fs.realpathSync(path.join(accel.root, 'app.js')));
});
