/**
 * Modules through the real server (README, "Modules"): what the store does before a run, which
 * the engine rows (engine-conformance-modules.test.ts) cannot see: finding `a/b.lua` in
 * modules.paths, confinement by realpath, the stat interval, bytecode, a module never run or
 * sent as a script, the log line of a refusal naming the chain, and `lodestone check`.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { cliPath, run, tempDir } from '../helpers/lodestone.js';
import { LANGUAGES, startSandbox } from '../helpers/sandbox.js';
import { waitFor } from '../shared/poll.js';

const USE = {
  lua: 'local s = require("util.strings")\nprint(s.shout(request.query.w or "hi"))',
  js: 'const s = require("util.strings");\nprint(s.shout(request.query.w ?? "hi"));',
} as const;
const MODULE = {
  lua: (suffix: string) => `local M = {}\nfunction M.shout(s) return s:upper() .. "${suffix}" end\nreturn M`,
  js: (suffix: string) => `exports.shout = (s) => s.toUpperCase() + "${suffix}";`,
} as const;

for (const lang of LANGUAGES) {
  test(`${lang}: a script requires <root>/lib/util/strings.${lang}; a changed module is picked up on the stat interval`, async (t) => {
    const sb = await startSandbox(t, { config: { statIntervalMs: 0 } });
    sb.script(`use.${lang}`, USE[lang]);
    sb.script(`lib/util/strings.${lang}`, MODULE[lang]('!'));
    const first = await sb.get(`use.${lang}`, 'w=alice');
    assert.equal(first.status, 200, first.stderr + sb.lodestone.log());
    assert.equal(first.body, 'ALICE!\n');
    sb.script(`lib/util/strings.${lang}`, MODULE[lang]('?!'));
    assert.equal((await sb.get(`use.${lang}`, 'w=bob')).body, 'BOB?!\n');
  });

  test(`${lang}: a module is not a script: requested, it is refused (403); sendfile() will not send it`, async (t) => {
    const sb = await startSandbox(t);
    sb.script(`lib/util/strings.${lang}`, MODULE[lang]('') + (lang === 'lua' ? '\n-- SECRET' : '\n// SECRET'));
    const direct = await sb.get(`lib/util/strings.${lang}`);
    assert.equal(direct.status, 403, direct.stderr);
    assert.ok(sb.logged('LS_SCRIPT_FORBIDDEN').some((l) => l.includes('is a module (in modules.paths), not a script')), sb.lodestone.log());
    sb.script(`send.${lang}`, lang === 'lua' ? 'return sendfile("lib/util/strings.lua")' : 'return sendfile("lib/util/strings.js");');
    const sent = await sb.get(`send.${lang}`);
    assert.equal(sent.status, 403, sent.stderr);
    assert.doesNotMatch(sent.body, /SECRET/);
    assert.equal(sent.headers['x-sendfile'], undefined);
  });

  test(`${lang}: a module symlinked out of modules.paths, or missing, is a 500 whose log line names the script line and the chain`, async (t) => {
    const sb = await startSandbox(t);
    const outside = path.join(tempDir(t), `evil.${lang}`);
    fs.writeFileSync(outside, lang === 'lua' ? 'return "escaped"' : 'module.exports = "escaped";');
    fs.mkdirSync(path.join(sb.root, 'lib'), { recursive: true });
    fs.symlinkSync(outside, path.join(sb.root, 'lib', `evil.${lang}`));
    sb.script(`lib/a.${lang}`, lang === 'lua' ? 'return require("evil")' : 'module.exports = require("evil");');
    sb.script(`escape.${lang}`, lang === 'lua' ? 'print("start")\nprint(require("a"))' : 'print("start");\nprint(require("a"));');
    const escaped = await sb.get(`escape.${lang}`);
    assert.equal(escaped.status, 500);
    assert.doesNotMatch(escaped.body, /escaped/);
    const line = sb.logged('LS_SCRIPT_ERROR').find((l) => l.includes(`escape.${lang}`));
    assert.ok(line, sb.lodestone.log());
    assert.match(line, new RegExp(`script=\\S+/escape\\.${lang}:2$`));
    assert.match(line, new RegExp(`module 'evil' is outside modules.paths: .*evil\\.${lang} resolves to ${outside.replace(/[.]/g, '\\.')} \\(escape\\.${lang} -> a -> evil\\)`));

    sb.script(`missing.${lang}`, lang === 'lua' ? '\n\nrequire("no.such")' : '\n\nrequire("no.such");');
    const missing = await sb.get(`missing.${lang}`);
    assert.equal(missing.status, 500);
    const gone = sb.logged('LS_SCRIPT_ERROR').find((l) => l.includes(`missing.${lang}`));
    assert.ok(gone, sb.lodestone.log());
    assert.match(gone, new RegExp(`module 'no\\.such' not found: no no/such\\.${lang} in modules\\.paths \\(.*/lib\\) \\(missing\\.${lang} -> no\\.such\\)`));
    assert.match(gone, new RegExp(`script=\\S+/missing\\.${lang}:3$`));
    await sb.assertAlive();
  });
}

test('a lib/ made after the server started is searched from the next check on', async (t) => {
  const sb = await startSandbox(t, { config: { statIntervalMs: 0 } });
  sb.script('late.lua', 'print(require("late").word)');
  const before = await sb.get('late.lua');
  assert.equal(before.status, 500);
  assert.ok(sb.logged('LS_SCRIPT_ERROR').some((l) => l.includes("module 'late' not found: no late.lua in modules.paths (none exists)")), sb.lodestone.log());
  sb.script('lib/late.lua', 'return { word = "found" }');
  const after = await sb.get('late.lua');
  assert.equal(after.status, 200, after.stderr + sb.lodestone.log());
  assert.equal(after.body, 'found\n');
});

test('modules.paths: directories outside the root, relative to the config file, searched in order', async (t) => {
  const dir = tempDir(t);
  for (const [file, text] of Object.entries({
    'first/shared.lua': 'return "first"',
    'second/shared.lua': 'return "second"',
    'second/only.lua': 'return "only in second"',
    'second/only.js': 'module.exports = "only in second (js)";',
  })) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), text);
  }
  const config = path.join(dir, 'lodestone.json');
  fs.writeFileSync(config, JSON.stringify({ modules: { paths: ['first', 'second'] } }));
  const sb = await startSandbox(t, { args: ['--config', config] });
  sb.script('both.lua', 'print(require("shared"), require("only"))');
  sb.script('both.js', 'print(require("only"));');
  const lua = await sb.get('both.lua');
  assert.equal(lua.status, 200, lua.stderr + sb.lodestone.log());
  assert.equal(lua.body, 'first\tonly in second\n');
  assert.equal((await sb.get('both.js')).body, 'only in second (js)\n');
  // <root>/lib is not searched when modules.paths names other directories.
  sb.script('lib/local.lua', 'return "root lib"');
  sb.script('local.lua', 'print(pcall(function() return require("local") end))');
  assert.match((await sb.get('local.lua')).body, /^false\tmodule 'local' not found: no local\.lua in modules\.paths/);
});

test('modules are compiled once and kept as bytecode in cacheDir like scripts', async (t) => {
  const cacheDir = path.join(tempDir(t), 'bytecode');
  const sb = await startSandbox(t, { args: ['--cache-dir', cacheDir, '--log-level', 'debug'], config: { statIntervalMs: 0 } });
  sb.script('lib/m.lua', 'return { n = 42 }');
  sb.script('use.lua', 'print(require("m").n)');
  assert.equal((await sb.get('use.lua')).body, '42\n');
  assert.equal((await sb.get('use.lua')).body, '42\n');
  assert.equal(sb.lodestone.log().match(/module compiled/g)?.length, 1, 'compiled once');
  // One bytecode file for the script and one for the module.
  assert.equal(fs.readdirSync(cacheDir).filter((f) => f.endsWith('.luac')).length, 2, fs.readdirSync(cacheDir).join(' '));
  // The same source written again (a new mtime) is loaded from its bytecode, not parsed.
  sb.script('lib/m.lua', 'return { n = 42 }');
  fs.utimesSync(path.join(sb.root, 'lib/m.lua'), new Date(), new Date(Date.now() + 5000));
  assert.equal((await sb.get('use.lua')).body, '42\n');
  // The line is in the server's stderr pipe before the response leaves, but the test may read
  // the response first: under load this assertion, made at once, failed one full run in several.
  await waitFor(() => /module loaded from bytecode cache script=\S+\/lib\/m\.lua/.test(sb.lodestone.log()), 5000, () => sb.lodestone.log());
  assert.equal(sb.lodestone.log().match(/module compiled/g)?.length, 1);
});

test('lodestone check compiles modules as modules: a broken one fails with its file:line; a good site counts them', (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(path.join(dir, 'lib', 'util'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'index.lua'), 'print(require("util.strings").x)');
  fs.writeFileSync(path.join(dir, 'lib', 'util', 'strings.lua'), 'return { x = 1 }');
  fs.writeFileSync(path.join(dir, 'lib', 'ok.js'), 'exports.y = 2;');
  const ok = run(process.execPath, [cliPath, 'check', '--root', dir]);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout.toString(), /configuration ok, 1 script and 2 modules compile/);

  // A JS module's top level cannot await: a module compiled as a script would have passed.
  fs.writeFileSync(path.join(dir, 'lib', 'bad.js'), 'const x = 1;\nawait sleep(1);');
  fs.writeFileSync(path.join(dir, 'lib', 'util', 'strings.lua'), 'return {\n x = = 1 }');
  const bad = run(process.execPath, [cliPath, 'check', '--root', dir]);
  assert.equal(bad.status, 1, bad.stderr);
  assert.match(bad.stderr, /lib\/util\/strings\.lua:2: /);
  assert.match(bad.stderr, /lib\/bad\.js:2: SyntaxError/);
  assert.match(bad.stdout.toString(), /1 script and 3 modules checked, 2 errors/);
});
