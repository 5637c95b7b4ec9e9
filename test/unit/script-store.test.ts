/**
 * The script store with the real Lua engine: reuse within the stat interval (counted with the
 * engine's compile counter, not timed), reload after an edit, 404 after a delete, confinement to
 * the root, compile errors cached, and bytecode that survives a restart.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { ScriptStore, type Lookup, type StoreOptions } from '../../runtime/engines/script-store.js';
import { LuaEngine } from '../../runtime/engines/lua.js';
import { tempDir } from '../helpers/lodestone.js';
import { makeHost } from '../helpers/script-host.js';

function storeFor(root: string, engine: LuaEngine, opts: Partial<StoreOptions> = {}): ScriptStore {
  return new ScriptStore({
    root,
    engines: new Map([['.lua', engine]]),
    statIntervalMs: 0,
    maxEntries: 100,
    maxBytes: 64 << 20,
    cacheDir: null,
    ...opts,
  });
}

async function runFound(found: Lookup): Promise<string> {
  assert.equal(found.kind, 'script', found.kind === 'error' ? found.error.message : found.kind);
  if (found.kind !== 'script') return '';
  const t = makeHost();
  try {
    await found.lease.engine.run(found.lease.script, t.host);
  } finally {
    found.lease.release();
  }
  return t.result().body.toString();
}

test('a cached script is compiled once, whatever the stat interval', async (t) => {
  const root = tempDir(t);
  const file = path.join(root, 'a.lua');
  fs.writeFileSync(file, 'print("one")');
  const engine = new LuaEngine();
  for (const statIntervalMs of [0, 60_000]) {
    const store = storeFor(root, engine, { statIntervalMs });
    const before = engine.compiles;
    for (let i = 0; i < 5; i++) assert.equal(await runFound(await store.get(file)), 'one\n');
    assert.equal(engine.compiles - before, 1);
  }
});

test('16 first requests for one script at once: compiled once, and every run gets a live script', async (t) => {
  const root = tempDir(t);
  const file = path.join(root, 'a.lua');
  fs.writeFileSync(file, 'print("one")');
  const engine = new LuaEngine();
  const store = storeFor(root, engine, { statIntervalMs: 0 });
  // Before, each compiled its own entry and the store's set() of the next one disposed it: 15
  // of 16 runs failed with "a.lua was disposed" (a 500 for every concurrent first request).
  const found = await Promise.all(Array.from({ length: 16 }, () => store.get(file)));
  const bodies = await Promise.all(found.map((f) => runFound(f)));
  assert.deepEqual(bodies, Array.from({ length: 16 }, () => 'one\n'));
  assert.equal(engine.compiles, 1);
});

test('an edit is picked up on the next check; within the interval the old code serves', async (t) => {
  const root = tempDir(t);
  const file = path.join(root, 'a.lua');
  fs.writeFileSync(file, 'print("v1")');
  const engine = new LuaEngine();
  const eager = storeFor(root, engine, { statIntervalMs: 0 });
  const lazy = storeFor(root, engine, { statIntervalMs: 60_000 });
  assert.equal(await runFound(await eager.get(file)), 'v1\n');
  assert.equal(await runFound(await lazy.get(file)), 'v1\n');
  fs.writeFileSync(file, 'print("v2, longer")');
  assert.equal(await runFound(await eager.get(file)), 'v2, longer\n');
  assert.equal(await runFound(await lazy.get(file)), 'v1\n');
});

test('a deleted script is missing; a script outside the root or of another kind is forbidden', async (t) => {
  const root = tempDir(t);
  const outside = tempDir(t);
  fs.writeFileSync(path.join(outside, 'evil.lua'), 'print("escaped")');
  fs.symlinkSync(path.join(outside, 'evil.lua'), path.join(root, 'link.lua'));
  fs.writeFileSync(path.join(root, 'notes.txt'), 'print("no")');
  fs.mkdirSync(path.join(root, 'dir.lua'));
  const file = path.join(root, 'a.lua');
  fs.writeFileSync(file, 'print("here")');
  const store = storeFor(root, new LuaEngine());
  assert.equal(await runFound(await store.get(file)), 'here\n');
  fs.rmSync(file);
  assert.equal((await store.get(file)).kind, 'missing');
  assert.equal((await store.get(path.join(root, 'link.lua'))).kind, 'forbidden');
  assert.equal((await store.get(path.join(outside, 'evil.lua'))).kind, 'forbidden');
  assert.equal((await store.get(path.join(root, '..', path.basename(outside), 'evil.lua'))).kind, 'forbidden');
  assert.equal((await store.get(path.join(root, 'notes.txt'))).kind, 'forbidden');
  assert.equal((await store.get(path.join(root, 'dir.lua'))).kind, 'forbidden');
});

test('a compile error is reported with file:line and not recompiled until the file changes', async (t) => {
  const root = tempDir(t);
  const file = path.join(root, 'bad.lua');
  fs.writeFileSync(file, 'print("ok")\nlocal x = = 1\n');
  const engine = new LuaEngine();
  const store = storeFor(root, engine);
  const first = await store.get(file);
  assert.equal(first.kind, 'error');
  if (first.kind === 'error') {
    assert.equal(first.error.kind, 'compile');
    assert.equal(first.error.location, `${fs.realpathSync(file)}:2`);
  }
  const compiles = engine.compiles;
  assert.equal((await store.get(file)).kind, 'error');
  assert.equal(engine.compiles, compiles);
  fs.writeFileSync(file, 'print("fixed")\n');
  assert.equal(await runFound(await store.get(file)), 'fixed\n');
});

test('Lua bytecode on disk survives a restart: a new engine serves without compiling', async (t) => {
  const root = tempDir(t);
  const cacheDir = path.join(tempDir(t), 'bytecode');
  const file = path.join(root, 'a.lua');
  fs.writeFileSync(file, 'local n = 0\nfor i = 1, 10 do n = n + i end\nprint(n)');
  const first = new LuaEngine();
  assert.equal(await runFound(await storeFor(root, first, { cacheDir }).get(file)), '55\n');
  assert.equal(first.compiles, 1);
  assert.equal(fs.readdirSync(cacheDir).filter((f) => f.endsWith('.luac')).length, 1);

  const restarted = new LuaEngine();
  assert.equal(await runFound(await storeFor(root, restarted, { cacheDir }).get(file)), '55\n');
  assert.equal(restarted.compiles, 0, 'served from bytecode');

  // A changed source is a different key: compiled again, not served stale.
  fs.writeFileSync(file, 'print("changed")');
  const third = new LuaEngine();
  assert.equal(await runFound(await storeFor(root, third, { cacheDir }).get(file)), 'changed\n');
  assert.equal(third.compiles, 1);

  // A corrupt cache file is ignored and replaced.
  for (const f of fs.readdirSync(cacheDir)) fs.writeFileSync(path.join(cacheDir, f), 'garbage');
  const fourth = new LuaEngine();
  assert.equal(await runFound(await storeFor(root, fourth, { cacheDir }).get(file)), 'changed\n');
  assert.equal(fourth.compiles, 1);
});

test('eviction frees a script only after its last lease', async (t) => {
  const root = tempDir(t);
  const engine = new LuaEngine();
  const store = storeFor(root, engine, { maxEntries: 1 });
  for (const name of ['a', 'b']) fs.writeFileSync(path.join(root, `${name}.lua`), `print("${name}")`);
  const a = await store.get(path.join(root, 'a.lua'));
  assert.equal(a.kind, 'script');
  // Loading b evicts a while a is still leased: a must still run.
  assert.equal(await runFound(await store.get(path.join(root, 'b.lua'))), 'b\n');
  assert.equal(await runFound(a), 'a\n');
  assert.equal(store.size, 1);
});

test("a module evicted from the LRU stays usable while a cached script still lists it", async (t) => {
  const root = tempDir(t);
  const engine = new LuaEngine();
  // Room for two entries: the script and its module; a third file evicts the module.
  const store = storeFor(root, engine, { maxEntries: 2, statIntervalMs: 60_000, modulePaths: [path.join(root, 'lib')] });
  fs.mkdirSync(path.join(root, 'lib'));
  fs.writeFileSync(path.join(root, 'lib', 'm.lua'), 'return { n = 7 }');
  fs.writeFileSync(path.join(root, 'a.lua'), 'print(require("m").n)');
  fs.writeFileSync(path.join(root, 'b.lua'), 'print("b")');
  const run = async (found: Lookup): Promise<string> => {
    assert.equal(found.kind, 'script');
    if (found.kind !== 'script') return '';
    const h = makeHost();
    h.host.modules = found.lease.modules;
    try {
      await found.lease.engine.run(found.lease.script, h.host);
    } finally {
      found.lease.release();
    }
    return h.result().body.toString();
  };
  assert.equal(await run(await store.get(path.join(root, 'a.lua'))), '7\n');
  // A hit makes a.lua the most recently used: loading b.lua evicts the module's entry.
  assert.equal(await run(store.peek(path.join(root, 'a.lua'))!), '7\n');
  assert.equal(await run(await store.get(path.join(root, 'b.lua'))), 'b\n');
  assert.equal(store.size, 2);
  // a.lua is still cached (within the stat interval) and lists the evicted module: it runs.
  const again = store.peek(path.join(root, 'a.lua'));
  assert.ok(again, 'a.lua is still cached');
  assert.equal(await run(again), '7\n');
});

test('a FIFO is refused as not a regular file without blocking, however many are asked for', async (t) => {
  const root = tempDir(t);
  const file = path.join(root, 'pipe.lua');
  execFileSync('mkfifo', [file]);
  t.after(() => {
    // Releases a reader parked in a blocking open() (the old code), so the test can end.
    try {
      fs.closeSync(fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
    } catch {
      // nobody waiting
    }
  });
  const store = storeFor(root, new LuaEngine());
  // More lookups than libuv has threads: a blocking open would never let them all answer.
  const timeout = new Promise<'timeout'>((resolve) => setTimeout(resolve, 2000, 'timeout').unref());
  const found = await Promise.race([Promise.all(Array.from({ length: 6 }, () => store.get(file))), timeout]);
  assert.notEqual(found, 'timeout', 'the lookups hang in open()');
  for (const f of found as Lookup[]) {
    assert.equal(f.kind, 'forbidden');
    if (f.kind === 'forbidden') assert.match(f.reason, /not a regular file/);
  }
});

test('a script over maxScriptBytes is refused before it is read or compiled; at the limit it runs', async (t) => {
  const root = tempDir(t);
  const file = path.join(root, 'big.lua');
  const source = 'print("big")\n';
  fs.writeFileSync(file, source + '-'.repeat(100));
  const engine = new LuaEngine();
  const store = storeFor(root, engine, { maxScriptBytes: source.length + 99 });
  const found = await store.get(file);
  assert.deepEqual(found, { kind: 'too-large', file: fs.realpathSync(file), size: source.length + 100, max: source.length + 99 });
  assert.equal(engine.compiles, 0);
  fs.truncateSync(file, source.length + 99);
  assert.equal(await runFound(await store.get(file)), 'big\n');
  // A cached script that grows past the limit is refused on its next check, not served stale.
  fs.appendFileSync(file, '--');
  assert.equal((await store.get(file)).kind, 'too-large');
});
