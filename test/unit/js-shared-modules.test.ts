/**
 * Shared modules on the JS engine (runtime/engines/js/share.ts decides from the source,
 * api/modules.ts loads; README, "Modules"): a module whose functions keep nothing of their own
 * runs its top level once per Vm, and every run gets its exports deep-frozen. The
 * engine-conformance modules suite checks what every engine shares; this file checks what
 * sharing itself must get right, with the compiled modules kept from one request to the next as
 * a worker keeps them.
 *
 * Whether a module was shared is read from `Math.random()` at its top level: the same number in
 * two runs means one load; a module that runs per request draws a new one each time.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { createJsEngine } from '../../runtime/engines/js.js';
import { API_PARAMS } from '../../runtime/engines/js/prelude.js';
import { planShare } from '../../runtime/engines/js/share.js';
import { compileModules, serve, type Served, type ServeOptions } from '../helpers/script-host.js';

const engine = await createJsEngine();

/** Modules compiled once: run() serves a script with them, as a worker does. */
function site(sources: Record<string, string>): { run: (script: string, opts?: ServeOptions) => Promise<Served>; fails: (script: string) => Promise<Served> } {
  const modules = compileModules(engine, sources);
  return {
    async run(script, opts = {}) {
      const out = await serve(engine, script, { ...opts, modules });
      assert.equal(out.error, null, `the run failed: ${out.error?.message}`);
      return out;
    },
    async fails(script) {
      const out = await serve(engine, script, { modules });
      assert.notEqual(out.error, null, 'the run should have failed');
      return out;
    },
  };
}

const DRAW = 'M.drawn = Math.random();\n';
const drawn = (out: Served): Record<string, string> => Object.fromEntries([...out.text.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]));

test('js: a module that keeps nothing is loaded once; one that uses the request, keeps state or holds what freezing cannot reach runs per request', async () => {
  const per: Record<string, string> = {
    logs: 'log("loading logs");',
    asks: 'M.who = request.query.who;',
    catches: 'try { M.who = request.query.who; } catch {}',
    keepsPrint: 'M.out = print;',
    counter: 'let n = 0; M.inc = () => ++n;',
    cache: 'const seen = {}; M.see = (k) => { seen[k] = 1; };',
    factoryRun: 'const make = (k) => () => k; M.f = make({});',
    map: 'M.m = new Map();',
    date: 'M.d = new Date(0);',
    bound: 'M.b = function () {}.bind(null);',
    proxy: 'M.p = new Proxy({}, {});',
    proto: 'M.o = Object.setPrototypeOf({}, null);',
    regex: 'M.r = /a/g;',
    privy: 'M.K = class { #n = 0; inc() { return ++this.#n; } };',
    generatorRun: 'function* g() { yield 1; yield 2; }\nM.it = g();',
    iterator: 'M.it = [1, 2].values();',
    generators: 'M.g = function* (n) { for (let i = 0; i < n; i++) yield i; };',
    early: 'M.x = 1;\nif (M.x) return;\nlet late = 2;\nM.late = () => late;',
  };
  const shared: Record<string, string> = {
    plain: 'M.twice = (x) => x * 2; M.T = { a: 1, list: [1, 2] };',
    factory: 'M.make = (k) => () => k;',
    classy: 'M.K = class K { constructor(a) { this.a = a; } get() { return this.a; } static of(a) { return new K(a); } };',
    errors: 'M.E = class Bad extends Error {}; M.re = /^a+$/i;',
  };
  const sources = Object.fromEntries(Object.entries({ ...per, ...shared }).map(([n, body]) => [n, `const M = module.exports;\n${DRAW}${body}\n`]));
  const s = site(sources);
  const names = Object.keys(sources);
  const script = `for (const n of ${JSON.stringify(names)}) write(n, "=", require(n).drawn, " ");`;
  const [a, b] = [drawn(await s.run(script, { params: { QUERY_STRING: 'who=alice' } })), drawn(await s.run(script, { params: { QUERY_STRING: 'who=bob' } }))];
  assert.deepEqual(Object.keys(a), names);
  for (const n of Object.keys(shared)) assert.equal(a[n], b[n], `${n} is loaded once`);
  for (const n of Object.keys(per)) assert.notEqual(a[n], b[n], `${n} runs per request`);
  // Per request, each keeps its behaviour: the request's own values, a fresh counter.
  assert.equal((await s.run('print(require("asks").who, require("catches").who, require("counter").inc(), require("counter").inc())', { params: { QUERY_STRING: 'who=carol' } })).text, 'carol\tcarol\t1\t2\n');
  assert.equal((await s.run('print(require("counter").inc())')).text, '1\n');
  assert.equal((await s.run('print(require("generatorRun").it.next().value, [...require("generators").g(3)].join(","))')).text, '1\t0,1,2\n');
  assert.equal((await s.run('print(require("generatorRun").it.next().value)')).text, '1\n');
  const logged = await s.run('require("logs")');
  assert.match(logged.stderr, /loading logs/);
});

test('js: a shared module is frozen: a run that writes to it gets a TypeError, and the next run sees it as it loaded', async () => {
  const s = site({ conf: 'module.exports = { path: "/", list: ["a", "b"], nested: { depth: 2 } };\n' });
  for (const write of ['c.path = "/admin"', 'c.list.push("z")', 'c.nested.depth = 9', 'c.added = 1', 'delete c.path', 'Object.setPrototypeOf(c.nested, null)']) {
    const out = await s.fails(`const c = require("conf");\n${write};`);
    assert.equal(out.error?.kind, 'runtime', write);
    assert.match(out.error.message, /TypeError/, write);
    assert.equal(out.error.line, 2, write);
  }
  assert.equal((await s.run('const c = require("conf"); print(c.path, c.list.join(","), c.nested.depth, "added" in c, Object.isFrozen(c.nested))')).text, '/\ta,b\t2\tfalse\ttrue\n');
  // What a run builds from it is its own: copies and new objects stay writable.
  assert.equal((await s.run('const c = { ...require("conf") }; c.path = "/x"; const l = [...require("conf").list, "c"]; print(c.path, l.join(""))')).text, '/x\tabc\n');
});

test("js: a shared module's functions act on the calling request, and closures they make per call are the call's", async () => {
  const s = site({
    who: [
      'const M = module.exports;',
      DRAW.trim(),
      'M.who = () => request.query.who;',
      'M.say = (...a) => print("say:", ...a);',
      'M.status = (n) => { response.status = n; };',
      'M.adder = (k) => (x) => x + k;',
      'M.tally = (list) => { let n = 0; list.forEach((x) => { n += x; }); return n; };',
    ].join('\n'),
  });
  const script = 'const w = require("who"); w.say(w.who(), w.adder(1)(2), w.tally([1, 2, 3])); w.status(203); write("drawn=", w.drawn);';
  const a = await s.run(script, { params: { QUERY_STRING: 'who=alice' } });
  const b = await s.run(script, { params: { QUERY_STRING: 'who=bob' } });
  assert.match(a.text, /^say:\talice\t3\t6\n/);
  assert.match(b.text, /^say:\tbob\t3\t6\n/);
  assert.equal(a.status, 203);
  assert.equal(drawn(a).drawn, drawn(b).drawn, 'loaded once');
});

test('js: nested modules: a shared module may require shared ones; requiring a per-request one makes it per request too', async () => {
  const s = site({
    leaf: `const M = module.exports;\n${DRAW}M.id = (x) => x;\n`,
    perLeaf: `const M = module.exports;\n${DRAW}M.q = request.query.q;\n`,
    mid: `const M = module.exports;\n${DRAW}const leaf = require("leaf");\nM.leafDrawn = leaf.drawn;\nM.twice = (x) => leaf.id(x) * 2;\n`,
    midPer: `const M = module.exports;\n${DRAW}const p = require("perLeaf");\nM.q = () => p.q;\n`,
  });
  const script = 'const m = require("mid"), p = require("midPer"); write("mid=", m.drawn, " leaf=", require("leaf").drawn, " midPer=", p.drawn, " "); print(m.twice(4), m.leafDrawn === require("leaf").drawn, p.q());';
  const a = await s.run(script, { params: { QUERY_STRING: 'q=1' } });
  const b = await s.run(script, { params: { QUERY_STRING: 'q=2' } });
  const [da, db] = [drawn(a), drawn(b)];
  assert.equal(da.mid, db.mid);
  assert.equal(da.leaf, db.leaf);
  assert.notEqual(da.midPer, db.midPer);
  assert.match(a.text, /8\ttrue\t1\n$/);
  assert.match(b.text, /8\ttrue\t2\n$/);
});

test("js: errors in a shared module name the module's line; its top level's error is thrown as per request, each time", async () => {
  const s = site({
    thrower: 'const M = module.exports;\nM.boom = (x) => {\n  if (x) throw new RangeError("bad x");\n  return 1;\n};\n',
    broken: 'const M = module.exports;\nM.a = 1;\nnull.x;\n',
  });
  const first = await s.fails('require("thrower").boom(1);');
  assert.match(first.error!.message, /RangeError: bad x/);
  assert.match(first.error!.message, /thrower\.js:3/);
  for (let i = 0; i < 2; i++) {
    const out = await s.fails('require("broken");');
    assert.match(out.error!.message, /TypeError/);
    assert.match(out.error!.message, /broken\.js:3/);
  }
});

test('js: the proto and Proxy gates act only while a shared module loads', async () => {
  const s = site({ plain: 'module.exports = { x: 1 };\n' });
  const out = await s.run('require("plain"); const o = Object.setPrototypeOf({}, { y: 2 }); const p = new Proxy({}, { get: () => 7 }); const q = {}; q.__proto__ = { z: 3 }; print(o.y, p.any, q.z, Reflect.setPrototypeOf({}, null));');
  assert.equal(out.text, '2\t7\t3\ttrue\n');
});

test('js: planShare shares what keeps nothing and says why it does not share the rest', () => {
  const plan = (src: string) => planShare(src, API_PARAMS);
  const yes = [
    'exports.f = (x) => x * 2;',
    'const T = { a: 1 }; exports.get = (k) => T[k];',
    'function helper(a) { return [1, 2].map((y) => y * a); } exports.helper = helper;',
    'class K { n = 0; inc() { return ++this.n; } } exports.K = K;',
    'const { floor } = Math; exports.f = (x) => floor(x);',
    'exports.x = 1; return;',
    'function log(s) { return s; } exports.log = log;',
  ];
  for (const src of yes) assert.equal(plan(src).shared, true, src);
  const no: Array<[string, RegExp]> = [
    ['let n = 0; exports.inc = () => ++n;', /line 1: a function assigns 'n', a variable of the module's top level/],
    ['const c = {};\nexports.put = (k, v) => { c[k] = v; };', /line 2: a function changes 'c' \(assignment\)/],
    ['const l = [];\nexports.add = (v) => l.push(v);', /a function changes 'l' \(\.push\(\)\)/],
    ['const m = { n: 0 };\nexports.inc = () => m.n++;', /a function changes 'm' \(\+\+\)/],
    ['for (const k of ["a"]) exports[k] = () => k;', /declared in a block of the top level/],
    ['exports.f = () => arguments[0];', /line 1: it uses the module's arguments/],
    ['exports.c = arguments[arguments.length - 1];', /it uses the module's arguments/],
    ['class C { static f = () => this; } exports.C = C;', /'this' of a class's static part/],
    ['class C { #x = 1; } exports.C = C;', /private field \(#x\)/],
    ['exports.f = () => $lodestone$;', /reserves/],
    ['print = () => {};', /it assigns 'print', a name of the script API/],
    ['exports.f = function () { return 1;', /does not parse/],
    ['exports.g = async function* () { yield 1; };', /line 1: it defines a generator function/],
  ];
  for (const [src, why] of no) {
    const p = plan(src);
    assert.equal(p.shared, false, src);
    assert.match((p as { reason: string }).reason, why, src);
  }
});

test("js: planShare instruments closure factories without moving a line, and lists the top level's names", () => {
  const src = 'const M = module.exports;\nconst make = (k) => (x) => x + k;\nfunction Maker(n) {\n  this.get = () => this.n;\n  this.n = n;\n}\nclass F { v = 1; get = () => this.v; }\nM.make = make; M.Maker = Maker; M.F = F;\n';
  const p = planShare(src, API_PARAMS);
  assert.equal(p.shared, true);
  if (!p.shared) return;
  assert.equal(p.body.split('\n').length, src.split('\n').length);
  assert.match(p.body, /const make = \(k\) => \(\$lodestone\$\.t\(\), \(x\) => x \+ k\);/);
  assert.match(p.body, /function Maker\(n\) \{\$lodestone\$\.t\(\);\n/);
  assert.match(p.body, /get = \(\$lodestone\$\.t\(\), \(\) => this\.v\);/);
  assert.deepEqual([...p.names].sort(), ['F', 'M', 'Maker', 'exports', 'make', 'module']);
  assert.ok(p.rebinds.length === 0, 'the source uses no API name');
  const api = planShare('exports.hi = () => print("hi");', API_PARAMS);
  assert.ok(api.shared && api.rebinds.includes('print'));
});

test('js: an engine whose Vms loaded shared modules closes without a leak', async () => {
  const own = await createJsEngine();
  const modules = compileModules(own, { m: 'exports.f = (x) => x;\nexports.t = { a: [1] };\n' });
  const out = await serve(own, 'print(require("m").f(2), require("m").t.a[0])', { modules });
  assert.equal(out.text, '2\t1\n');
  for (const slot of modules.values()) slot.script?.dispose();
  assert.equal(own.close(), true, 'QuickJS reported objects left');
});
