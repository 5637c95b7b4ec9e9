/**
 * What only the JavaScript engine (QuickJS) has, against a real ScriptHost: its identity, the
 * JS forms of the sandbox (frozen intrinsics and API objects, eval and Function, the wrapper
 * function), the wasm heap cap, a fault of the wasm module, its Vm pool, and handle hygiene.
 * The behaviours every engine shares are the conformance tables (engine-conformance-*.test.ts,
 * engine-cache-api.test.ts), run on this engine too. One engine serves most tests, in order, as
 * one worker serves requests.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { ScriptError, type ScriptEngine } from '../../runtime/engines/engine.js';
import { createJsEngine, type JsEngine } from '../../runtime/engines/js.js';
import { makeHost, serve, slowLogged, type Served, type ServeOptions } from '../helpers/script-host.js';

const engine = await createJsEngine();
const PATH = '/srv/www/test.js';

/** Serves `source` as one request on `on` (test/helpers/script-host.ts's serve, as the pipeline runs it). */
function runJs(source: string, opts: ServeOptions = {}, on: JsEngine = engine): Promise<Served> {
  return serve(on, source, { scriptFilename: PATH, ...opts });
}

/** Runs a script that must succeed; returns its outcome. */
async function ok(source: string, opts: ServeOptions = {}, on: JsEngine = engine): Promise<Served> {
  const out = await runJs(source, opts, on);
  assert.equal(out.error, null, `unexpected ${out.error?.kind} error: ${out.error?.location}: ${out.error?.message}`);
  return out;
}

/** Runs a script that must fail with `kind`; returns the error. */
async function fails(source: string, kind: ScriptError['kind'], opts: ServeOptions = {}, on: JsEngine = engine): Promise<ScriptError> {
  const out = await runJs(source, opts, on);
  assert.ok(out.error, `expected a ${kind} error, got output ${JSON.stringify(out.text)}`);
  assert.equal(out.error.kind, kind, `${out.error.kind}: ${out.error.message}`);
  return out.error;
}

/** What the next request on the same engine must still get. */
async function stillServes(on: JsEngine = engine): Promise<void> {
  assert.equal((await ok('print("still here")', {}, on)).text, 'still here\n');
}

function compileError(source: string): ScriptError {
  try {
    engine.compile(source, PATH);
  } catch (err) {
    assert.ok(err instanceof ScriptError);
    return err;
  }
  assert.fail('compile should have thrown');
}

// ---- the script API ------------------------------------------------------------------------

test('engine identity: a quickjs-emscripten version, no bytecode dump or load', () => {
  assert.match(engine.version, /^quickjs-emscripten \d+\.\d+\.\d+/);
  const contract: ScriptEngine = engine;
  assert.equal('dump' in contract, false);
  assert.equal('load' in contract, false);
});

test('request.query, headers and params are records without a prototype, made once per run', async () => {
  const out = await ok(
    [
      'print(JSON.stringify(request.query), JSON.stringify(request.headers));',
      'print(Object.getPrototypeOf(request.query), Object.getPrototypeOf(request.headers), Object.getPrototypeOf(request.params));',
    ].join('\n'),
    { params: { REQUEST_URI: '/?x=1&y=%C3%A9&x=2', QUERY_STRING: 'x=1&y=%C3%A9&x=2', HTTP_X_FOO: 'bar', CONTENT_TYPE: 'text/plain' } },
  );
  assert.equal(out.text, '{"x":"2","y":"é"}\t{"x-foo":"bar","content-type":"text/plain"}\nnull\tnull\tnull\n');
});

test('response.headers answers `in` for the headers set', async () => {
  const out = await ok('response.headers["X-A"] = 1; print("X-A" in response.headers, "x-a" in response.headers, "x-b" in response.headers)');
  assert.equal(out.text, 'true\ttrue\tfalse\n');
});

test('a status of the wrong type, and a bad header, throw a TypeError', async () => {
  // Unlike Lua, which converts a numeric string, JS refuses "404".
  const out = await ok(
    [
      'for (const v of ["404", null]) {',
      '  try { response.status = v; print("accepted", v) } catch (e) { print(e instanceof TypeError, e.message) }',
      '}',
      'try { response.headers["X-Bad"] = "a\\r\\nInjected: 1" } catch (e) { print(e instanceof TypeError) }',
      'try { response.headers["bad name"] = "x" } catch (e) { print(e instanceof TypeError) }',
      'try { response.status = 42 } catch (e) { print(e instanceof TypeError) }',
    ].join('\n'),
  );
  assert.equal(out.text, 'true\tinvalid status 404\ntrue\tinvalid status null\ntrue\ntrue\ntrue\n');
});

// ---- the sandbox ---------------------------------------------------------------------------

test('a request cannot leave state on the global object, an intrinsic or an API object', async () => {
  // var/let/function at the top level not surviving: engine-conformance-sandbox.test.ts.
  const first = await ok(
    [
      'const attempts = [() => { globalThis.x = 1 }, () => { Array.prototype.foo = 1 }, () => { Object.prototype.bar = 1 },',
      '  () => { JSON.parse = null }, () => { Math.leak = 1 }, () => { Object.getPrototypeOf(request).leak = 1 },',
      '  () => { print.leak = 1 }];',
      'for (const attempt of attempts) { try { attempt(); print("allowed", attempt) } catch (e) { print(e.name) } }',
    ].join('\n'),
  );
  assert.equal(first.text, 'TypeError\n'.repeat(7));
  const second = await ok(
    'print(typeof x, [].foo, ({}).bar, typeof JSON.parse, Math.leak, request.leak, print.leak)',
  );
  assert.equal(second.text, 'undefined\tundefined\tundefined\tfunction\tundefined\tundefined\tundefined\n');
});

test('the response object all runs share carries nothing from one run to the next', async () => {
  // One Response (and one headers proxy) serves every run of a Vm; head changes wait in the
  // sandbox until the slice ends, so a run that throws leaves them there for start() to drop.
  const first = await ok(
    [
      'const attempts = [() => { response.x = 1 }, () => Object.freeze(response.headers),',
      '  () => Object.preventExtensions(response.headers), () => Object.setPrototypeOf(response.headers, {})];',
      'for (const attempt of attempts) { try { attempt(); print("allowed", attempt) } catch (e) { print(e.name) } }',
      'response.headers["X-First"] = "1"; response.status = 203;',
    ].join('\n'),
  );
  assert.equal(first.text, 'TypeError\n'.repeat(4));
  assert.equal(first.status, 203);
  assert.equal(first.headers['x-first'], '1');
  const thrower = await runJs('response.headers["X-Thrown"] = "1"; response.status = 404; print("partial"); throw new Error("boom")');
  assert.equal(thrower.error?.kind, 'runtime');
  const next = await ok(
    'print(response.x, response.status, "X-First" in response.headers, response.headers["X-Thrown"], Object.isExtensible(response.headers))',
  );
  assert.equal(next.text, 'undefined\t200\tfalse\tundefined\ttrue\n');
  assert.equal(next.headers['x-thrown'], undefined);
});

test('every API object and function is frozen: the accessors, cache.get, request.body, print', async () => {
  const out = await ok(
    [
      'const P = Object.getPrototypeOf(request), R = Object.getPrototypeOf(response);',
      'const d = (o, k) => Object.getOwnPropertyDescriptor(o, k);',
      'const all = [d(P, "method").get, d(P, "query").get, d(R, "status").get, d(R, "status").set, d(R, "headers").get, P, R,',
      '  P.constructor, R.constructor, request.body, cache, cache.get, cache.set, cache.delete, cache.incr,',
      '  print, write, flush, log, sleep, stat, sendfile, pass, fetch, emit];',
      'print(all.length, all.filter((o) => !Object.isFrozen(o)).length)',
    ].join('\n'),
  );
  assert.equal(out.text, '25\t0\n');
});

test('each run in flight has a Vm of its own: a clean run returns it to the pool, a stopped one is disposed', async () => {
  const own = await createJsEngine();
  try {
    assert.deepEqual(own.pool, { idle: 1, busy: 0 });
    await ok('print(1)', {}, own);
    assert.deepEqual(own.pool, { idle: 1, busy: 0 }, 'serial runs share one Vm');
    const created = own.vms.created;
    const runs = [runJs('await sleep(30); print(1)', {}, own), runJs('await sleep(30); print(2)', {}, own)];
    assert.deepEqual(own.pool, { idle: 0, busy: 2 });
    await Promise.all(runs);
    assert.equal(own.vms.created, created + 1);
    assert.deepEqual(own.pool, { idle: 2, busy: 0 });
    const disposed = own.vms.disposed;
    await fails('for (;;) {}', 'limit', { limits: { cpuMs: 30 } }, own);
    assert.equal(own.vms.disposed, disposed + 1, 'the stopped run\'s Vm is disposed');
    assert.deepEqual(own.pool, { idle: 1, busy: 0 });
    await stillServes(own);
    assert.equal(own.restarts, 0, 'no module was replaced');
  } finally {
    assert.equal(own.close(), true);
  }
});

test('a run that keeps catching the CPU interrupt is stopped with its Vm, not the wasm module', async () => {
  // The victim in flight getting its own output: engine-conformance-sandbox.test.ts.
  const own = await createJsEngine();
  try {
    const spin = 'async function spin() { for (;;) {} }\nfor (;;) { try { await spin(); } catch (e) {} }';
    const disposed = own.vms.disposed;
    const err = await fails(spin, 'limit', { limits: { cpuMs: 50 } }, own);
    assert.match(err.message, /CPU time over 50 ms/);
    assert.equal(own.vms.disposed, disposed + 1);
    await stillServes(own);
    assert.equal(own.restarts, 0);
  } finally {
    own.close();
  }
});

test('intrinsics are deep-frozen, including the hidden ones', async () => {
  const out = await ok(
    [
      'const objects = {',
      '  globalThis, Object, "Object.prototype": Object.prototype, "Array.prototype": Array.prototype,',
      '  "Function.prototype": Function.prototype, Promise, "Promise.prototype": Promise.prototype, Math, JSON, Reflect,',
      '  "String.prototype": String.prototype, "RegExp.prototype": RegExp.prototype, "Error.prototype": Error.prototype,',
      '  "Map.prototype": Map.prototype, "Symbol.prototype": Symbol.prototype, Date, "Date.prototype": Date.prototype,',
      '  "AsyncFunction.prototype": Object.getPrototypeOf(async function () {}),',
      '  "GeneratorFunction.prototype": Object.getPrototypeOf(function* () {}),',
      '  "%GeneratorPrototype%": Object.getPrototypeOf(function* () {}).prototype,',
      '  "%ArrayIteratorPrototype%": Object.getPrototypeOf([][Symbol.iterator]()),',
      '  "%IteratorPrototype%": Object.getPrototypeOf(Object.getPrototypeOf([][Symbol.iterator]())),',
      '  "%MapIteratorPrototype%": Object.getPrototypeOf(new Map().entries()),',
      '  "%RegExpStringIteratorPrototype%": Object.getPrototypeOf("a".matchAll(/a/g)),',
      '  "%TypedArray%": Object.getPrototypeOf(Uint8Array), "%TypedArray%.prototype": Object.getPrototypeOf(Uint8Array.prototype),',
      '  "%ThrowTypeError%": Object.getOwnPropertyDescriptor(Function.prototype, "caller").get,',
      '  "Array.prototype[@@unscopables]": Array.prototype[Symbol.unscopables],',
      '  print, sleep, "request proto": Object.getPrototypeOf(request), "response proto": Object.getPrototypeOf(response),',
      '};',
      'const thawed = Object.entries(objects).filter(([, o]) => !Object.isFrozen(o)).map(([k]) => k);',
      'print(Object.keys(objects).length, JSON.stringify(thawed));',
    ].join('\n'),
  );
  assert.equal(out.text, '32\t[]\n');
});

test('eval, the Function constructors and import() refuse', async () => {
  // No require, process, std, os, FinalizationRegistry: engine-conformance-sandbox.test.ts.
  const out = await ok(
    [
      'for (const f of [() => eval("1"), () => Function("return 1"), () => (async () => {}).constructor("1"),',
      '                 () => (function* () {}).constructor("1")]) {',
      '  try { f(); print("ran") } catch (e) { print(e.name) }',
      '}',
      'try { await import("os"); print("imported") } catch (e) { print(e.name, e.message) }',
      'print((function () {}) instanceof Function);',
    ].join('\n'),
  );
  assert.equal(
    out.text,
    'EvalError\nEvalError\nEvalError\nEvalError\n' +
      "ReferenceError\tcould not load module 'os'\n" +
      'true\n',
  );
});

test('a source that closes its wrapper function is refused and runs nothing', async () => {
  const err = compileError('}); let leaked = [1]; (async function () {');
  assert.match(err.message, /unbalanced braces/);
  const err2 = compileError('}), globalThis.toString(), (async function () {');
  assert.match(err2.message, /unbalanced braces/);
  assert.equal((await ok('print(typeof leaked)')).text, 'undefined\n');
});

// ---- errors --------------------------------------------------------------------------------

test('thrown non-Error values end the run cleanly', async () => {
  // throw 42: engine-conformance-errors.test.ts.
  assert.equal((await fails('throw null', 'runtime')).message, 'uncaught exception: null');
  assert.equal((await fails('throw undefined', 'runtime')).message, 'uncaught exception: undefined');
  assert.equal((await fails('throw Symbol("s")', 'runtime')).message, 'uncaught exception: Symbol(s)');
  assert.equal((await fails('throw { toString() { throw 1 } }', 'runtime')).message, 'uncaught exception: object');
  assert.equal((await fails('throw { message: { toString() { throw 1 } } }', 'runtime')).message, 'Error: ');
  await stillServes();
});

// ---- limits --------------------------------------------------------------------------------

test('memory: a script filling the heap hits the engine cap; the next run works', async () => {
  const small = await createJsEngine({ maxHeapBytes: 24 * 2 ** 20 });
  // Generous CPU and wall limits: on a loaded machine the 1 s default CPU limit (measured per
  // slice in wall time) could stop the loop before the heap fills, which is not what this tests.
  const slow = { limits: { cpuMs: 600_000, wallMs: 600_000 } };
  const err = await fails('const a = []; for (;;) a.push("x".repeat(1000) + a.length)', 'limit', slow, small);
  assert.match(err.message, /out of memory/);
  // Catching the failed allocation does not help: the run is stopped.
  await fails('const a = []; for (;;) { try { a.push({ n: a.length, s: "y".repeat(500) }) } catch (e) {} }', 'limit', slow, small);
  await stillServes(small);
  const big = await ok('const a = []; for (let i = 0; i < 10000; i++) a.push("z".repeat(1000) + i); print(a.length)', {}, small);
  assert.equal(big.text, '10000\n');
  assert.equal(small.close(), true);
});

test('stack limit: recursion inside a built-in (JSON.stringify, String) is a clean error, never a crash', async () => {
  // Recursion in the script, caught or not, and a deeply nested source: the conformance tables.
  await fails('let o = {}; for (let i = 0; i < 1e5; i++) o = { a: o }; JSON.stringify(o)', 'limit');
  await fails('let o = []; for (let i = 0; i < 1e5; i++) o = [o]; String(o)', 'limit');
  await stillServes();
});

test('a native stack overflow inside wasm restarts the engine on a fresh module', async () => {
  const spare = await createJsEngine();
  const script = spare.compile('function f() { return f() + 1 }\nf()', PATH);
  // One recursive function both measures how deep the native stack goes and descends to a
  // chosen depth, so the depth measured and the depth used are counted in the same frames.
  let deepest = 0;
  const dive = (n: number, f: (() => Promise<number | undefined>) | null): Promise<number | undefined> => {
    if (f === null) {
      deepest = n;
      return dive(n + 1, null);
    }
    return n === 0 ? f() : dive(n - 1, f);
  };
  // Call the engine with little native stack left, closer each time, until the wasm code
  // overflows V8's stack before QuickJS's own limit fires. (engine.run itself, not serve: an
  // overflow in this test's own frames must throw here, not become a rejection.)
  for (let margin = 1500; margin >= 20; margin = Math.floor(margin * 0.9)) {
    const t = makeHost({ scriptFilename: PATH });
    let running: Promise<number | undefined>;
    try {
      void dive(0, null);
    } catch {
      // deepest now holds the depth at which dive overflowed
    }
    try {
      // A run that ends within its first slice answers (or throws its ScriptError) at once.
      running = dive(deepest - margin, () => {
        try {
          return Promise.resolve(spare.run(script, t.host));
        } catch (err) {
          if (err instanceof ScriptError) return Promise.reject(err);
          throw err;
        }
      });
    } catch {
      continue; // the overflow hit this test's own frames
    }
    await assert.rejects(running, ScriptError);
    await stillServes(spare);
    if (spare.restarts > 0) break;
  }
  assert.ok(spare.restarts > 0, 'no margin made the wasm code overflow');
  // The faulted Vm was let go: a script the store keeps must not keep it (nor its module's Memory).
  const held = [...(script as unknown as { fns: Map<{ dead: boolean }, unknown> }).fns.keys()];
  assert.ok(held.every((vm) => !vm.dead), 'the script still holds the dead Vm');
  // The script is recompiled into the new module on its next run.
  assert.equal((await runJs('print(1)', {}, spare)).text, '1\n');
  assert.match((await serve(spare, script, { scriptFilename: PATH })).error?.message ?? '', /stack overflow/);
});

// ---- handles -------------------------------------------------------------------------------

test('no handle leak: 2000 mixed requests, memory flat, runtime frees cleanly', async () => {
  const own = await createJsEngine();
  const sources = [
    'print("hello", request.method, request.query.x)',
    'response.headers["X-A"] = "1"; response.status = 201; return 201',
    'await null; print(JSON.stringify(request.headers))',
    'print((await request.body()).length)',
    'throw new Error("boom")',
    'throw 42',
    'const o = { self: null }; o.self = o; print(Object.keys(o))',
    'await new Promise(() => {})',
  ];
  const scripts = sources.map((s) => own.compile(s, PATH));
  const round = async (count: number): Promise<void> => {
    // (serve fails the test if a run fails with anything but a ScriptError.)
    for (let i = 0; i < count; i++) await serve(own, scripts[i % scripts.length]!, { scriptFilename: PATH, body: 'abc' });
  };
  await round(400);
  const early = own.memoryUsed();
  await round(1600);
  const late = own.memoryUsed();
  assert.ok(late - early < 64 * 1024, `memory grew from ${early} to ${late} bytes`);
  for (const s of scripts) s.dispose();
  // QuickJS asserts at runtime teardown that no object is left: any leaked handle fails here.
  assert.equal(own.close(), true);
});

test('disposing a script is idempotent and a disposed script recompiles if run again', async () => {
  const script = engine.compile('print("again")', PATH);
  script.dispose();
  script.dispose();
  const before = engine.compiles;
  assert.equal((await serve(engine, script, { scriptFilename: PATH })).text, 'again\n');
  assert.equal(engine.compiles, before + 1);
  script.dispose();
});

test('compiling never trips the interrupt handler (was ~1 in 10,000 compiles)', async () => {
  const engine = await createJsEngine();
  try {
    for (let i = 0; i < 20_000; i++) {
      const script = engine.compile(`print("hello ${i}")`, `/srv/c${i}.js`);
      script.dispose();
    }
  } finally {
    engine.close();
  }
});

// ---- the slow log (slowRequestMs) ----------------------------------------------------------

test('slow log: a run busy past slowRequestMs after an await logs its stack from the interrupt handler, a prelude frame between script frames included', async () => {
  const { services, lines } = slowLogged(50);
  const source = [
    // The rest runs as a job (no host wait, which a loaded machine could stretch past 50 ms).
    'await Promise.resolve();',
    'const spin = () => { const stop = Date.now() + 200; while (Date.now() < stop) {} };',
    'const sorted = [2, 1].sort((a, b) => { spin(); return a - b; });',
    'print(sorted.join(","));',
  ].join('\n');
  const out = await ok(source, { services, limits: { cpuMs: 5000 } });
  assert.equal(out.text, '1,2\n');
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(lines[0]!, / warn LS_SLOW_REQUEST slow request still running conn=1 request=1 script=\/srv\/www\/test\.js uri="\/test\?x=1" ms=\d+ /);
  // The comparator, then Array.prototype.sort, then the prelude's sort wrapper (see guardSorts).
  assert.ok(lines[0]!.endsWith(' stack="spin test.js:2 < test.js:3 < sort [native] < apply [native] < sort <lodestone> < test.js:3"'), lines[0]);
  await stillServes();
});

test('slow log: one line for a run busy past slowRequestMs and then waiting; a wait names the calls still waiting and the line of the latest pass() or sleep() among them', async () => {
  const busy = slowLogged(50);
  // Busy six times the threshold: the interrupt handler polls many times past it, even on a
  // loaded machine that stops the process for a while.
  const source = 'const stop = Date.now() + 300;\nwhile (Date.now() < stop) {}\nawait sleep(100);\nprint("done");';
  assert.equal((await ok(source, { services: busy.services, limits: { cpuMs: 5000 } })).text, 'done\n');
  assert.equal(busy.lines.length, 1, busy.lines.join('\n'));
  assert.ok(busy.lines[0]!.endsWith(' stack=test.js:2'), busy.lines[0]);
  const waits = slowLogged(100);
  const several = 'const nap = (ms) => sleep(ms);\nawait Promise.all([sleep(900), sleep(800), nap(20), request.body()]);\nprint("done");';
  assert.equal((await ok(several, { services: waits.services })).text, 'done\n');
  assert.equal(waits.lines.length, 1, waits.lines.join('\n'));
  // At 100 ms nap(20) and request.body() are over: the line is the second sleep's, made last of
  // those still waiting, not nap()'s (made later, but done).
  assert.ok(waits.lines[0]!.endsWith(' waiting=sleep() stack=test.js:2'), waits.lines[0]);
  const quick = slowLogged(1000);
  assert.equal((await ok('await sleep(20);\nprint("quick");', { services: quick.services })).text, 'quick\n');
  assert.deepEqual(quick.lines, []);
});

test('a CPU-limit stop names the line of the loop, whichever poll site the interrupt counter reaches zero at', async () => {
  // 0-3 calls before the loop shift the counter's phase by whole calls: on the old code the
  // error the interrupt left said line 4, line 2 (a call made before the loop) or no line.
  for (let calls = 0; calls < 4; calls++) {
    const source = `function f(x) { return x + 1; }\nlet n = 0; ${'f(0); '.repeat(calls)}\nfor (;;) {\n  n = f(n);\n}\n`;
    const err = await fails(source, 'limit', { limits: { cpuMs: 100 } });
    assert.equal(err.message, 'CPU time over 100 ms');
    assert.equal(err.line, 4, `with ${calls} calls before the loop`);
  }
  await stillServes();
});
