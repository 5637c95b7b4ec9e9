/**
 * The script API's `cache`, `emit` and `pass` argument handling in both engines, over the real
 * embedded content cache (no server needed): values and whole responses round trip with their
 * exact bytes, a response's age, incr, bad arguments as script errors with file:line, and
 * values shared between a Lua and a JS script as two requests of one worker would.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { createContentCache, defaultContentCacheConfig, type ContentCache } from '../../runtime/content-cache/content-cache.js';
import { ScriptError, type ScriptEngine } from '../../runtime/engines/engine.js';
import { noServices } from '../../runtime/engines/host.js';
import { createJsEngine } from '../../runtime/engines/js.js';
import { LuaEngine } from '../../runtime/engines/lua.js';
import { Logger } from '../../runtime/log.js';
import { makeHost, type HostOptions } from '../helpers/script-host.js';

const lines: string[] = [];
const log = new Logger('debug', (line) => lines.push(line));
const engines: Record<'lua' | 'js', ScriptEngine> = { lua: new LuaEngine(), js: await createJsEngine() };

function memoryCache(): ContentCache {
  return createContentCache({ ...defaultContentCacheConfig, backend: 'memory' }, log);
}

interface Outcome {
  error: ScriptError | null;
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  text: string;
}

async function run(ext: 'lua' | 'js', source: string, cache: ContentCache | null, opts: HostOptions = {}): Promise<Outcome> {
  const file = `/srv/www/test.${ext}`;
  const t = makeHost({ scriptFilename: file, documentRoot: '/srv/www', services: { ...noServices, cache }, ...opts });
  const engine = engines[ext];
  const script = engine.compile(source, file);
  let error: ScriptError | null = null;
  t.host.start();
  try {
    const status = await engine.run(script, t.host);
    t.host.endOutput();
    if (t.host.fatal) throw t.host.fatal;
    t.host.end(status);
  } catch (err) {
    assert.ok(err instanceof ScriptError, `not a ScriptError: ${String(err)}`);
    error = err;
  } finally {
    t.host.finish();
  }
  const out = t.result();
  return { error, status: out.status, headers: out.headers, body: out.body, text: out.body.toString() };
}

async function ok(ext: 'lua' | 'js', source: string, cache: ContentCache | null): Promise<Outcome> {
  const out = await run(ext, source, cache);
  assert.equal(out.error, null, `${out.error?.location}: ${out.error?.message}`);
  return out;
}

test('Lua: strings and counters round trip; a miss is nil', async () => {
  const cache = memoryCache();
  const out = await ok(
    'lua',
    `
    assert(cache.get("nothing") == nil)
    assert(cache.set("k", "a\\0b\\255", 60) == true)
    local v = cache.get("k")
    assert(v == "a\\0b\\255", "bytes kept")
    assert(cache.set("n", 41) == true)
    assert(cache.incr("n") == 42)
    assert(cache.incr("n", -2) == 40)
    assert(cache.incr("fresh", 5, 30) == 5)
    assert(cache.delete("k") == true and cache.delete("k") == false)
    write(tostring(cache.get("n")), " ", tostring(cache.get("k")))
    `,
    cache,
  );
  assert.equal(out.text, '40 nil');
  const raw = await cache.get('k');
  assert.equal(raw, null);
  assert.deepEqual(await cache.get('fresh'), Buffer.from('5'));
});

test('JS: strings and counters round trip; a miss is null', async () => {
  const cache = memoryCache();
  const out = await ok(
    'js',
    `
    if ((await cache.get('nothing')) !== null) throw new Error('miss expected');
    if ((await cache.set('k', 'a\\u0000b é', 60)) !== true) throw new Error('not stored');
    const v = await cache.get('k');
    if (v !== 'a\\u0000b é') throw new Error('got ' + JSON.stringify(v));
    await cache.set('n', 41);
    const a = await cache.incr('n'), b = await cache.incr('n', -2);
    write(a, ' ', b, ' ', await cache.delete('k'), ' ', await cache.delete('k'));
    `,
    cache,
  );
  assert.equal(out.text, '42 40 true false');
  assert.deepEqual(await cache.get('n'), Buffer.from('40'));
});

test('a response cached by Lua is emitted by JS with its exact bytes, headers and an age', async () => {
  const cache = memoryCache();
  const binary = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80, 10]);
  await ok(
    'lua',
    `
    local body = "\\0\\1\\2\\255\\254\\128\\n"
    assert(cache.set("page", { status = 203, headers = { ["Content-Type"] = "application/octet-stream", ["X-Two"] = "a\\nb" }, body = body }, 60))
    `,
    cache,
  );
  const stored = await cache.get('page');
  assert.ok(stored !== null && !Buffer.isBuffer(stored));
  assert.equal(stored.status, 203);
  assert.deepEqual(stored.body, binary);
  assert.ok(Math.abs(stored.storedAt - Date.now()) < 60_000);

  const js = await ok(
    'js',
    `
    const hit = await cache.get('page');
    if (typeof hit.age !== 'number' || hit.status !== 203) throw new Error('bad hit ' + JSON.stringify(hit));
    if (hit.headers['x-two'] !== 'a\\nb') throw new Error('repeated header ' + JSON.stringify(hit.headers));
    emit(hit);
    response.headers['X-Cache'] = 'HIT';
    `,
    cache,
  );
  assert.equal(js.status, 203);
  assert.deepEqual(js.body, binary);
  assert.equal(js.headers['content-type'], 'application/octet-stream');
  assert.equal(js.headers['x-cache'], 'HIT');

  const lua = await ok('lua', `local hit = cache.get("page"); emit(hit); write("+")`, cache);
  assert.deepEqual(lua.body, Buffer.concat([binary, Buffer.from('+')]));
  assert.equal(lua.status, 203);
});

test('emit() of a script-built response; bad responses are script errors with file:line', async () => {
  for (const ext of ['lua', 'js'] as const) {
    const built =
      ext === 'lua'
        ? `emit({ status = 404, headers = { ["Content-Type"] = "text/plain" }, body = "gone" })`
        : `emit({ status: 404, headers: { 'Content-Type': 'text/plain' }, body: 'gone' })`;
    const out = await ok(ext, built, memoryCache());
    assert.equal(out.status, 404);
    assert.equal(out.text, 'gone');
    assert.equal(out.headers['content-type'], 'text/plain');

    const badStatus = ext === 'lua' ? `\n emit({ status = 42 })` : `\n emit({ status: 42 })`;
    const failed = await run(ext, badStatus, memoryCache());
    assert.ok(failed.error, `${ext}: emit with status 42 must fail`);
    assert.match(failed.error.message, /invalid response status 42/);
    assert.equal(failed.error.line, 2);

    const badHeader = ext === 'lua' ? `emit({ headers = { ["Bad Name"] = "x" } })` : `emit({ headers: { 'Bad Name': 'x' } })`;
    const refused = await run(ext, badHeader, memoryCache());
    assert.match(refused.error?.message ?? '', /invalid header name/);
  }
});

test('bad cache arguments and incr on text are script errors, not crashes', async () => {
  const cache = memoryCache();
  await cache.set('text', Buffer.from('hello'), 0);
  const cases: Array<[ext: 'lua' | 'js', source: string, message: RegExp]> = [
    ['lua', `cache.incr("text")`, /not an integer/],
    ['js', `await cache.incr('text')`, /not an integer/],
    ['lua', `cache.get("")`, /cache key must be 1 to 1024 bytes/],
    ['js', `await cache.get('x'.repeat(2000))`, /cache key must be 1 to 1024 bytes/],
    ['lua', `cache.set("k", "v", -1)`, /ttl must be a number of seconds >= 0/],
    ['lua', `cache.set("k", true)`, /value must be a string or a response table/],
    ['js', `await cache.set('k', true)`, /value must be a string or a response object/],
    ['lua', `cache.incr("n", 1.5)`, /number has no integer representation|integer/],
    ['lua', `cache.x = 1`, /read-only table 'cache'/],
    ['lua', `cache.set("k", { file = "/etc/passwd" })`, /a response file must be one cache.set\(\) wrote into cache.fileDir/],
    ['js', `await cache.set('k', { file: '/etc/passwd' })`, /a response file must be one cache.set\(\) wrote into cache.fileDir/],
  ];
  for (const [ext, source, message] of cases) {
    const out = await run(ext, source, cache);
    assert.ok(out.error, `${ext}: ${source} must fail`);
    assert.match(out.error.message, message, `${ext}: ${source}`);
    assert.equal(out.status, 200, 'the pipeline, not the engine, turns it into a 500');
  }
});

test('without a configured cache, pass() without a backend: clear errors', async () => {
  const noCache = await run('lua', `cache.get("k")`, null);
  assert.match(noCache.error?.message ?? '', /content cache is not configured/);
  for (const ext of ['lua', 'js'] as const) {
    const src = ext === 'lua' ? `pass("nope")` : `await pass('nope')`;
    const out = await run(ext, src, memoryCache());
    assert.match(out.error?.message ?? '', /no backend named "nope"/, ext);
  }
});
