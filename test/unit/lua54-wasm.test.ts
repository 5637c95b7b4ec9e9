/**
 * The Lua 5.4 wasm binary against our loader (runtime/engines/lua54/wasm.ts): wasmoon is pinned,
 * but a new version must not slip in with imports the loader does not answer, and the engine's
 * own defences (no file system, a capped heap, a module replaced after a fault) must hold.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { Lua54Engine } from '../../runtime/engines/lua54/engine.js';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LuaModule, luaWasmModule, strftime } from '../../runtime/engines/lua54/wasm.js';
import { LUA_REGISTRYINDEX, LUA_TFUNCTION } from '../../runtime/engines/lua54/capi.js';
import { wasm } from '../../runtime/engines/wasm-api.js';
import { serve } from '../helpers/script-host.js';

test('lua54: every import of the binary is one the loader provides', () => {
  const wanted = wasm.Module.imports(luaWasmModule()).map((i) => `${i.module}.${i.name}`);
  assert.ok(wanted.length > 10, 'the binary imports its host functions');
  // Instantiation fails with a LinkError when one is missing.
  const m = new LuaModule(64 * 1024 * 1024);
  assert.ok(m.memoryBytes > 0);
});

test('lua54: the heap cannot grow past maxBytes; the state reports memory, the module survives', async () => {
  const engine = new Lua54Engine({ maxHeapBytes: 48 * 1024 * 1024 });
  const big = await serve(engine, 'local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(64) .. i end', { limits: { memoryBytes: 512 * 1024 * 1024 } });
  assert.equal(big.error?.kind, 'limit', `got ${big.error?.message}`);
  assert.equal((await serve(engine, 'print("after")')).text, 'after\n');
});

test('lua54: a binary chunk is refused by load, and string.dump is not there to make one', async () => {
  const engine = new Lua54Engine();
  const out = await serve(engine, 'print(load("\\27Lua\\x54\\0"))\nprint(string.dump, ("").dump)');
  assert.equal(out.text, "nil\tattempt to load a binary chunk (mode is 't')\nnil\tnil\n");
});

test('lua54: its own bytecode round-trips through dump and load, and runs with line numbers', async () => {
  const engine = new Lua54Engine();
  const script = engine.compile('print("from bytecode")\nerror("line two")', '/srv/www/test.lua');
  const loaded = engine.load(engine.dump(script), '/srv/www/test.lua');
  const out = await serve(engine, loaded);
  assert.equal(out.text, 'from bytecode\n');
  assert.equal(out.error?.line, 2);
});

/**
 * Issue 20's hostile inputs, each a clean error of the run (a limit or a script error), the
 * engine serving the next request; the sandbox-limits integration suite runs the same kinds of
 * attack through a real server.
 */
const hostile: Array<[name: string, source: string, kind: 'limit' | 'runtime']> = [
  ['a string.rep bomb', 'local s = string.rep("x", 2^31)', 'runtime'],
  ['a string.rep bomb with a separator', 'local s = ("abc"):rep(1e9, ",")', 'runtime'],
  ['a huge string.format width', 'local s = string.format("%99999999d", 1)', 'runtime'],
  ['a table that grows forever', 'local t = {} local i = 0 while true do i = i + 1 t[i] = {i} end', 'limit'],
  ['deep recursion', 'local function f(n) return 1 + f(n + 1) end f(1)', 'limit'],
  ['a C-stack overflow through nested coroutine.wrap', 'local function f() return coroutine.wrap(f)() end f()', 'runtime'],
  ['an endless xpcall handler around an endless loop', 'xpcall(function() while true do end end, function() while true do end end)', 'limit'],
  ['a concatenation bomb', 'local t = {} for i = 1, 100 do t[i] = ("x"):rep(1e6) end local s = table.concat(t) .. table.concat(t)', 'limit'],
  ['a gsub bomb', 'local s = ("x"):rep(1e6):gsub("x", ("y"):rep(1000))', 'limit'],
  ['string.char of ten million arguments', 'local t = {} for i = 1, 1e7 do t[i] = 65 end print(#string.char(table.unpack(t)))', 'limit'],
];

for (const [name, source, kind] of hostile) {
  test(`lua54: hostile: ${name} is a ${kind} error, and the next request is served`, async () => {
    const engine = new Lua54Engine();
    const out = await serve(engine, source, { limits: { cpuMs: 400, memoryBytes: 32 * 1024 * 1024 } });
    assert.equal(out.error?.kind, kind, `got ${out.error ? `${out.error.kind}: ${out.error.message}` : 'success'}`);
    assert.equal((await serve(engine, 'print("next")')).text, 'next\n');
  });
}

test('lua54: gsub, sort, rep and move, wrapped so the count hook sees their loops, answer as stock Lua', async () => {
  const engine = new Lua54Engine();
  const out = await serve(
    engine,
    [
      'local t = {} for i = 1, 10000 do t[i] = i end',
      'table.move(t, 1, 9000, 500) -- overlapping, copied back to front in chunks',
      'print(t[499], t[500], t[9499], t[9500])',
      'local u = {} for i = 1, 10000 do u[i] = i end',
      'table.move(u, 500, 10000, 1)',
      'print(u[1], u[9501], u[9502], #table.move(u, 1, 10000, 1, {}))',
      'print(("abc"):gsub("%w", string.upper))',
      'print(("abc"):gsub("%w", setmetatable({}, { __index = function(_, k) return k .. k end })))',
      'print(("a b"):gsub("%w", { a = "1" }, 1))',
      'local s = { 3, 1, 2 } table.sort(s, math.ult) print(s[1], s[3])',
      'print(("").rep("", 2^20) == "", ("x"):rep(3, ","))',
      'print(pcall(string.rep))',
      'print(pcall(table.move, {}, 1, 5000, math.maxinteger - 2))',
      'string.gsub("x")',
    ].join('\n'),
  );
  assert.equal(
    out.text,
    '499\t1\t9000\t9500\n500\t10000\t9502\t10000\nABC\t3\naabbcc\t3\n1 b\t1\n1\t3\ntrue\tx,x,x\n' +
      "false\tbad argument #1 to 'rep' (string expected, got no value)\n" +
      "false\tbad argument #4 to 'move' (destination wrap around)\n",
  );
  // The argument error is placed at the script's line, not inside the sandbox's wrapper.
  assert.equal(out.error?.line, 14);
  assert.equal(out.error?.message, "bad argument #2 to 'gsub' (string expected, got no value)");
});

test('lua54: nested pcall to the C-stack limit returns, the engine serves on', async () => {
  const engine = new Lua54Engine();
  const out = await serve(engine, 'local function f() return pcall(f) end print((f()))');
  assert.equal(out.error, null);
  assert.equal(out.text, 'true\n');
  assert.equal((await serve(engine, 'print("next")')).text, 'next\n');
});

test('lua54: os.date formats as GNU date does, every conversion, ISO weeks across eight new years', () => {
  const stamps: number[] = [];
  for (let d = 0; d < 3000; d++) stamps.push(Date.UTC(2019, 11, 20) / 1000 + d * 86_400 + (d % 7) * 5 * 3600);
  const file = join(tmpdir(), `lodestone-strftime-${process.pid}.txt`);
  writeFileSync(file, stamps.map((t) => `@${t}`).join('\n'));
  const format = '%Y-%m-%d %H:%M:%S %a %A %b %B %j %U %W %V %G %g %u %w %p %I %c %x %X %D %F %T %R %e %y %C %z %Z %%';
  const want = execFileSync('date', ['-u', '-f', file, `+${format}`], { env: { TZ: 'UTC' } }).toString().trim().split('\n');
  stamps.forEach((t, k) => {
    const d = new Date(t * 1000);
    const tm = new Int32Array(11);
    tm.set([d.getUTCSeconds(), d.getUTCMinutes(), d.getUTCHours(), d.getUTCDate(), d.getUTCMonth(), d.getUTCFullYear() - 1900, d.getUTCDay(), Math.floor((t * 1000 - Date.UTC(d.getUTCFullYear(), 0, 1)) / 86_400_000)]);
    assert.equal(strftime(format, tm, 0), want[k], d.toISOString());
  });
});

test('lua54: os.date and os.time in a script', async () => {
  const engine = new Lua54Engine();
  const out = await serve(engine, 'print(os.date("!%Y-%m-%d %H:%M:%S", 1765000000), os.date("!*t", 0).year, os.time({year = 2020, month = 1, day = 1, hour = 0}) ~= nil)');
  assert.equal(out.text, '2025-12-06 05:46:40\t1970\ttrue\n');
});

test('lua54: a disposed script lets go of its function in every state that loaded it', async () => {
  const engine = new Lua54Engine();
  const script = engine.compile('print("x")', '/srv/www/x.lua');
  assert.equal((await serve(engine, script)).text, 'x\n');
  // The engine's insides, to see the registry slot itself.
  type Api = { lua_rawgeti(L: number, idx: number, n: bigint): number; lua_settop(L: number, idx: number): void };
  const inside = engine as unknown as { idle: Array<{ L: number; scripts: WeakMap<object, number> }>; world: { api: { x: Api } } };
  const state = inside.idle[0]!;
  const x = inside.world.api.x;
  const ref = state.scripts.get(script);
  assert.ok(ref !== undefined, 'the run loaded the script in the idle state');
  const typeAt = (): number => {
    const t = x.lua_rawgeti(state.L, LUA_REGISTRYINDEX, BigInt(ref));
    x.lua_settop(state.L, 0);
    return t;
  };
  assert.equal(typeAt(), LUA_TFUNCTION);
  script.dispose();
  assert.equal(state.scripts.get(script), undefined);
  assert.notEqual(typeAt(), LUA_TFUNCTION, 'the registry slot was released');
  // The same script run again loads anew; a new version runs.
  assert.equal((await serve(engine, script)).text, 'x\n');
  assert.equal((await serve(engine, engine.compile('print("y")', '/srv/www/x.lua'))).text, 'y\n');
});
