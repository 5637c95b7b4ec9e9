/**
 * The Lua 5.4 wasm binary against our loader (runtime/engines/lua54/wasm.ts): wasmoon is pinned,
 * but a new version must not slip in with imports the loader does not answer, and the engine's
 * own defences (no file system, a capped heap, a module replaced after a fault) must hold.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { Lua54Engine } from '../../runtime/engines/lua54/engine.js';
import { LuaModule, luaWasmModule } from '../../runtime/engines/lua54/wasm.js';
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
