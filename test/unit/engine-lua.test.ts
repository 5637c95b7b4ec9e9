/**
 * What only the Lua engine has, against a real ScriptHost: fengari's version and limit guards,
 * Lua's own forms of the sandbox (read-only libraries and tables, rawset, _G, load, binary
 * chunks), pcall and coroutines against the limits, the one-instruction amplifiers, mod_magnet's
 * lighty table, bytecode dump/load and a synchronous run. The behaviours every engine shares are the
 * conformance tables (engine-conformance-*.test.ts, engine-cache-api.test.ts), run on this
 * engine too. One engine serves most tests, in order, as one worker serves requests.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { ScriptError } from '../../runtime/engines/engine.js';
import { locate } from '../../runtime/engines/lua-chunk.js';
import { LuaEngine } from '../../runtime/engines/lua.js';
import { guardsInstalled } from '../../runtime/engines/lua/guards.js';
import { makeHost, serve, slowLogged, type Served, type ServeOptions } from '../helpers/script-host.js';

const engine = new LuaEngine();
const PATH = '/srv/www/test.lua';

/** Serves `source` as one request (test/helpers/script-host.ts's serve, as the pipeline runs it). */
function runLua(source: string, opts: ServeOptions = {}): Promise<Served> {
  return serve(engine, source, { scriptFilename: PATH, ...opts });
}

/** Runs a script that must succeed; returns its outcome. */
async function ok(source: string, opts: ServeOptions = {}): Promise<Served> {
  const out = await runLua(source, opts);
  assert.equal(out.error, null, `unexpected ${out.error?.kind} error: ${out.error?.location}: ${out.error?.message}`);
  return out;
}

/** Runs a script that must fail with `kind`; returns the error. */
async function fails(source: string, kind: ScriptError['kind'], opts: ServeOptions = {}): Promise<ScriptError> {
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

test('engine identity: a version naming fengari and Lua 5.3', () => {
  assert.match(engine.version, /0\.1\.5/);
  assert.match(engine.version, /Lua 5\.3/);
});

test('every limit guard found the fengari shape it patches (a fengari upgrade that changes one fails here)', async () => {
  await ok('print("hello")');
  assert.deepEqual(guardsInstalled, { results: true, operands: true, apiConcat: true, buffers: true, compare: true, patterns: true });
});

test('request.body() returns the posted bytes as a Lua string, twice', async () => {
  const body = Buffer.from([0x00, 0xff, 0x80, 0x41, 0x0a]);
  const out = await ok('local b = request.body() local c = request.body() write(#b, ":", b:byte(1), ",", b:byte(2), ",", tostring(b == c), ":") write(b)', { body });
  assert.deepEqual(out.body, Buffer.concat([Buffer.from('5:0,255,true:'), body]));
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

test('run: a run that never waits ends synchronously, one that waits returns a promise', async () => {
  const quick = makeHost({ scriptFilename: PATH });
  quick.host.start();
  assert.equal(engine.run(engine.compile('write("x") return 201', PATH), quick.host), 201);
  quick.host.finish();
  const slow = makeHost({ scriptFilename: PATH });
  slow.host.start();
  const waiting = engine.run(engine.compile('sleep(1) return 202', PATH), slow.host);
  assert.ok(waiting instanceof Promise);
  assert.equal(await waiting, 202);
  slow.host.finish();
  const failing = makeHost({ scriptFilename: PATH });
  failing.host.start();
  assert.throws(() => engine.run(engine.compile('error("boom")', PATH), failing.host), (err: unknown) => err instanceof ScriptError && err.line === 1);
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

test('response takes only status and headers; a status that is not a number is a Lua error at its line', async () => {
  // Lua converts a numeric string as it does in arithmetic: "404" is 404 (JS refuses a string).
  const out = await ok('print(pcall(function() response.foo = 1 end)) response.status = "404"');
  assert.match(out.text, /^false\t.*response\.foo cannot be set/);
  assert.equal(out.status, 404);
  const err = await fails('response.status = "abc"', 'runtime');
  assert.match(err.message, /response\.status must be a number/);
  assert.equal(err.line, 1);
});

test('_G is the request env; load() runs in it; neither survives the request', async () => {
  const first = await ok('x = 1 _G.y = 2 print(x, y, _G.x, load("return x + y")())');
  assert.equal(first.text, '1\t2\t1\t3\n');
  const second = await ok('print(_G.x, _G.y, load("return x")())');
  assert.equal(second.text, 'nil\tnil\tnil\n');
});

test('shared libraries are read-only, even nested or raw, and stay intact', async () => {
  // (string.rep = nil and string.evil = print: the conformance tables.)
  const attempts = [
    'math.pi = 3',
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

test('what the sandbox keeps: os.time, os.clock, os.date, unpack, utf8, Lua 5.3', async () => {
  // What it leaves out (io, os.execute, require, debug, js...): engine-conformance-sandbox.test.ts.
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

test('error levels and chunk names: an error without a position in the script has no line', async () => {
  const level0 = await fails('error("plain", 0)', 'runtime');
  assert.deepEqual([level0.message, level0.line], ['plain', null]);
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

test('limit: xpcall and coroutines cannot swallow a limit either', async () => {
  // pcall in a loop, pcall(error) before a loop, coroutine.resume in a loop: the conformance tables.
  const sources = [
    'while true do xpcall(function() while true do end end, function(e) return e end) end',
    'while true do pcall(coroutine.wrap(function() while true do end end)) end',
    'while true do pcall(error, "x") end',
    // After a caught error the hook must still run (fengari 0.1.5 switched it off).
    'xpcall(error, print, "x") local n = 0 while true do n = n + 1 end',
    'coroutine.wrap(function() pcall(error, "x") while true do end end)()',
  ];
  for (const source of sources) {
    const err = await fails(source, 'limit', { limits: { cpuMs: 40 } });
    assert.match(err.message, /CPU time/, source);
  }
  await stillServes();
});

test('limit: one-instruction amplifiers (string.rep, .. doubling, table.concat, string.pack) are capped', async () => {
  const limits = { memoryBytes: 32 * 1024 * 1024 };
  // (A plain ("x"):rep(1e9): the conformance tables.)
  const sources = [
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
  assert.equal(out.returned, 404);
  assert.equal(out.headers['x-ua'], 'UA/2');
  assert.equal(out.text, `printed first\nUA/2\tz=1\tnil\npath=/p q GET ${PATH}`);
  const set = await ok('lighty.r.resp_body.add("old") lighty.r.resp_body.set("new") lighty.r.resp_body.add(1) print(lighty.r.resp_body.get())');
  assert.equal(set.text, 'new1\nnew1');
  const old = await ok('lighty.header["X-Old"] = "1" lighty.content = {"a", "b"} return 200');
  assert.equal(old.text, 'ab');
  assert.equal(old.headers['x-old'], '1');
  assert.equal(old.returned, 200);
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

  assert.equal((await serve(other, loaded, { scriptFilename: PATH })).text, 'from bytecode\t2\n');
  const failed = await serve(other, loaded, { scriptFilename: PATH, params: { QUERY_STRING: 'fail=1' } });
  assert.equal(failed.error?.location, `${PATH}:3`);
  assert.equal(failed.error.message, 'line three');

  for (const garbage of [new Uint8Array([1, 2, 3]), Buffer.from('print("text is not bytecode")'), bytes.subarray(0, bytes.length >> 1)]) {
    assert.throws(() => other.load(garbage, PATH), ScriptError);
  }
  assert.throws(() => other.run(script, makeHost().host), TypeError);
});

test('load() is not a compile; a disposed script cannot run', () => {
  // compile() and run() against the count: engine-conformance-api.test.ts.
  const fresh = new LuaEngine();
  assert.equal(fresh.compiles, 0);
  const script = fresh.compile('print(1)', PATH);
  fresh.load(fresh.dump(script), PATH);
  assert.equal(fresh.compiles, 1);
  script.dispose();
  script.dispose();
  assert.throws(() => fresh.run(script, makeHost().host), TypeError);
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
