/** Configuration: precedence, validation naming the field, and the CLI's one-line exit 2. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { loadConfig } from '../../runtime/cli/config.js';
import { configError } from '../helpers/config.js';
import { defaultLimits } from '../../runtime/fastcgi/server/limits.js';
import { parseListen } from '../../runtime/listen.js';
import { cliPath, run, tempDir } from '../helpers/lodestone.js';

function writeConfig(dir: string, value: unknown): string {
  const file = path.join(dir, 'lodestone.json');
  fs.writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
  return file;
}


test('defaults: no file, no flags', () => {
  const config = loadConfig({}, {});
  assert.equal(config.listen, null);
  assert.equal(config.root, process.cwd());
  assert.equal(config.logLevel, 'info');
  assert.equal(config.webServerAddrs, null);
  assert.deepEqual(config.limits, defaultLimits);
  assert.ok(Object.isFrozen(config));
});

test('file values, with paths relative to the file and flags winning over the file', (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(path.join(dir, 'scripts'));
  const file = writeConfig(dir, {
    listen: 'tcp:127.0.0.1:9001',
    root: 'scripts',
    logLevel: 'debug',
    socketMode: '0660',
    webServerAddrs: ['127.0.0.1'],
    limits: { maxBodyBytes: 1024 },
  });
  const config = loadConfig({ config: file }, {});
  assert.deepEqual(config.listen, { kind: 'tcp', host: '127.0.0.1', port: 9001 });
  assert.equal(config.root, path.join(dir, 'scripts'));
  assert.equal(config.socketMode, 0o660);
  assert.deepEqual(config.webServerAddrs, ['127.0.0.1']);
  assert.equal(config.limits.maxBodyBytes, 1024);
  assert.equal(config.limits.maxParams, defaultLimits.maxParams);
  const flagged = loadConfig({ config: file, listen: 'unix:/tmp/x.sock', logLevel: 'warn' }, {});
  assert.deepEqual(flagged.listen, { kind: 'unix', path: '/tmp/x.sock' });
  assert.equal(flagged.logLevel, 'warn');
});

test('script settings: front controller relative to the file, limits, cache', (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'front.lua'), 'print("hi")');
  const file = writeConfig(dir, {
    script: 'front.lua',
    statIntervalMs: 0,
    cacheDir: 'bytecode',
    scriptLimits: { cpuMs: 50 },
    scriptCache: { maxEntries: 10 },
  });
  const config = loadConfig({ config: file }, {});
  assert.equal(config.script, path.join(dir, 'front.lua'));
  assert.equal(config.statIntervalMs, 0);
  assert.equal(config.cacheDir, path.join(dir, 'bytecode'));
  assert.equal(config.scriptLimits.cpuMs, 50);
  assert.equal(config.scriptLimits.wallMs, 30_000);
  assert.equal(config.scriptCache.maxEntries, 10);
  // Fields not given keep their defaults: the script size cap and the log bounds.
  assert.equal(config.scriptCache.maxScriptBytes, 4 * 1024 * 1024);
  assert.equal(config.scriptLimits.logBytes, 64 * 1024);
  assert.equal(config.scriptLimits.logLineBytes, 8 * 1024);
  assert.equal(loadConfig({ config: writeConfig(dir, { scriptCache: { maxScriptBytes: 1024 } }) }, {}).scriptCache.maxScriptBytes, 1024);
  assert.equal(loadConfig({}, {}).statIntervalMs, 1000);
  assert.deepEqual(loadConfig({}, {}).rawOutput, new Set());
  const raw = loadConfig({ config: writeConfig(dir, { root: '.', rawOutput: ['front.lua'] }) }, {});
  assert.deepEqual(raw.rawOutput, new Set([fs.realpathSync(path.join(dir, 'front.lua'))]));
  assert.equal(loadConfig({ config: writeConfig(dir, { rawOutput: true }) }, {}).rawOutput, true);
  assert.match(configError(() => loadConfig({ script: path.join(dir, 'nope.js') }, {})), /^--script: /);
});

test('FCGI_WEB_SERVER_ADDRS from the environment wins over the file', (t) => {
  const file = writeConfig(tempDir(t), { webServerAddrs: ['127.0.0.1'] });
  const config = loadConfig({ config: file }, { FCGI_WEB_SERVER_ADDRS: '10.0.0.1, ::1' });
  assert.deepEqual(config.webServerAddrs, ['10.0.0.1', '::1']);
  assert.match(configError(() => loadConfig({}, { FCGI_WEB_SERVER_ADDRS: 'example.com' })), /^FCGI_WEB_SERVER_ADDRS: /);
});

test('each bad field is named in the message', (t) => {
  const dir = tempDir(t);
  const cases: Array<[unknown, RegExp]> = [
    [{ limits: { maxBodyBytes: -1 } }, /^limits\.maxBodyBytes: must be a positive integer/],
    [{ limits: { maxBodyBytes: '1k' } }, /^limits\.maxBodyBytes: /],
    [{ limits: { nope: 1 } }, /^limits\.nope: unknown field/],
    [{ limits: 5 }, /^limits: must be an object/],
    [{ listen: 'http:1' }, /^listen: unknown listen spec/],
    [{ listen: 'tcp:127.0.0.1:99999' }, /^listen: tcp: port 99999/],
    [{ root: '/definitely/not/here' }, /^root: \/definitely\/not\/here is not a directory/],
    [{ logLevel: 'loud' }, /^logLevel: must be one of/],
    [{ socketMode: 660 }, /^socketMode: /],
    [{ webServerAddrs: 'x' }, /^webServerAddrs: /],
    [{ diagnostic: 'yes' }, /^diagnostic: must be true or false/],
    [{ colour: 'blue' }, /^colour: unknown field/],
    [{ statusPath: 'status' }, /^statusPath: must be a path starting with \//],
    [{ slowRequestMs: -5 }, /^slowRequestMs: must be an integer from 0/],
    [{ scriptLimits: { cpuMs: 0 } }, /^scriptLimits\.cpuMs: must be a positive integer/],
    [{ scriptLimits: { heap: 1 } }, /^scriptLimits\.heap: unknown field/],
    [{ scriptCache: { maxEntries: 'many' } }, /^scriptCache\.maxEntries: /],
    [{ scriptCache: { maxScriptBytes: 0 } }, /^scriptCache\.maxScriptBytes: must be a positive integer \(got 0\)$/],
    [{ scriptCache: { maxScriptBytes: '4M' } }, /^scriptCache\.maxScriptBytes: must be a positive integer \(got "4M"\)$/],
    [{ scriptCache: { maxScriptBytes: 1.5 } }, /^scriptCache\.maxScriptBytes: must be a positive integer/],
    [{ scriptLimits: { logBytes: -1 } }, /^scriptLimits\.logBytes: must be a positive integer/],
    [{ scriptLimits: { logLineBytes: 'long' } }, /^scriptLimits\.logLineBytes: must be a positive integer/],
    [{ statIntervalMs: -1 }, /^statIntervalMs: must be a non-negative integer/],
    [{ rawOutput: 'yes' }, /^rawOutput: must be true, false, or an array/],
    [{ rawOutput: ['missing.lua'] }, /^rawOutput: .*missing\.lua does not exist/],
    [{ script: 'no-such-front.lua' }, /^script: .*no-such-front\.lua is not a file/],
    ['{ not json', /^--config: .* is not valid JSON/],
    [[1, 2], /^--config: .* must hold a JSON object/],
  ];
  for (const [value, pattern] of cases) {
    const file = writeConfig(dir, value);
    assert.match(configError(() => loadConfig({ config: file }, {})), pattern);
  }
  assert.match(configError(() => loadConfig({ config: path.join(dir, 'missing.json') }, {})), /^--config: cannot read/);
  assert.match(configError(() => loadConfig({ listen: 'tcp:nohost' }, {})), /^--listen: tcp: needs HOST:PORT/);
  assert.match(configError(() => loadConfig({ logLevel: 'x' }, {})), /^--log-level: /);
});

test('listen specs', () => {
  assert.deepEqual(parseListen('tcp:[::1]:9000'), { kind: 'tcp', host: '::1', port: 9000 });
  assert.deepEqual(parseListen('tcp:localhost:0'), { kind: 'tcp', host: 'localhost', port: 0 });
  assert.deepEqual(parseListen('fd:0'), { kind: 'fd', fd: 0 });
  assert.match(parseListen('fd:') as string, /^fd: needs/);
  assert.match(parseListen('unix:') as string, /^unix: needs/);
  assert.match(parseListen('systemd', {}) as string, /^systemd: no socket passed/);
  assert.deepEqual(parseListen('systemd', { LISTEN_PID: String(process.pid), LISTEN_FDS: '1' }), { kind: 'fd', fd: 3 });
});

test('the CLI turns a bad config into one line on stderr and exit code 2', (t) => {
  const file = writeConfig(tempDir(t), { limits: { requestTimeoutMs: 0 } });
  const r = run(process.execPath, [cliPath, 'serve', '--config', file, '--listen', 'tcp:127.0.0.1:0']);
  assert.equal(r.status, 2);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /^lodestone: LS_CONFIG_INVALID: limits\.requestTimeoutMs: must be a positive integer/);
});

test('the CLI: a bad scriptCache.maxScriptBytes is one line naming the field, exit code 2', (t) => {
  const file = writeConfig(tempDir(t), { scriptCache: { maxScriptBytes: -4 } });
  const r = run(process.execPath, [cliPath, 'serve', '--config', file, '--listen', 'tcp:127.0.0.1:0']);
  assert.equal(r.status, 2);
  assert.equal(r.stderr, 'lodestone: LS_CONFIG_INVALID: scriptCache.maxScriptBytes: must be a positive integer (got -4)\n');
});

test('the CLI rejects unknown options and commands with exit code 2', () => {
  const unknownOption = run(process.execPath, [cliPath, 'serve', '--bogus']);
  assert.equal(unknownOption.status, 2);
  assert.match(unknownOption.stderr, /bogus/);
  const unknownCommand = run(process.execPath, [cliPath, 'launch']);
  assert.equal(unknownCommand.status, 2);
  assert.match(unknownCommand.stderr, /unknown command "launch"/);
  const version = run(process.execPath, [cliPath, '--version']);
  assert.equal(version.status, 0);
  assert.match(version.stdout.toString(), /^lodestone \d+\.\d+\.\d+\n$/);
});

test('files: roots and accel resolved to real paths, defaults, flags winning, env pool size', (t) => {
  const dir = tempDir(t);
  for (const d of ['www', 'files', 'more']) fs.mkdirSync(path.join(dir, d));
  fs.symlinkSync(path.join(dir, 'files'), path.join(dir, 'files-link'));
  const defaults = loadConfig({ root: path.join(dir, 'www') }, {});
  assert.deepEqual(defaults.files.roots, [path.join(dir, 'www')]);
  assert.equal(defaults.files.statThreads, 4);
  assert.equal(defaults.files.statCacheMs, 1000);
  assert.equal(defaults.files.sendfile, 'auto');
  assert.equal(defaults.files.prefetch, null);
  assert.equal(defaults.statAccel, false);
  assert.equal(loadConfig({ root: dir }, { UV_THREADPOOL_SIZE: '12' }).files.statThreads, 12);

  const file = writeConfig(dir, {
    root: 'www',
    statAccel: true,
    files: {
      roots: ['files-link', 'more'],
      statThreads: 20,
      statCacheMs: 0,
      sendfile: 'x-accel-redirect',
      accel: { 'files-link': '/protected/' },
      prefetch: { read: true },
    },
  });
  const config = loadConfig({ config: file }, {});
  assert.deepEqual(config.files.roots, [path.join(dir, 'files'), path.join(dir, 'more')]);
  assert.deepEqual(config.files.accel, [[path.join(dir, 'files'), '/protected/']]);
  assert.deepEqual(config.files.prefetch, { param: 'SCRIPT_FILENAME', read: true });
  assert.equal(config.files.statThreads, 20);
  assert.equal(config.statAccel, true);
  const flagged = loadConfig({ config: file, statThreads: '3', fileRoots: [path.join(dir, 'www')], sendfile: 'x-sendfile2' }, {});
  assert.equal(flagged.files.statThreads, 3);
  assert.deepEqual(flagged.files.roots, [path.join(dir, 'www')]);
  assert.equal(flagged.files.sendfile, 'x-sendfile2');
  assert.ok(Object.isFrozen(config.files) && Object.isFrozen(config.files.roots));
});

test('files: each bad field is named', (t) => {
  const dir = tempDir(t);
  const cases: Array<[unknown, RegExp]> = [
    [{ files: [] }, /^files: must be an object/],
    [{ files: { nope: 1 } }, /^files\.nope: unknown field/],
    [{ files: { roots: [] } }, /^files\.roots: must be a non-empty array/],
    [{ files: { roots: ['missing-dir'] } }, /^files\.roots: .*missing-dir is not a directory/],
    [{ files: { statThreads: 0 } }, /^files\.statThreads: must be an integer from 1 to 1024/],
    [{ files: { statThreads: 2000 } }, /^files\.statThreads: /],
    [{ files: { statCacheMs: -1 } }, /^files\.statCacheMs: /],
    [{ files: { sendfile: 'x-send' } }, /^files\.sendfile: must be one of auto, /],
    [{ files: { accel: ['/x'] } }, /^files\.accel: must be an object/],
    [{ files: { accel: { '.': 'protected' } } }, /^files\.accel\..: must be an internal URI prefix/],
    [{ files: { prefetch: { param: '' } } }, /^files\.prefetch\.param: /],
    [{ files: { prefetch: { read: 'yes' } } }, /^files\.prefetch\.read: /],
    [{ files: { prefetch: { when: 1 } } }, /^files\.prefetch\.when: unknown field/],
    [{ statAccel: 1 }, /^statAccel: must be true or false/],
  ];
  for (const [value, pattern] of cases) {
    const file = writeConfig(dir, value);
    assert.match(configError(() => loadConfig({ config: file }, {})), pattern, JSON.stringify(value));
  }
  assert.match(configError(() => loadConfig({ statThreads: 'many' }, {})), /^--stat-threads: must be an integer/);
  assert.match(configError(() => loadConfig({ sendfile: 'nope' }, {})), /^--sendfile: must be one of/);
  assert.match(configError(() => loadConfig({ fileRoots: [path.join(dir, 'nope')] }, {})), /^--file-root: /);
});

test('cache and backends: defaults, file values, flags winning, paths relative to the file', (t) => {
  const defaults = loadConfig({}, {});
  assert.equal(defaults.cache.backend, 'memory');
  assert.equal(defaults.backends.size, 0);

  const dir = tempDir(t);
  const file = writeConfig(dir, {
    cache: { backend: 'redis', maxBytes: 4096, redis: { socket: 'run/redis.sock', prefix: 'site:', timeoutMs: 100 } },
    backends: { php: { servers: ['unix:php.sock', '127.0.0.1:9001'], maxConnections: 4, keepAlive: false } },
  });
  const c = loadConfig({ config: file }, {});
  assert.deepEqual(c.cache.redis, { url: null, socket: path.join(dir, 'run/redis.sock'), prefix: 'site:', timeoutMs: 100 });
  assert.equal(c.cache.maxBytes, 4096);
  const php = c.backends.get('php')!;
  assert.deepEqual(php.servers, [`unix:${path.join(dir, 'php.sock')}`, '127.0.0.1:9001']);
  assert.equal(php.maxConnections, 4);
  assert.equal(php.keepAlive, false);
  assert.equal(php.disableTimeMs, 1000, 'unset fields keep their defaults');

  const flags = loadConfig({ config: file, cache: 'redis://127.0.0.1:6390/2', backends: ['php=127.0.0.1:9100', 'api=unix:/run/api.sock'] }, {});
  assert.deepEqual([flags.cache.backend, flags.cache.redis.url, flags.cache.redis.socket], ['redis', 'redis://127.0.0.1:6390/2', null]);
  assert.deepEqual(flags.backends.get('php')!.servers, ['127.0.0.1:9100']);
  assert.equal(flags.backends.get('php')!.maxConnections, 4, 'the flag replaces servers, not the pool settings');
  assert.deepEqual(flags.backends.get('api')!.servers, ['unix:/run/api.sock']);
  assert.equal(loadConfig({ config: file, cache: 'memory' }, {}).cache.backend, 'memory');
});

test('cache and backends: each bad field is named', (t) => {
  const dir = tempDir(t);
  const cases: Array<[unknown, RegExp]> = [
    [{ cache: 1 }, /^cache: must be an object/],
    [{ cache: { backend: 'memcached' } }, /^cache\.backend: must be "memory" or "redis"/],
    [{ cache: { size: 1 } }, /^cache\.size: unknown field/],
    [{ cache: { maxBytes: 10 } }, /^cache\.maxBytes: must be an integer from 1024/],
    [{ cache: { backend: 'redis' } }, /^cache\.redis: give exactly one of url and socket/],
    [{ cache: { backend: 'redis', redis: { url: 'http://x' } } }, /^cache\.redis\.url: must be a redis:\/\//],
    [{ cache: { redis: { host: 'x' } } }, /^cache\.redis\.host: unknown field/],
    [{ cache: { redis: { timeoutMs: 0 } } }, /^cache\.redis\.timeoutMs: /],
    [{ backends: [] }, /^backends: must be an object/],
    [{ backends: { php: 'unix:/x' } }, /^backends\.php: must be an object with "servers"/],
    [{ backends: { php: { servers: [] } } }, /^backends\.php\.servers: must be a non-empty array/],
    [{ backends: { php: { servers: ['nonsense'] } } }, /^backends\.php\.servers: "nonsense": /],
    [{ backends: { php: { servers: ['unix:/x'], retries: 2 } } }, /^backends\.php\.retries: unknown field/],
    [{ backends: { php: { servers: ['unix:/x'], keepAlive: 'yes' } } }, /^backends\.php\.keepAlive: must be true or false/],
    [{ backends: { php: { servers: ['unix:/x'], maxConnections: 0 } } }, /^backends\.php\.maxConnections: /],
  ];
  for (const [value, pattern] of cases) {
    const file = writeConfig(dir, value);
    assert.match(configError(() => loadConfig({ config: file }, {})), pattern);
  }
  assert.match(configError(() => loadConfig({ cache: 'memcached://x' }, {})), /^--cache: must be "memory", a redis:\/\/ URL/);
  assert.match(configError(() => loadConfig({ backends: ['php'] }, {})), /^--backend: expected NAME=SERVER/);
  assert.match(configError(() => loadConfig({ backends: ['php=nonsense'] }, {})), /^--backend: "nonsense": /);
});

test('cache.fileDir: inside files.roots, resolved; outside or without a dir: named errors', (t) => {
  const dir = fs.realpathSync(tempDir(t));
  fs.mkdirSync(path.join(dir, 'files/bodies'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'elsewhere'));
  const ok = loadConfig({ config: writeConfig(dir, { files: { roots: ['files'] }, cache: { fileDir: 'files/bodies' } }) }, {});
  assert.deepEqual(ok.cacheFiles, { dir: path.join(dir, 'files/bodies'), minBytes: 256 * 1024 });
  assert.equal(loadConfig({}, {}).cacheFiles, null);
  const outside = writeConfig(dir, { files: { roots: ['files'] }, cache: { fileDir: 'elsewhere' } });
  assert.match(configError(() => loadConfig({ config: outside }, {})), /^cache\.fileDir: .*elsewhere is not inside files\.roots/);
  const lonely = writeConfig(dir, { cache: { fileMinBytes: 10 } });
  assert.match(configError(() => loadConfig({ config: lonely }, {})), /^cache\.fileMinBytes: needs cache\.fileDir/);
  const missing = writeConfig(dir, { files: { roots: ['files'] }, cache: { fileDir: 'files/nope' } });
  assert.match(configError(() => loadConfig({ config: missing }, {})), /^cache\.fileDir: .* is not a directory/);
});

test('http: HOST:PORT from the flag or the file; a bad one is named', (t) => {
  assert.equal(loadConfig({}, {}).http, null);
  assert.deepEqual(loadConfig({ http: '127.0.0.1:8080' }, {}).http, { host: '127.0.0.1', port: 8080 });
  assert.deepEqual(loadConfig({ http: '[::1]:0' }, {}).http, { host: '::1', port: 0 });
  const file = writeConfig(tempDir(t), { http: 'localhost:9090' });
  assert.deepEqual(loadConfig({ config: file }, {}).http, { host: 'localhost', port: 9090 });
  assert.match(configError(() => loadConfig({ http: '8080' }, {})), /^--http: expected HOST:PORT/);
  assert.match(configError(() => loadConfig({ config: writeConfig(tempDir(t), { http: 'x:99999' }) }, {})), /^http: expected HOST:PORT/);
});

test('http with x-accel-redirect or a TCP listen: named errors', () => {
  assert.match(configError(() => loadConfig({ http: '127.0.0.1:0', sendfile: 'x-accel-redirect' }, {})), /^--http: .*x-accel-redirect is nginx only/);
  assert.match(configError(() => loadConfig({ http: '127.0.0.1:0', listen: 'tcp:127.0.0.1:0' }, {})), /^--http: needs FastCGI on a unix socket/);
});

test('user and group: names and numbers resolve through the system databases; a bad one is one line naming the field', (t) => {
  const dir = tempDir(t);
  const idOf = (flag: string): number => Number(run('id', [flag, 'nobody']).stdout.toString());
  const byName = loadConfig({ user: 'nobody' }, {});
  assert.deepEqual([byName.runAs?.uid, byName.runAs?.gid, byName.runAs?.user], [idOf('-u'), idOf('-g'), 'nobody']);
  const byNumber = loadConfig({ user: String(idOf('-u')), group: '0' }, {});
  assert.deepEqual([byNumber.runAs?.uid, byNumber.runAs?.gid, byNumber.runAs?.user, byNumber.runAs?.group], [idOf('-u'), 0, 'nobody', 'root']);
  assert.equal(loadConfig({}, {}).runAs, null);
  assert.match(configError(() => loadConfig({ user: 'no-such-user-lodestone' }, {})), /^--user: no such user "no-such-user-lodestone"$/);
  assert.match(configError(() => loadConfig({ user: 'nobody', group: 'no-such-group-lodestone' }, {})), /^--group: no such group/);
  assert.match(configError(() => loadConfig({ group: 'nogroup' }, {})), /^--group: needs --user/);
  assert.match(configError(() => loadConfig({ user: '4000000' }, {})), /^--group: needed with a numeric user/);
  assert.match(configError(() => loadConfig({ user: 'nobody', http: '127.0.0.1:0' }, {})), /^--user: the development server does not switch users/);
  assert.match(configError(() => loadConfig({ config: writeConfig(dir, { user: 33 }) }, {})), /^user: must be a string/);
  assert.match(configError(() => loadConfig({ config: writeConfig(dir, { socketOwner: 'nobody:no-such-group-lodestone' }) }, {})), /^socketOwner: no such group/);
  assert.deepEqual(loadConfig({ config: writeConfig(dir, { socketOwner: ':0' }) }, {}).socketOwner, { uid: -1, gid: 0 });
  const r = run(process.execPath, [cliPath, 'serve', '--user', 'no-such-user-lodestone']);
  assert.equal(r.status, 2);
  assert.equal(r.stderr, "lodestone: LS_CONFIG_INVALID: --user: no such user \"no-such-user-lodestone\"\ntry 'lodestone --help'\n");
});
