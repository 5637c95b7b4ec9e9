/**
 * The config file format (TOML; JSON for a .json file), the process-manager and log fields, and
 * the one-line errors the CLI prints for each bad value (exit 2).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { loadConfig } from '../../runtime/cli/config.js';
import { configError } from '../helpers/config.js';
import { cliPath, run, tempDir } from '../helpers/lodestone.js';
import { repoRoot } from '../shared/repo.js';


test('a TOML file: sections map onto nested fields, comments allowed, paths relative to the file', (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(path.join(dir, 'www'));
  const file = path.join(dir, 'lodestone.toml');
  fs.writeFileSync(
    file,
    [
      '# Lodestone',
      'listen = "unix:/run/lodestone.sock"',
      'root = "www"',
      'workers = 3',
      'workerMaxRequests = 500',
      'watchdogMs = 5000',
      'logFile = "error.log"',
      'accessLog = "access.log"',
      '[limits]',
      'maxBodyBytes = 1048576 # 1 MiB',
      '[scriptLimits]',
      'cpuMs = 200',
      '[backends.php]',
      'servers = ["127.0.0.1:9001"]',
    ].join('\n'),
  );
  const config = loadConfig({ config: file }, {});
  assert.deepEqual(config.listen, { kind: 'unix', path: '/run/lodestone.sock' });
  assert.equal(config.root, path.join(dir, 'www'));
  assert.equal(config.workers, 3);
  assert.equal(config.workerMaxRequests, 500);
  assert.equal(config.watchdogMs, 5000);
  assert.equal(config.logFile, path.join(dir, 'error.log'));
  assert.equal(config.accessLog, path.join(dir, 'access.log'));
  assert.equal(config.limits.maxBodyBytes, 1048576);
  assert.equal(config.scriptLimits.cpuMs, 200);
  assert.ok(config.backends.has('php'));
});

test('a .json file is still read as JSON', (t) => {
  const file = path.join(tempDir(t), 'lodestone.json');
  fs.writeFileSync(file, JSON.stringify({ workers: 2, logLevel: 'warn' }));
  const config = loadConfig({ config: file }, {});
  assert.equal(config.workers, 2);
  assert.equal(config.logLevel, 'warn');
});

test('a TOML syntax error is one line with file:line:column', (t) => {
  const file = path.join(tempDir(t), 'bad.toml');
  fs.writeFileSync(file, 'root = "."\nworkers = [\n  oops\n');
  const message = configError(() => loadConfig({ config: file }, {}));
  assert.equal(message.split('\n').length, 1, message);
  assert.match(message, new RegExp(`^--config: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3:\\d+: `));
});

test('workers: one per core by default, 0 for one process, PHP_FCGI_CHILDREN, --http runs alone', () => {
  assert.equal(loadConfig({}, {}).workers, os.availableParallelism());
  assert.equal(loadConfig({ workers: '0' }, {}).workers, 0);
  assert.equal(loadConfig({}, { PHP_FCGI_CHILDREN: '4' }).workers, 4);
  assert.equal(loadConfig({ workers: '2' }, { PHP_FCGI_CHILDREN: '4' }).workers, 2);
  assert.equal(loadConfig({}, { PHP_FCGI_MAX_REQUESTS: '100' }).workerMaxRequests, 100);
  assert.equal(loadConfig({ http: '127.0.0.1:0' }, {}).workers, 0);
  assert.match(configError(() => loadConfig({ http: '127.0.0.1:0', workers: '2' }, {})), /^--http: /);
  assert.match(configError(() => loadConfig({ workers: '0', maxRequests: '10' }, {})), /^--max-requests: .*workers must be at least 1/);
  assert.match(configError(() => loadConfig({ workers: 'many' }, {})), /^--workers: must be an integer/);
  assert.match(configError(() => loadConfig({}, { PHP_FCGI_CHILDREN: '-1' })), /^PHP_FCGI_CHILDREN: /);
});

test('bad log and watchdog fields are named', (t) => {
  const dir = tempDir(t);
  const toml = (body: string): string => {
    const file = path.join(dir, `c${Math.random().toString(36).slice(2)}.toml`);
    fs.writeFileSync(file, body);
    return file;
  };
  assert.match(configError(() => loadConfig({ config: toml('watchdogMs = 500') }, {})), /^watchdogMs: must be 0 \(off\) or more than scriptLimits.cpuMs/);
  assert.match(configError(() => loadConfig({ config: toml('logFile = "/nonexistent/dir/x.log"') }, {})), /^logFile: directory \/nonexistent\/dir does not exist/);
  assert.match(configError(() => loadConfig({ accessLog: dir }, {})), /^--access-log: .* is a directory/);
  assert.match(configError(() => loadConfig({ config: toml('workerz = 2') }, {})), /^workerz: unknown field/);
});

test('the CLI prints one line and exits 2 for each bad config', (t) => {
  const dir = tempDir(t);
  const cases: Array<[string, RegExp]> = [
    ['workers = "two"', /workers: must be an integer/],
    ['[limits]\nmaxBodyBytes = -1', /limits\.maxBodyBytes: /],
    ['root = [', /--config: .*:1:\d+: /],
    ['logLevel = "loud"', /logLevel: /],
  ];
  for (const [body, pattern] of cases) {
    const file = path.join(dir, 'lodestone.toml');
    fs.writeFileSync(file, body);
    const r = run(process.execPath, [cliPath, 'serve', '--config', file, '--diagnostic'], { env: { ...process.env } });
    assert.equal(r.status, 2, `${body}: ${r.stderr}`);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^lodestone: LS_CONFIG_INVALID: /);
    assert.match(lines[0]!, pattern);
  }
});

test("README's TOML example loads", (t) => {
  const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
  const block = /## Configuration[\s\S]*?```toml\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, 'a ```toml block under ## Configuration');
  const dir = tempDir(t);
  // Its paths are a real server's: point them into the temp dir.
  const text = block[1]!.replace(/"\/srv\/www"/g, JSON.stringify(dir)).replace(/"\/var\/log\/lodestone\//g, `"${dir}/`);
  const file = path.join(dir, 'lodestone.toml');
  fs.writeFileSync(file, text);
  const config = loadConfig({ config: file }, {});
  assert.equal(config.root, dir);
});

test('a variable set but blank counts as unset, as an empty one did', () => {
  assert.equal(loadConfig({ workers: '2' }, { PHP_FCGI_MAX_REQUESTS: ' ' }).workerMaxRequests, 0);
  assert.equal(loadConfig({}, { PHP_FCGI_CHILDREN: '', FCGI_WEB_SERVER_ADDRS: ' ' }).webServerAddrs, null);
});
