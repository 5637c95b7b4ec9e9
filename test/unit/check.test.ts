/**
 * `lodestone check` through the real CLI: broken scripts are listed with file:line and fail the
 * run, good ones are not listed, a bad config is one line and exit 2, the repo's own scripts
 * compile, and nothing is written to the bytecode cache directory.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { cliPath, run, tempDir } from '../helpers/lodestone.js';
import { repoRoot } from '../shared/repo.js';

function check(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = run(process.execPath, [cliPath, 'check', ...args], { timeoutMs: 15_000 });
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr };
}

function write(root: string, rel: string, text: string): string {
  const file = path.join(root, rel);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
}

test('broken scripts in a subdirectory: listed with file:line, exit 1; good ones not listed', (t) => {
  const root = tempDir(t);
  write(root, 'good.lua', 'print("hello")\n');
  write(root, 'good.js', 'write("hello");\nreturn 200;\n');
  const badLua = write(root, 'sub/bad.lua', 'local a = 1\nlocal b = 2\nif then end\n');
  const badJs = write(root, 'sub/deeper/bad.js', 'const a = 1;\nconst = 2;\n');
  // Not scripts, or in places the walk skips: never compiled.
  write(root, 'notes.txt', 'if then end\n');
  write(root, '.git/hooks/x.lua', 'if then end\n');
  write(root, 'node_modules/pkg/index.js', 'const = ;\n');
  const cacheDir = path.join(tempDir(t), 'bytecode');

  const r = check(['--root', root, '--cache-dir', cacheDir]);
  assert.equal(r.status, 1, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 2, r.stderr);
  assert.ok(lines.some((l) => l.startsWith(`${badLua}:3: `) && /near 'then'/.test(l)), r.stderr);
  assert.ok(lines.some((l) => l.startsWith(`${badJs}:2: `) && /SyntaxError/.test(l)), r.stderr);
  assert.doesNotMatch(r.stderr, /good\./);
  assert.equal(r.stdout, 'lodestone: 4 scripts checked, 2 errors\n');
  // No server pieces: nothing may create the bytecode cache.
  assert.equal(fs.existsSync(cacheDir), false);
});

test('all scripts compile: exit 0 and a summary on stdout', (t) => {
  const root = tempDir(t);
  write(root, 'a.lua', 'return 204\n');
  write(root, 'b/c.js', 'print(request.method);\n');
  const r = check(['--root', root]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.equal(r.stdout, 'lodestone: configuration ok, 2 scripts compile\n');
});

test('with --script only the front controller is compiled (nothing else under the root runs)', (t) => {
  const root = tempDir(t);
  write(root, 'browser.js', 'this is not a script for Lodestone {\n');
  const front = write(tempDir(t), 'front.lua', 'print(1)\nprint(\n');
  const r = check(['--root', root, '--script', front]);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`^${front.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+: `));
  assert.doesNotMatch(r.stderr, /browser\.js/);
  assert.equal(r.stdout, 'lodestone: 1 script checked, 1 error\n');
});

test('a bad config: one LS_CONFIG_INVALID line, exit 2', (t) => {
  const dir = tempDir(t);
  const config = write(dir, 'lodestone.json', JSON.stringify({ root: dir, statIntervalMs: -1 }));
  const r = check(['--config', config]);
  assert.equal(r.status, 2);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^lodestone: LS_CONFIG_INVALID: statIntervalMs: .*\n$/);
});

test("the repo's scripts/ all compile", () => {
  const r = check(['--root', path.join(repoRoot, 'scripts')]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^lodestone: configuration ok, \d+ scripts and 2 modules compile\n$/);
});

test('a JS module that runs per request gets a note with the reason; shared ones and Lua modules none; still exit 0', (t) => {
  const root = tempDir(t);
  write(root, 'index.js', 'print(require("shared").twice(2), require("counter").inc());\n');
  write(root, 'lib/shared.js', 'exports.twice = (x) => x * 2;\n');
  const counter = write(root, 'lib/counter.js', 'let n = 0;\nexports.inc = () => ++n;\n');
  write(root, 'lib/util.lua', 'local M = {}\nlocal n = 0\nfunction M.inc() n = n + 1 return n end\nreturn M\n');
  const r = check(['--root', root]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
  const real = fs.realpathSync(counter);
  assert.equal(
    r.stdout,
    `${real}: note: runs per request, not shared: line 2: a function assigns 'n', a variable of the module's top level\n` +
      'lodestone: configuration ok, 1 script and 3 modules compile\n',
  );
});
