/**
 * Shared modules on Lua 5.4 (runtime/engines/lua54/shared-modules-lua.ts; README, "Modules"):
 * a module's top level runs once per lua_State and every run sees it as it loaded. The
 * engine-conformance modules suite checks the behaviour every engine shares (a counter starts
 * afresh, functions act on the calling request); this file checks what sharing itself must get
 * right, with the compiled modules kept from one request to the next as a worker keeps them.
 *
 * Whether a module was shared is read from `math.random()` at its top level: the same number in
 * two runs means one load; a module that runs per request draws a new one each time.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { Lua54Engine } from '../../runtime/engines/lua54/engine.js';
import type { ModuleSlots } from '../../runtime/engines/modules.js';
import { assignedUpvalues } from '../../runtime/engines/lua54/bytecode.js';
import { compileModules, serve, type Served, type ServeOptions } from '../helpers/script-host.js';

/** An engine and its modules, compiled once: serve() runs a script with them. */
function site(sources: Record<string, string>): { engine: Lua54Engine; run: (script: string, opts?: ServeOptions) => Promise<Served>; modules: ModuleSlots } {
  const engine = new Lua54Engine();
  const modules = compileModules(engine, sources);
  return {
    engine,
    modules,
    async run(script, opts = {}) {
      const out = await serve(engine, script, { ...opts, modules });
      assert.equal(out.error, null, `the run failed: ${out.error?.message}`);
      return out;
    },
  };
}

const DRAW = 'M.drawn = math.random()\n';

test('lua54: a module that keeps no request is loaded once; one that touches the request at its top level runs per request', async () => {
  const s = site({
    plain: `local M = {}\n${DRAW}function M.twice(x) return x * 2 end\nreturn M`,
    logs: `local M = {}\n${DRAW}log("loading logs")\nreturn M`,
    asks: `local M = {}\n${DRAW}M.who = request.query.who\nreturn M`,
    reads: `local M = {}\n${DRAW}M.mode = MODE\nreturn M`,
    coro: `local M = {}\n${DRAW}M.co = coroutine.create(function() end)\nreturn M`,
    fails: `local M = {}\n${DRAW}if not pcall(print, "x") then M.quiet = true end\nreturn M`,
  });
  const names = ['plain', 'logs', 'asks', 'reads', 'coro', 'fails'];
  const script = `MODE = request.query.who\nfor _, n in ipairs({ ${names.map((n) => `"${n}"`).join(', ')} }) do write(n, "=", require(n).drawn, " ") end`;
  const a = await s.run(script, { params: { QUERY_STRING: 'who=alice' } });
  const b = await s.run(script, { params: { QUERY_STRING: 'who=bob' } });
  const drawn = (out: Served): Record<string, string> => Object.fromEntries([...out.text.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]));
  const [da, db] = [drawn(a), drawn(b)];
  assert.deepEqual(Object.keys(da), names);
  assert.equal(da.plain, db.plain, 'plain is loaded once');
  for (const n of names.slice(1)) assert.notEqual(da[n], db[n], `${n} runs per request`);
  // Per request, each run keeps its own behaviour: the log line, the request's own values.
  assert.match(b.stderr, /loading logs/);
  assert.equal((await s.run('print(require("asks").who, require("reads").mode)', { params: { QUERY_STRING: 'who=carol' } })).text, 'carol\tnil\n');
  assert.equal((await s.run('MODE = "x"\nprint(require("reads").mode)')).text, 'x\n');
});

test("lua54: what a run writes to a shared module (tables, locals, globals) is gone in the next run", async () => {
  const s = site({
    util: [
      'local M = { list = { "a", "b", "c" }, conf = { path = "/", depth = 2 } }',
      DRAW.trim(),
      'local hits, cache = 0, {}',
      'function M.hit(k) hits = hits + 1 cache[k] = (cache[k] or 0) + 1 return hits, cache[k] end',
      'function M.reset() cache = { reset = true } end',
      'function M.cached(k) return cache[k] end',
      'function M.setGlobal(v) leaked = v end',
      'local made = 0',
      'function M.maker() return function() made = made + 1 return made end end',
      'return M',
    ].join('\n'),
  });
  const first = await s.run(
    [
      'local u = require("util")',
      'u.list[4] = "d"; table.insert(u.list, 1, "z"); u.list[2] = nil',
      'u.conf.path = "/admin"; u.conf.extra = true; u.added = 1',
      'u.hit("k"); u.hit("k"); u.reset(); u.hit("j"); u.setGlobal("mine")',
      'local m = u.maker() m() m()',
      'print(#u.list, u.conf.path, u.added, u.cached("reset"), leaked, m())',
    ].join('\n'),
  );
  assert.equal(first.text, '5\t/admin\t1\ttrue\tmine\t3\n');
  const second = await s.run(
    [
      'local u = require("util")',
      'print(#u.list, table.concat(u.list, ","), u.conf.path, u.conf.extra, u.added)',
      'print(u.hit("k"))',
      'print(u.cached("reset"), leaked, u.maker()())',
    ].join('\n'),
  );
  assert.equal(second.text, '3\ta,b,c\t/\tnil\tnil\n1\t1\nnil\tnil\t1\n');
});

test('lua54: a shared table reads like a plain one: pairs, next, rawget, rawlen, #, ipairs, json, host options', async () => {
  const s = site({
    data: [
      'local M = { list = { 10, 20, 30 }, map = { a = 1, b = 2 }, cookie = { path = "/shop", httpOnly = true }, arr = json.array({}) }',
      'return M',
    ].join('\n'),
  });
  const read = [
    'local d = require("data")',
    'local keys = {} for k, v in pairs(d.map) do keys[#keys + 1] = k .. v end table.sort(keys)',
    'local n = 0 for _, v in ipairs(d.list) do n = n + v end',
    'print(table.concat(keys, ","), n, #d.list, rawlen(d.list), rawget(d.map, "a"), next(d.list) ~= nil, type(d.map))',
    'print(json.encode(d.list), json.encode(d.map.a), json.encode(d.arr))',
    'response.cookie("s", "v", d.cookie)',
  ].join('\n');
  const out = await s.run(read);
  assert.equal(out.text, 'a1,b2\t60\t3\t3\t1\ttrue\ttable\n[10,20,30]\t1\t[]\n');
  assert.match(out.headers['set-cookie'] ?? '', /Path=\/shop.*HttpOnly/i);
  // Written, the table is the run's copy: the raw functions and the host see the run's values.
  const written = await s.run(
    [
      'local d = require("data")',
      'rawset(d.map, "c", 3); d.list[#d.list + 1] = 40',
      'local keys = {} for k in pairs(d.map) do keys[#keys + 1] = k end table.sort(keys)',
      'print(table.concat(keys, ","), #d.list, rawlen(d.list), json.encode(d.list))',
    ].join('\n'),
  );
  assert.equal(written.text, 'a,b,c\t4\t4\t[10,20,30,40]\n');
  assert.equal((await s.run(read)).text, out.text);
});

test('lua54: classes in a shared module: methods, metatables and setmetatable work, and a run cannot change them for the next', async () => {
  const s = site({
    point: [
      'local Point = {}',
      'Point.__index = Point',
      'Point.__tostring = function(p) return "(" .. p.x .. "," .. p.y .. ")" end',
      'function Point.new(x, y) return setmetatable({ x = x, y = y }, Point) end',
      'function Point:len2() return self.x * self.x + self.y * self.y end',
      'local M = { Point = Point, origin = Point.new(0, 0) }',
      'return M',
    ].join('\n'),
  });
  const script = [
    'local M = require("point")',
    'local p = M.Point.new(3, 4)',
    'print(p:len2(), tostring(p), tostring(M.origin), getmetatable(p) == M.Point, M.origin:len2())',
  ].join('\n');
  const first = await s.run(script + '\nM.Point.len2 = function() return -1 end\ngetmetatable(M.origin).__tostring = nil\nprint(p:len2())');
  assert.equal(first.text, '25\t(3,4)\t(0,0)\ttrue\t0\n-1\n');
  assert.equal((await s.run(script)).text, '25\t(3,4)\t(0,0)\ttrue\t0\n');
});

test("lua54: a shared module's functions see the calling run's globals and request; its top level's globals are each run's", async () => {
  const s = site({
    greet: 'greeting = "hello"\nlocal M = {}\nfunction M.say() print(greeting .. " " .. request.query.who .. (suffix or "")) end\nreturn M',
  });
  assert.equal((await s.run('suffix = "!"\nrequire("greet").say()', { params: { QUERY_STRING: 'who=alice' } })).text, 'hello alice!\n');
  assert.equal((await s.run('greeting = "x"\nlocal g = require("greet")\ng.say()\nprint(greeting)', { params: { QUERY_STRING: 'who=bob' } })).text, 'hello bob\nhello\n');
  assert.equal((await s.run('print(greeting, suffix)')).text, 'nil\tnil\n');
});

test('lua54: nested shared modules keep one identity; a module requiring one that runs per request runs per request too', async () => {
  const s = site({
    inner: `local M = {}\n${DRAW}M.items = { 1, 2 }\nreturn M`,
    outer: `local inner = require("inner")\nlocal M = { inner = inner }\n${DRAW}function M.count() return #inner.items end\nreturn M`,
    perRequest: `local M = {}\n${DRAW}M.who = request.query.who\nreturn M`,
    user: `local p = require("perRequest")\nlocal M = {}\n${DRAW}M.p = p\nreturn M`,
  });
  const script = 'local o = require("outer")\nprint(o.inner == require("inner"), o.count(), o.drawn, require("inner").drawn, require("user").drawn, require("user").p.who)';
  const a = (await s.run(script, { params: { QUERY_STRING: 'who=a' } })).text.split('\t');
  const b = (await s.run('table.insert(require("inner").items, 3)\n' + script, { params: { QUERY_STRING: 'who=b' } })).text.split('\t');
  assert.deepEqual([a[0], a[1], b[0], b[1]], ['true', '2', 'true', '3']);
  assert.equal(a[2], b[2], 'outer loaded once');
  assert.equal(a[3], b[3], 'inner loaded once');
  assert.notEqual(a[4], b[4], 'user runs per request');
  assert.deepEqual([a[5], b[5]], ['a\n', 'b\n']);
});

test('lua54: an error in a shared module is placed at the script line; a limit in one run leaves the module whole for the next', async () => {
  const s = site({
    strict: 'local M = setmetatable({}, { __newindex = function(_, k) error("no field " .. k, 2) end })\nrawset(M, "ok", 1)\nreturn M',
    loop: `local M = { n = 0 }\n${DRAW}function M.spin() while true do M.n = M.n + 1 end end\nreturn M`,
  });
  const bad = await serve(s.engine, 'local m = require("strict")\n\nm.nope = 1', { modules: s.modules });
  assert.equal(bad.error?.kind, 'runtime');
  assert.match(bad.error?.message ?? '', /no field nope/);
  assert.equal(bad.error?.line, 3);
  assert.equal((await s.run('print(require("loop").n)')).text, '0\n');
  const spun = await serve(s.engine, 'require("loop").spin()', { modules: s.modules, limits: { cpuMs: 50 } });
  assert.equal(spun.error?.kind, 'limit');
  const after = await s.run('local l = require("loop")\nprint(l.n)');
  assert.equal(after.text, '0\n');
});

test('lua54: the bytecode reader names the upvalues a module assigns, nested closures included, and gives up on what it does not know', () => {
  const engine = new Lua54Engine();
  const dumpOf = (source: string): Uint8Array => engine.dump(engine.compile(source, '/srv/www/lib/m.lua', 'module'));
  const names = (source: string): string[] | null => assignedUpvalues(dumpOf(source))?.sort() ?? null;
  assert.deepEqual(names('local a, b, c = 1, 2, 3\nlocal M = {}\nfunction M.f() a = a + 1 return b end\nreturn M'), ['a']);
  assert.deepEqual(names('local n = 0\nreturn function() return function() return function() n = n + 1 end end end'), ['n']);
  assert.deepEqual(names('local x = 1\nlocal function f() local y = 0 local g = function() y = y + x end g() return y end\nreturn f'), ['y']);
  assert.deepEqual(names('local t = {}\nreturn function(k, v) t[k] = v end'), []);
  const dump = Buffer.from(dumpOf('local n = 0\nreturn function() n = 1 end'));
  assert.equal(assignedUpvalues(dump.subarray(0, dump.length - 3)), null, 'a cut dump');
  const other = Buffer.from(dump);
  other[4] = 0x53;
  assert.equal(assignedUpvalues(other), null, 'another Lua version');
});
