/**
 * Engine conformance, the script API's `cache`, `emit` and `pass` argument handling, over the
 * real embedded content cache (no server needed): values round trip with their exact bytes,
 * incr, script-built responses, bad arguments as script errors with file:line. Each behaviour
 * is one row run against every engine in ENGINES (test/helpers/engines.ts); a cached response
 * is written by each engine and emitted by each, as two requests of one worker would.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import type { EngineName } from '../../runtime/engines/engine.js';
import { noServices } from '../../runtime/engines/host.js';
import { ENGINES, caseOptions, instance, memoryCache, perEngine, runCase, type Case, type Scripts } from '../helpers/engines.js';
import { serve } from '../helpers/script-host.js';

const values: Case[] = [
  {
    name: 'strings and counters round trip; a miss is nil or null',
    cache: true,
    script: {
      lua: [
        'print(cache.get("nothing") == nil, cache.set("k", "a\\0b é", 60), cache.get("k") == "a\\0b é")',
        'print(cache.set("n", 41), cache.incr("n"), cache.incr("n", -2), cache.incr("fresh", 5, 30))',
        'print(cache.delete("k"), cache.delete("k"), cache.get("n"), cache.get("k") == nil)',
      ].join('\n'),
      js: [
        'print((await cache.get("nothing")) === null, await cache.set("k", "a\\0b é", 60), (await cache.get("k")) === "a\\0b é");',
        'print(await cache.set("n", 41), await cache.incr("n"), await cache.incr("n", -2), await cache.incr("fresh", 5, 30));',
        'print(await cache.delete("k"), await cache.delete("k"), await cache.get("n"), (await cache.get("k")) === null);',
      ].join('\n'),
    },
    expect: { body: 'true\ttrue\ttrue\ntrue\t42\t40\t5\ntrue\tfalse\t40\ttrue\n' },
    check: async (_out, ctx) => {
      assert.equal(await ctx.cache!.get('k'), null);
      assert.deepEqual(await ctx.cache!.get('n'), Buffer.from('40'));
      assert.deepEqual(await ctx.cache!.get('fresh'), Buffer.from('5'));
    },
  },
  {
    name: 'a stored string keeps its exact bytes (Lua: any bytes; JS: its UTF-8)',
    cache: true,
    script: { lua: 'cache.set("b", "a\\0b\\255é")', js: 'await cache.set("b", "a\\0b\\u00ffé")' },
    expect: {},
    check: async (_out, ctx) => {
      const bytes = perEngine({ lua: Buffer.from([0x61, 0, 0x62, 0xff, 0xc3, 0xa9]), js: Buffer.from('a\0bÿé') });
      assert.deepEqual(await ctx.cache!.get('b'), bytes.values[ctx.engine]);
    },
  },
];

const emitting: Case[] = [
  {
    name: 'emit() of a script-built response',
    script: {
      lua: 'emit({ status = 404, headers = { ["Content-Type"] = "text/plain" }, body = "gone" })',
      js: "emit({ status: 404, headers: { 'Content-Type': 'text/plain' }, body: 'gone' })",
    },
    expect: { status: 404, body: 'gone', headers: { 'content-type': 'text/plain' } },
  },
  {
    name: 'emit() with an invalid status is an error at its line',
    script: { lua: '\n emit({ status = 42 })', js: '\n emit({ status: 42 })' },
    expect: { error: { kind: 'runtime', message: /invalid response status 42/, line: 2 } },
  },
  {
    name: 'emit() with an invalid header name is an error',
    script: { lua: 'emit({ headers = { ["Bad Name"] = "x" } })', js: "emit({ headers: { 'Bad Name': 'x' } })" },
    expect: { error: { kind: 'runtime', message: /invalid header name/ } },
  },
];

/** A bad call: [what, Lua, JS, the message]. The engine reports it; the pipeline makes the 500. */
const badCalls: Array<[what: string, lua: string, js: string, message: RegExp]> = [
  ['cache.incr() of a value that is text', 'cache.incr("text")', "await cache.incr('text')", /not an integer/],
  ['an empty cache key', 'cache.get("")', "await cache.get('')", /cache key must be 1 to 1024 bytes/],
  ['a cache key over 1024 bytes', 'cache.get(("x"):rep(2000))', "await cache.get('x'.repeat(2000))", /cache key must be 1 to 1024 bytes/],
  ['a negative ttl', 'cache.set("k", "v", -1)', "await cache.set('k', 'v', -1)", /ttl must be a number of seconds >= 0/],
  ['a value that is neither a string nor a response', 'cache.set("k", true)', "await cache.set('k', true)", /value must be a string or a response (table|object)/],
  ['an increment that is not an integer', 'cache.incr("n", 1.5)', "await cache.incr('n', 1.5)", /integer/],
  [
    'a response naming a file cache.set() did not write',
    'cache.set("k", { file = "/etc/passwd" })',
    "await cache.set('k', { file: '/etc/passwd' })",
    /a response file must be one cache.set\(\) wrote into cache.fileDir/,
  ],
];

const errors: Case[] = [
  ...badCalls.map(
    ([what, lua, js, message]): Case => ({
      name: `${what} is a script error at its line, not a crash`,
      cache: true,
      before: async (ctx) => void (await ctx.cache!.set('text', Buffer.from('hello'), 0)),
      script: { lua: `print("a")\n${lua}`, js: `print("a");\n${js}` },
      expect: { error: { kind: 'runtime', message, line: 2 }, status: 200 },
    }),
  ),
  {
    name: 'without a configured cache, a cache call is a clear error',
    script: { lua: 'cache.get("k")', js: "await cache.get('k')" },
    expect: { error: { kind: 'runtime', message: /content cache is not configured/ } },
  },
  {
    name: 'pass() to a backend that is not configured is a clear error at its line',
    script: { lua: 'print("a")\npass("nope")', js: "print('a');\nawait pass('nope')" },
    expect: { error: { kind: 'runtime', message: /no backend named "nope"/, line: 2 } },
  },
];

const cases = [...values, ...emitting, ...errors];

for (const engine of ENGINES) for (const c of cases) test(`${engine.id}: ${c.name}`, caseOptions(engine, c), () => runCase(engine, c));

// ---- a response cached by one engine, emitted by another ---------------------------------

/** Caches "page": a response with status 203, a repeated header and a body of `body` bytes. */
const writers: { [E in EngineName]: { script: string; body: Buffer } } = {
  // Lua strings are bytes: any body.
  lua: {
    script:
      'assert(cache.set("page", { status = 203, headers = { ["Content-Type"] = "application/octet-stream", ["X-Two"] = "a\\nb" }, body = "\\0\\1\\2\\255\\254\\128\\n" }, 60))',
    body: Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80, 10]),
  },
  // A JS body string is sent as its UTF-8.
  js: {
    script:
      "if (!(await cache.set('page', { status: 203, headers: { 'Content-Type': 'application/octet-stream', 'X-Two': 'a\\nb' }, body: 'h\\u00e9\\u0000llo\\n' }, 60))) throw new Error('not stored');",
    body: Buffer.from('hé\0llo\n'),
  },
};

/** Emits the cached "page" after checking its age, status and repeated header; then writes "+". */
const reader: Scripts = {
  lua: [
    'local hit = cache.get("page")',
    'assert(type(hit.age) == "number" and hit.status == 203, "bad hit")',
    'assert(hit.headers["x-two"] == "a\\nb", "repeated header")',
    'emit(hit)',
    'response.headers["X-Cache"] = "HIT"',
    'write("+")',
  ].join('\n'),
  js: [
    "const hit = await cache.get('page');",
    "if (typeof hit.age !== 'number' || hit.status !== 203) throw new Error('bad hit ' + JSON.stringify(hit));",
    "if (hit.headers['x-two'] !== 'a\\nb') throw new Error('repeated header ' + JSON.stringify(hit.headers));",
    'emit(hit);',
    "response.headers['X-Cache'] = 'HIT';",
    "write('+');",
  ].join('\n'),
};

for (const writer of ENGINES) {
  for (const emitter of ENGINES) {
    test(`${writer.name} caches a response, ${emitter.name} emits it: exact bytes, headers, an age`, async () => {
      const cache = memoryCache();
      const services = { ...noServices, cache };
      const wrote = await serve(await instance(writer), writers[writer.name].script, { services });
      assert.equal(wrote.error, null, wrote.error?.message);
      const stored = await cache.get('page');
      assert.ok(stored !== null && !Buffer.isBuffer(stored));
      assert.equal(stored.status, 203);
      assert.deepEqual(stored.body, writers[writer.name].body);
      assert.ok(Math.abs(stored.storedAt - Date.now()) < 60_000);

      const out = await serve(await instance(emitter), reader[emitter.name] as string, { services });
      assert.equal(out.error, null, out.error?.message);
      assert.equal(out.status, 203);
      assert.deepEqual(out.body, Buffer.concat([writers[writer.name].body, Buffer.from('+')]));
      assert.equal(out.headers['content-type'], 'application/octet-stream');
      assert.equal(out.headers['x-cache'], 'HIT');
    });
  }
}
