/**
 * The Lua engine against a real ScriptHost (test/helpers/script-host.ts): the script API, the
 * sandbox, async host calls, every limit (each followed by a run that must still succeed, as
 * the next request on the same worker would), mod_magnet's lighty table and bytecode.
 * One engine serves most tests, in order, as one worker serves requests.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { ScriptError } from '../../runtime/engines/engine.js';
import { LuaEngine, locate } from '../../runtime/engines/lua.js';
import { guardsInstalled } from '../../runtime/engines/lua/guards.js';
import { makeHost, slowLogged, type HostOptions, type TestHost } from '../helpers/script-host.js';

const engine = new LuaEngine();
const PATH = '/srv/www/test.lua';

interface Outcome {
  value: number | undefined;
  error: ScriptError | null;
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  text: string;
  stderr: string;
}

/** Compiles and runs `source` for one request, as the pipeline would (start/finish around it). */
async function runLua(source: string, opts: HostOptions = {}, onStart?: (t: TestHost) => void): Promise<Outcome> {
  const t = makeHost({ scriptFilename: PATH, documentRoot: '/srv/www', ...opts });
  const script = engine.compile(source, PATH);
  let value: number | undefined;
  let error: ScriptError | null = null;
  t.host.start();
  try {
    const running = engine.run(script, t.host);
    onStart?.(t);
    value = await running;
  } catch (err) {
    assert.ok(err instanceof ScriptError, `run rejected with a non-ScriptError: ${String(err)}`);
    error = err;
  } finally {
    t.host.finish();
  }
  const out = t.result();
  return { value, error, status: out.status, headers: out.headers, body: out.body, text: out.body.toString(), stderr: out.stderr };
}

/** Runs a script that must succeed; returns its outcome. */
async function ok(source: string, opts: HostOptions = {}): Promise<Outcome> {
  const out = await runLua(source, opts);
  assert.equal(out.error, null, `unexpected ${out.error?.kind} error: ${out.error?.location}: ${out.error?.message}`);
  return out;
}

/** Runs a script that must fail with `kind`; returns the error. */
async function fails(source: string, kind: ScriptError['kind'], opts: HostOptions = {}): Promise<ScriptError> {
  const out = await runLua(source, opts);
  assert.ok(out.error, `expected a ${kind} error, got success with body ${JSON.stringify(out.text)}`);
  assert.equal(out.error.kind, kind, `expected ${kind}, got ${out.error.kind}: ${out.error.message}`);
  return out.error;
}

/** After a failure the engine must serve the next request. */
async function stillServes(): Promise<void> {
  const out = await ok('print("hello")');
  assert.equal(out.text, 'hello\n');
}

test('engine identity: name, extension, a version naming fengari and Lua 5.3', () => {
  assert.equal(engine.name, 'lua');
  assert.equal(engine.extension, '.lua');
  assert.match(engine.version, /0\.1\.5/);
  assert.match(engine.version, /Lua 5\.3/);
});

test('every limit guard found the fengari shape it patches (a fengari upgrade that changes one fails here)', async () => {
  await ok('print("hello")');
  assert.deepEqual(guardsInstalled, { results: true, operands: true, apiConcat: true, buffers: true, compare: true, patterns: true });
});

test('hello', async () => {
  const out = await ok('print("hello")');
  assert.equal(out.text, 'hello\n');
  assert.equal(out.status, 200);
  assert.equal(out.value, undefined);
});

test('print joins with tabs and ends lines; write adds nothing', async () => {
  const out = await ok('print("a", "b", 1, 2.5, nil, true) write("c", "d") write(1, 2) print() print(setmetatable({}, {__tostring = function() return "T" end}))');
  assert.equal(out.text, 'a\tb\t1\t2.5\tnil\ttrue\ncd12\nT\n');
});

test('request fields: method, uri, decoded path, query, headers, params, addresses, paths', async () => {
  const out = await ok(
    [
      'print(request.method, request.uri, request.path, request.query_string)',
      'print(request.query.a, request.query.b, request.query.x)',
      'print(request.headers["user-agent"], request.headers["content-type"], request.headers["User-Agent"])',
      'print(request.params.REQUEST_METHOD, request.params.CUSTOM, request.remote_addr)',
      'print(request.script_filename, request.document_root, request.nope)',
    ].join('\n'),
    {
      params: {
        REQUEST_METHOD: 'POST',
        REQUEST_URI: '/a%20b/c?a=1&b=x%20y',
        QUERY_STRING: 'a=1&b=x%20y',
        HTTP_USER_AGENT: 'UA/1',
        CONTENT_TYPE: 'text/plain',
        CUSTOM: 'yes',
        REMOTE_ADDR: '10.1.2.3',
      },
    },
  );
  assert.equal(
    out.text,
    'POST\t/a%20b/c?a=1&b=x%20y\t/a b/c\ta=1&b=x%20y\n' +
      '1\tx y\tnil\n' +
      'UA/1\ttext/plain\tnil\n' +
      'POST\tyes\t10.1.2.3\n' +
      `${PATH}\t/srv/www\tnil\n`,
  );
});

test('request.body() returns the posted bytes as a Lua string, twice', async () => {
  const body = Buffer.from([0x00, 0xff, 0x80, 0x41, 0x0a]);
  const out = await ok('local b = request.body() local c = request.body() write(#b, ":", b:byte(1), ",", b:byte(2), ",", tostring(b == c), ":") write(b)', { body });
  assert.deepEqual(out.body, Buffer.concat([Buffer.from('5:0,255,true:'), body]));
});

test('response status and headers: set, read, remove, case-insensitive', async () => {
  const out = await ok(
    [
      'response.status = 201',
      'response.headers["X-One"] = "1"',
      'response.headers["X-Two"] = 2',
      'response.headers["X-Gone"] = "x"',
      'response.headers["x-gone"] = nil',
      'print(response.status, response.headers["x-one"], response.headers["X-TWO"], response.headers["X-Gone"])',
    ].join('\n'),
  );
  assert.equal(out.text, '201\t1\t2\tnil\n');
  assert.equal(out.status, 201);
  assert.equal(out.headers['x-one'], '1');
  assert.equal(out.headers['x-two'], '2');
  assert.equal(out.headers['x-gone'], undefined);
});

test('response and response.headers are shared read-only tables: raw writes are refused', async () => {
  const out = await ok(
    [
      'print(response.headers == response.headers, rawget(response, "headers"), next(response), next(response.headers))',
      'print(pcall(rawset, response, "x", 1)) print(pcall(rawset, response.headers, "X-Raw", "1"))',
      'print(pcall(function() response.headers = {} end))',
      'response.headers["X-Set"] = "yes" print(response.headers["x-set"], rawget(response.headers, "X-Set"))',
    ].join('\n'),
  );
  const lines = out.text.split('\n');
  assert.equal(lines[0], 'true\tnil\tnil\tnil');
  assert.match(lines[1]!, /^false\t.*read-only table/);
  assert.match(lines[2]!, /^false\t.*read-only table/);
  assert.match(lines[3]!, /^false\t.*response\.headers cannot be set/);
  assert.equal(lines[4], 'yes\tnil');
  assert.equal(out.headers['x-set'], 'yes');
  assert.equal(out.headers['x-raw'], undefined);
  // The next request sees none of it.
  const next = await ok('print(response.headers["X-Set"], response.status)');
  assert.equal(next.text, 'nil\t200\n');
});

test('tostring: strings as they are, numbers as Lua writes them, __tostring honoured', async () => {
  const out = await ok(
    [
      'local t = setmetatable({}, { __tostring = function() return "custom" end })',
      'print(tostring("s"), tostring("s", "extra"), tostring(1), tostring(1.5), tostring(true), tostring(nil))',
      'print(tostring(t), tostring(print):match("^builtin") or tostring(print):match("^function"), select("#", tostring("a", "b")))',
      'print(pcall(tostring))',
    ].join('\n'),
  );
  const lines = out.text.split('\n');
  assert.equal(lines[0], 's\ts\t1\t1.5\ttrue\tnil');
  assert.equal(lines[1], 'custom\tfunction\t1');
  assert.match(lines[2]!, /^false\t.*bad argument #1 to 'tostring' \(value expected\)/);
});

test('runNow: a run that never waits ends synchronously, one that waits returns a promise', async () => {
  const quick = makeHost({ scriptFilename: PATH });
  quick.host.start();
  assert.equal(engine.runNow(engine.compile('write("x") return 201', PATH), quick.host), 201);
  quick.host.finish();
  const slow = makeHost({ scriptFilename: PATH });
  slow.host.start();
  const waiting = engine.runNow(engine.compile('sleep(1) return 202', PATH), slow.host);
  assert.ok(waiting instanceof Promise);
  assert.equal(await waiting, 202);
  slow.host.finish();
  const failing = makeHost({ scriptFilename: PATH });
  failing.host.start();
  assert.throws(() => engine.runNow(engine.compile('error("boom")', PATH), failing.host), (err: unknown) => err instanceof ScriptError && err.line === 1);
  failing.host.finish();
});

test('the limits hold after many short runs and a deeper one: the CPU hook, through pcall', async () => {
  for (let i = 0; i < 50; i++) await ok('x = 1 print(x)');
  const err = await fails('pcall(error, "x") local n = 0 while true do n = n + 1 end', 'limit', { limits: { cpuMs: 40 } });
  assert.match(err.message, /CPU time over 40 ms/);
  for (let i = 0; i < 5; i++) await ok('local function f(n) if n == 0 then return 0 end return 1 + f(n - 1) end print(f(200))');
  const again = await fails('while true do end', 'limit', { limits: { cpuMs: 40 } });
  assert.match(again.message, /CPU time over 40 ms/);
  await stillServes();
});

test('an invalid status or header is a Lua error the script can catch', async () => {
  const out = await ok(
    'print(pcall(function() response.status = 1000 end)) print(pcall(function() response.headers["X"] = "a\\r\\nb" end)) print(pcall(function() response.foo = 1 end))',
  );
  const lines = out.text.split('\n');
  assert.match(lines[0]!, /^false\t.*invalid status 1000/);
  assert.match(lines[1]!, /^false\t/);
  assert.match(lines[2]!, /^false\t.*response\.foo cannot be set/);
  const err = await fails('response.status = "abc"', 'runtime');
  assert.match(err.message, /response\.status must be a number/);
  assert.equal(err.line, 1);
});

test('the return value: an integer (or integral float) is the status code, anything else is not', async () => {
  assert.equal((await ok('return 404')).value, 404);
  assert.equal((await ok('return 302.0')).value, 302);
  assert.equal((await ok('return "404"')).value, undefined);
  assert.equal((await ok('return 1.5')).value, undefined);
  assert.equal((await ok('return {}')).value, undefined);
});

test('log() goes to FCGI_STDERR, joined with tabs', async () => {
  const out = await ok('log("warn", 1, true) print("ok")');
  assert.equal(out.stderr, 'warn\t1\ttrue\n');
  assert.equal(out.text, 'ok\n');
});

test('sleep() waits without blocking the event loop', async () => {
  const events: string[] = [];
  const timer = setTimeout(() => events.push('timer'), 10);
  const started = performance.now();
  const out = await runLua('sleep(50) print("woke")', {}, () => events.push('started'));
  clearTimeout(timer);
  events.push('done');
  assert.equal(out.error, null);
  assert.equal(out.text, 'woke\n');
  assert.deepEqual(events, ['started', 'timer', 'done']);
  assert.ok(performance.now() - started >= 45);
});

test('flush() sends the headers and body so far while the script goes on', async () => {
  let midway: { headersSent: boolean; body: string } | null = null;
  const out = await runLua('response.headers["X-Early"] = "1" print("a") flush() sleep(40) print("b")', {}, (t) => {
    setTimeout(() => {
      midway = { headersSent: t.response.headersSent, body: t.result(false).body.toString() };
    }, 15);
  });
  assert.equal(out.error, null);
  assert.deepEqual(midway, { headersSent: true, body: 'a\n' });
  assert.equal(out.text, 'a\nb\n');
  assert.equal(out.headers['x-early'], '1');
});

test('concurrent runs on one engine keep their own output', async () => {
  const [a, b] = await Promise.all([ok('sleep(20) print("a", request.query.n)', { params: { QUERY_STRING: 'n=1' } }), ok('print("b", request.query.n)', { params: { QUERY_STRING: 'n=2' } })]);
  assert.equal(a.text, 'a\t1\n');
  assert.equal(b.text, 'b\t2\n');
});

test('globals do not survive the request; _G is the request env; load() runs in it', async () => {
  const first = await ok('x = 1 _G.y = 2 print(x, y, _G.x, load("return x + y")())');
  assert.equal(first.text, '1\t2\t1\t3\n');
  const second = await ok('print(x, y, _G.x)');
  assert.equal(second.text, 'nil\tnil\tnil\n');
});

test('shared libraries are read-only, even nested or raw, and stay intact', async () => {
  const attempts = [
    'string.rep = nil',
    'math.pi = 3',
    'string.evil = print',
    'rawset(string, "rep", print)',
    'rawset(math, "pi", 3)',
    'table.insert = nil',
    'os.time = nil',
    'coroutine.wrap = nil',
    'getmetatable("").__index.rep = nil',
    'setmetatable(string, {})',
    'setmetatable(_ENV, nil)',
    'getmetatable(_ENV).__index.print = nil',
    'getmetatable(request).__index = nil',
  ];
  for (const source of attempts) {
    const err = await fails(source, 'runtime');
    assert.equal(err.line, 1, source);
  }
  const out = await ok('print(math.pi, type(string.rep), string.evil, ("ab"):rep(2), type(print), getmetatable(""))');
  assert.equal(out.text, '3.1415926535898\tfunction\tnil\tabab\tfunction\tfalse\n');
  const keys = await ok('local n = 0 for k in pairs(string) do n = n + 1 end print(n > 10, string.dump)');
  assert.equal(keys.text, 'true\tnil\n');
});

test('nothing that reaches outside: io, os.execute, require, dofile, loadfile, debug, package, js...', async () => {
  const names = ['io', 'os.execute', 'os.getenv', 'os.exit', 'os.remove', 'os.rename', 'os.tmpname', 'require', 'dofile', 'loadfile', 'debug', 'package', 'js', 'fengari', 'collectgarbage', 'string.dump', 'loadstring'];
  const out = await ok(names.map((n) => `print(${n} == nil)`).join(' '));
  assert.equal(out.text, 'true\n'.repeat(names.length));
  const present = await ok('print(type(os.time), type(os.clock), type(os.date), type(unpack), type(table.unpack), type(utf8.char), _VERSION)');
  assert.equal(present.text, 'function\tfunction\tfunction\tfunction\tfunction\tfunction\tLua 5.3\n');
});

test('load() refuses binary chunks and honours an explicit env', async () => {
  const out = await ok('print(load("\\27Lua\\83\\0")) print(load("return 1", "c", "b")()) print(load("return z", "c", "t", {z = 7})())');
  const lines = out.text.split('\n');
  assert.match(lines[0]!, /^nil\t.*binary chunk/);
  assert.equal(lines[1], '1');
  assert.equal(lines[2], '7');
});

test('a compile error names file:line', () => {
  assert.throws(
    () => engine.compile('local a = 1\n\nlocal = 2\n', '/srv/www/bad.lua'),
    (err: unknown) => err instanceof ScriptError && err.kind === 'compile' && err.line === 3 && err.file === '/srv/www/bad.lua' && /expected near '='/.test(err.message) && err.location === '/srv/www/bad.lua:3',
  );
});

test('a shebang line and a BOM compile; line numbers stay right', async () => {
  const err = await fails('#!/usr/bin/env lua\nprint("x")\nerror("boom")', 'runtime');
  assert.equal(err.line, 3);
  assert.equal(err.message, 'boom');
  const bom = await ok('\ufeffprint("bom")');
  assert.equal(bom.text, 'bom\n');
});

test('a runtime error names file:line; error values that are not strings do not crash', async () => {
  const err = await fails('local t = {}\nlocal function f()\n  return t.x.y\nend\nf()', 'runtime');
  assert.equal(err.file, PATH);
  assert.equal(err.line, 3);
  assert.match(err.message, /attempt to index a nil value/);
  const table = await fails('error({})', 'runtime');
  assert.equal(table.message, '(error object is a table value)');
  assert.equal(table.line, null);
  const level0 = await fails('error("plain", 0)', 'runtime');
  assert.deepEqual([level0.message, level0.line], ['plain', null]);
  const topYield = await fails('coroutine.yield(1)', 'runtime');
  assert.match(topYield.message, /yield from outside a coroutine/);
  const fromLoad = await fails('load("\\n\\nerror(\'deep\')", "=other")()', 'runtime');
  assert.equal(fromLoad.line, null);
  assert.equal(fromLoad.message, 'other:3: deep');
  await stillServes();
});

test('locate() reads Lua positions, including a shortened long path', () => {
  assert.deepEqual(locate('/a/b.lua:12: oops', '/a/b.lua'), { message: 'oops', line: 12 });
  assert.deepEqual(locate('...long/dir/b.lua:4: x: y', '/very/long/dir/b.lua'), { message: 'x: y', line: 4 });
  assert.deepEqual(locate('other.lua:4: x', '/a/b.lua'), { message: 'other.lua:4: x', line: null });
});

test('limit: CPU time, with the engine serving afterwards', async () => {
  const started = performance.now();
  const err = await fails('local n = 0\nwhile true do n = n + 1 end', 'limit', { limits: { cpuMs: 50 } });
  assert.match(err.message, /CPU time over 50 ms/);
  assert.equal(err.line, 2);
  assert.ok(performance.now() - started < 2000);
  await stillServes();
});

test('limit: pcall, xpcall and coroutines cannot swallow a limit', async () => {
  const sources = [
    'while true do pcall(function() while true do end end) end',
    'while true do xpcall(function() while true do end end, function(e) return e end) end',
    'while true do coroutine.resume(coroutine.create(function() while true do end end)) end',
    'while true do pcall(coroutine.wrap(function() while true do end end)) end',
    'while true do pcall(error, "x") end',
    // After a caught error the hook must still run (fengari 0.1.5 switched it off).
    'pcall(error, "x") while true do end',
    'xpcall(error, print, "x") local n = 0 while true do n = n + 1 end',
    'coroutine.wrap(function() pcall(error, "x") while true do end end)()',
  ];
  for (const source of sources) {
    const err = await fails(source, 'limit', { limits: { cpuMs: 40 } });
    assert.match(err.message, /CPU time/, source);
  }
  await stillServes();
});

test('limit: heap growth ends a run that keeps allocating (not an OOM)', async () => {
  const started = performance.now();
  const err = await fails('local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(100) .. i end', 'limit', {
    limits: { memoryBytes: 32 * 1024 * 1024, cpuMs: 60_000 },
  });
  assert.match(err.message, /memory over 33554432 bytes/);
  assert.ok(performance.now() - started < 10_000);
  await stillServes();
});

test('limit: one-instruction amplifiers (string.rep, .. doubling, table.concat, string.pack) are capped', async () => {
  const limits = { memoryBytes: 32 * 1024 * 1024 };
  const sources = [
    'local s = ("x"):rep(1e9)',
    'print(pcall(string.rep, "x", 1e9))',
    'local s = "x" for i = 1, 40 do s = s .. s end',
    'local t = {} for i = 1, 1000 do t[i] = "x" end local s = table.concat(t, ("y"):rep(1e6))',
    'local s = string.pack("c2000000000", "")',
  ];
  for (const source of sources) {
    const err = await fails(source, 'limit', { limits });
    assert.match(err.message, /memory over/, source);
  }
  // Under the cap they work. (16 MB in all stays under the 32 MB cap even if no garbage is
  // collected: the guard measures the worker's heap growth, and whether a forced GC discounts
  // garbage in time is not reliable while other work allocates, as in a parallel test run.)
  const out = await ok('local n = 0 for i = 1, 8 do n = n + #(("x"):rep(2e6)) end print(n, ("ab"):rep(3, ","), ("x"):rep(0), ("x"):rep(2, ""))', { limits });
  assert.equal(out.text, '16000000\tab,ab,ab\t\txx\n');
  await stillServes();
});

test('deep recursion ends cleanly (stack overflow or memory), and the engine serves afterwards', async () => {
  // Generous CPU and wall limits: on a loaded machine the default CPU limit could end the run
  // first, which is not what this tests.
  const out = await runLua('local function f() return f() + 1 end f()', { limits: { cpuMs: 600_000, wallMs: 600_000 } });
  assert.ok(out.error);
  assert.ok(
    (out.error.kind === 'runtime' && /stack overflow/.test(out.error.message)) || (out.error.kind === 'limit' && /memory/.test(out.error.message)),
    `${out.error.kind}: ${out.error.message}`,
  );
  await stillServes();
});

test('limit: output over outputBytes fails the run even inside pcall', async () => {
  const err = await fails('for i = 1, 1e6 do pcall(print, ("x"):rep(100)) end print("after")', 'limit', { limits: { outputBytes: 1000 } });
  assert.match(err.message, /output over 1000 bytes/);
  const direct = await fails('while true do write(("y"):rep(1000)) end', 'limit', { limits: { outputBytes: 5000 } });
  assert.match(direct.message, /output over/);
  await stillServes();
});

test('limit: wall time stops a sleeping script; an abort by the web server too', async () => {
  const started = performance.now();
  const err = await fails('sleep(1000) print("never")', 'limit', { limits: { wallMs: 50 } });
  assert.match(err.message, /wall time over 50 ms/);
  assert.ok(performance.now() - started < 1000);
  const aborted = await runLua('pcall(sleep, 1000) print("never")', {}, (t) => {
    setTimeout(() => t.request.abort(new Error('client went away')), 10);
  });
  assert.equal(aborted.error?.kind, 'limit');
  assert.match(aborted.error.message, /aborted/);
  await stillServes();
});

test('coroutines: sleep inside coroutine.wrap/resume is transparent to the script', async () => {
  const out = await ok(
    [
      'local f = coroutine.wrap(function() sleep(5); coroutine.yield(1) end)',
      'print(f())',
      'local co = coroutine.create(function(a) local ok = pcall(sleep, 5) local b = coroutine.yield(a + 1) sleep(1) return b * 2, ok end)',
      'print(coroutine.resume(co, 1))',
      'print(coroutine.resume(co, 10))',
      'print(coroutine.status(co), coroutine.resume(co))',
      'local g = coroutine.wrap(function() local inner = coroutine.wrap(function() sleep(2) coroutine.yield("in") end) coroutine.yield(inner()) end)',
      'print(g())',
    ].join('\n'),
  );
  assert.equal(out.text, '1\ntrue\t2\ntrue\t20\ttrue\ndead\tfalse\tcannot resume dead coroutine\nin\n');
});

test('a host call where Lua cannot yield is a clear error', async () => {
  const err = await fails('table.sort({3, 2, 1}, function(a, b) sleep(1) return a < b end)', 'runtime');
  assert.match(err.message, /sleep\(\) cannot wait here/);
  await stillServes();
});

test('lighty: req_header, req_attr, resp_header, resp_body, env, return code', async () => {
  const out = await ok(
    [
      'local r = lighty.r',
      'r.resp_header["X-UA"] = r.req_header["User-Agent"]',
      'r.resp_body.add({"path=", r.req_attr["uri.path"], " "})',
      'r.resp_body.add(lighty.env["request.method"] .. " " .. r.req_attr["physical.path"])',
      'print("printed first")',
      'print(r.resp_header["x-ua"], r.req_attr["uri.query"], r.req_attr["no.such"])',
      'return 404',
    ].join('\n'),
    { params: { HTTP_USER_AGENT: 'UA/2', REQUEST_URI: '/p%20q?z=1', QUERY_STRING: 'z=1' } },
  );
  assert.equal(out.value, 404);
  assert.equal(out.headers['x-ua'], 'UA/2');
  assert.equal(out.text, `printed first\nUA/2\tz=1\tnil\npath=/p q GET ${PATH}`);
  const set = await ok('lighty.r.resp_body.add("old") lighty.r.resp_body.set("new") lighty.r.resp_body.add(1) print(lighty.r.resp_body.get())');
  assert.equal(set.text, 'new1\nnew1');
  const old = await ok('lighty.header["X-Old"] = "1" lighty.content = {"a", "b"} return 200');
  assert.equal(old.text, 'ab');
  assert.equal(old.headers['x-old'], '1');
  assert.equal(old.value, 200);
  const ro = await fails('lighty.r.req_attr["uri.path"] = "/x"', 'runtime');
  assert.match(ro.message, /read-only/);
});

test('bytecode: dump, load in a new engine, same output and error lines; garbage is refused', async () => {
  const source = 'print("from bytecode", 1 + 1)\nif request.query.fail then\n  error("line three")\nend';
  const script = engine.compile(source, PATH);
  const bytes = engine.dump(script);
  assert.ok(bytes.length > 0);
  const other = new LuaEngine();
  const loaded = other.load(bytes, PATH);
  assert.equal(loaded.path, PATH);
  assert.equal(other.compiles, 0);

  const t = makeHost({ scriptFilename: PATH });
  await other.run(loaded, t.host);
  assert.equal(t.result().body.toString(), 'from bytecode\t2\n');
  const f = makeHost({ scriptFilename: PATH, params: { QUERY_STRING: 'fail=1' } });
  await assert.rejects(other.run(loaded, f.host), (err: unknown) => err instanceof ScriptError && err.line === 3 && err.message === 'line three');

  for (const garbage of [new Uint8Array([1, 2, 3]), Buffer.from('print("text is not bytecode")'), bytes.subarray(0, bytes.length >> 1)]) {
    assert.throws(() => other.load(garbage, PATH), ScriptError);
  }
  await assert.rejects(other.run(script, makeHost().host), TypeError);
});

test('compiles counts compile() calls, not load() or run()', async () => {
  const fresh = new LuaEngine();
  assert.equal(fresh.compiles, 0);
  const script = fresh.compile('print(1)', PATH);
  assert.equal(fresh.compiles, 1);
  for (let i = 0; i < 3; i++) await fresh.run(script, makeHost().host);
  fresh.load(fresh.dump(script), PATH);
  assert.equal(fresh.compiles, 1);
  assert.throws(() => fresh.compile('(', PATH), ScriptError);
  assert.equal(fresh.compiles, 2);
  script.dispose();
  script.dispose();
  await assert.rejects(fresh.run(script, makeHost().host), TypeError);
});

// ---- the slow log (slowRequestMs) ----------------------------------------------------------

test('slow log: a run busy past slowRequestMs in a coroutine logs, from the count hook, the coroutine\'s frames then its own', async () => {
  const { services, lines } = slowLogged(50);
  const source = [
    'local function spin()',
    '  local stop = os.clock() + 0.2',
    '  while os.clock() < stop do end',
    'end',
    'local gen = coroutine.wrap(function()',
    '  spin()',
    'end)',
    'gen()',
    'print("done")',
  ].join('\n');
  const out = await runLua(source, { services, limits: { cpuMs: 5000 } });
  assert.equal(out.text, 'done\n');
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(lines[0]!, / warn LS_SLOW_REQUEST slow request still running conn=1 request=1 script=\/srv\/www\/test\.lua uri="\/test\?x=1" ms=\d+ /);
  // The function coroutine.wrap made is a JS function to fengari: [JS], named by its caller.
  assert.ok(lines[0]!.endsWith(' stack="spin test.lua:3 < test.lua:6 < gen [JS] < test.lua:8"'), lines[0]);
});

test('slow log: one line for a run busy past slowRequestMs and then waiting; none for a run under it', async () => {
  const { services, lines } = slowLogged(50);
  // Busy six times the threshold: the count hook runs many times past it, even on a loaded
  // machine that stops the process for a while.
  const source = 'local stop = os.clock() + 0.3\nwhile os.clock() < stop do end\nsleep(100)\nprint("done")';
  assert.equal((await runLua(source, { services, limits: { cpuMs: 5000 } })).text, 'done\n');
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.ok(lines[0]!.endsWith(' stack=test.lua:2'), lines[0]);
  const quick = slowLogged(1000);
  assert.equal((await runLua('sleep(20)\nprint("quick")', { services: quick.services })).text, 'quick\n');
  assert.deepEqual(quick.lines, []);
});
