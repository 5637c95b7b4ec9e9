/**
 * Engine conformance, the sandbox (README, "Sandbox"): nothing a request does survives into the
 * next one, shared libraries and API objects cannot be changed, nothing that reaches outside the
 * process is there, and concurrent runs on one engine each get exactly their own output. Each
 * behaviour is one row run against every engine in ENGINES (test/helpers/engines.ts); the
 * language-specific surfaces (Lua's _G and rawset, JS's frozen intrinsics and eval) stay in
 * engine-lua.test.ts and engine-js.test.ts.
 */
import test from 'node:test';
import {
  ENGINES,
  caseOptions,
  concurrentOptions,
  everywhere,
  perEngine,
  runCase,
  runConcurrent,
  type Case,
  type ConcurrentCase,
  type Step,
} from '../helpers/engines.js';

/** Requests that must get exactly their own output after a run that misbehaved. */
const victims: Step[] = [
  { script: everywhere('print("secret-a")'), expect: { body: 'secret-a\n' } },
  { script: everywhere('print("secret-b")'), expect: { body: 'secret-b\n' } },
  // Past the JS prelude's 16 KiB output buffer.
  { script: { lua: 'print(("x"):rep(17000))', js: 'print("x".repeat(17000))' }, expect: { body: 'x'.repeat(17000) + '\n' } },
];

const state: Case[] = [
  {
    name: 'globals set by one request are gone in the next',
    script: {
      lua: 'x = 1 _G.y = 2 function fn() end print(x, y, type(fn))',
      js: 'var x = 1; let y = 2; function fn() {} print(x, y, typeof fn)',
    },
    expect: { body: '1\t2\tfunction\n' },
    then: [
      {
        script: {
          lua: 'print(x == nil, y == nil, fn == nil)',
          js: 'print(typeof x === "undefined", typeof y === "undefined", typeof fn === "undefined")',
        },
        expect: { body: 'true\ttrue\ttrue\n' },
      },
    ],
  },
  {
    name: 'a shared library cannot be changed: an error at its line, and the next request finds it intact',
    script: { lua: 'print("a")\nstring.rep = nil', js: 'print("a");\nJSON.parse = null' },
    expect: { error: { kind: 'runtime', message: perEngine({ lua: /read-only/, js: /^TypeError: / }), line: 2 } },
    then: [{ script: { lua: 'print(type(string.rep))', js: 'print(typeof JSON.parse)' }, expect: { body: 'function\n' } }],
  },
  {
    // Lua strings find their methods in `string`: the Lua form of String.prototype.
    name: 'a method cannot be added to every string: an error at its line, not seen by the next request',
    script: { lua: 'print("a")\nstring.evil = print', js: 'print("a");\nString.prototype.evil = print' },
    expect: { error: { kind: 'runtime', message: perEngine({ lua: /read-only/, js: /^TypeError: / }), line: 2 } },
    then: [{ script: { lua: 'print(("").evil == nil)', js: 'print("".evil === undefined)' }, expect: { body: 'true\n' } }],
  },
  {
    name: 'the cache object cannot be changed: an error at its line, not seen by the next request',
    script: everywhere('print("a");\ncache.x = 1'),
    expect: { error: { kind: 'runtime', message: perEngine({ lua: /read-only table 'cache'/, js: /^TypeError: / }), line: 2 } },
    then: [{ script: { lua: 'print(cache.x == nil)', js: 'print(cache.x === undefined)' }, expect: { body: 'true\n' } }],
  },
  {
    // A finalizer runs whenever the collector does: in Lua 5.4 that was a later request, which
    // printed the first request's data into its own response. QuickJS has no FinalizationRegistry.
    name: 'no finalizer can run in another request: __gc is refused at its line (JS: no FinalizationRegistry)',
    script: {
      lua: 'local secret = request.query.s\nlocal ok, err = pcall(setmetatable, {}, { __gc = true })\nprint(ok, err)\nsetmetatable({}, { __gc = function() print(secret) end })',
      js: 'print(typeof FinalizationRegistry);',
    },
    request: { params: { QUERY_STRING: 's=alice-secret' } },
    expect: {
      body: perEngine({ lua: /^false\t.*__gc is not available/, js: /^undefined\n$/ }),
      error: perEngine({ lua: { kind: 'runtime', message: /__gc is not available: a finalizer would run during another request/, line: 4 }, js: null }),
    },
    then: [
      {
        script: { lua: 'local t = {} for i = 1, 50000 do t[i] = { i } end\nprint("own")', js: 'const t = []; for (let i = 0; i < 50000; i++) t.push({ i });\nprint("own");' },
        expect: { body: 'own\n' },
      },
    ],
  },
  {
    // require is Lodestone's own (modules.paths only: engine-conformance-modules.test.ts), not package's.
    name: 'nothing that reaches outside is there: no io, os, package, process',
    script: {
      lua: [
        'local names = {"io", "os.execute", "os.getenv", "os.exit", "os.remove", "os.rename", "os.tmpname", "dofile",',
        '  "loadfile", "debug", "package", "js", "fengari", "collectgarbage", "string.dump", "loadstring"}',
        'local present = {}',
        'for _, name in ipairs(names) do',
        '  local v = _ENV',
        '  for part in name:gmatch("[^.]+") do if v ~= nil then v = v[part] end end',
        '  if v ~= nil then present[#present + 1] = name end',
        'end',
        'print("present: " .. table.concat(present, ","))',
      ].join('\n'),
      js: [
        'const names = ["require", "process", "std", "os", "scriptArgs", "FinalizationRegistry", "module", "exports"];',
        'print("present: " + names.filter((n) => typeof globalThis[n] !== "undefined").join(","));',
      ].join('\n'),
    },
    expect: { body: 'present: \n' },
  },
];

const isolation: Case[] = [
  {
    name: 'a run that catches a stack overflow and prints keeps its own output; the next runs get theirs',
    script: {
      lua: "local function r(n) local ok, v = pcall(r, n + 1) if ok then return v end print(('x'):rep(2000)) return n end\nprint(r(0))",
      js: "function r(n) { try { return r(n + 1); } catch (e) { print('x'.repeat(2000)); return n; } }\nprint(r(0));",
    },
    expect: { body: /^(x{2000}\n)*\d+\n$/ },
    then: victims,
  },
  {
    name: 'a run that catches a CPU-limit stop and prints fails; the next runs get their own output',
    script: {
      lua: "pcall(function() while true do end end)\nprint('poison')",
      js: "async function spin() { for (;;) {} }\ntry { await spin(); } catch (e) {}\nprint('poison');",
    },
    request: { limits: { cpuMs: 50 } },
    expect: { error: { kind: 'limit', message: 'CPU time over 50 ms' } },
    then: victims,
  },
];

/** A run that reports its query and waits `d` ms in between; returns status `s`. */
const interleaved = {
  lua: 'local n = request.query.n print(n, 1) sleep(tonumber(request.query.d)) print(n, 2, request.query.n) return tonumber(request.query.s)',
  js: 'const n = request.query.n; print(n, 1); await sleep(Number(request.query.d)); print(n, 2, request.query.n); return Number(request.query.s)',
};

const withBody = {
  lua: 'local body = request.body() sleep(tonumber(request.query.d)) print(request.query.i, body)',
  js: 'const body = await request.body(); await sleep(Number(request.query.d)); print(request.query.i, body)',
};

const concurrent: ConcurrentCase[] = [
  {
    name: 'two runs waiting at once interleave, each with its own output and status',
    runs: [
      { script: interleaved, request: { params: { QUERY_STRING: 'n=a&d=60&s=201' } }, expect: { body: 'a\t1\na\t2\ta\n', returned: 201, status: 201 } },
      { script: interleaved, request: { params: { QUERY_STRING: 'n=b&d=10&s=202' } }, expect: { body: 'b\t1\nb\t2\tb\n', returned: 202, status: 202 } },
    ],
    order: [1, 0],
  },
  {
    name: 'twenty runs at once with waits and bodies each get their own',
    runs: Array.from({ length: 20 }, (_, i) => ({
      script: withBody,
      request: { params: { QUERY_STRING: `i=${i}&d=${(i * 7) % 13}`, REQUEST_METHOD: 'POST' }, body: `body${i}` },
      expect: { body: `${i}\tbody${i}\n` },
    })),
  },
  {
    name: 'a run that keeps catching the CPU-limit stop fails alone; a run waiting meanwhile gets its own output',
    runs: [
      { script: { lua: 'print("before") sleep(300) print("after")', js: 'print("before"); await sleep(300); print("after")' }, expect: { body: 'before\nafter\n' } },
      {
        script: {
          lua: 'while true do pcall(function() while true do end end) end',
          js: 'async function spin() { for (;;) {} }\nfor (;;) { try { await spin(); } catch (e) {} }',
        },
        request: { limits: { cpuMs: 50 } },
        expect: { error: { kind: 'limit', message: 'CPU time over 50 ms' } },
      },
    ],
    order: [1, 0],
  },
];

const cases = [...state, ...isolation];

for (const engine of ENGINES) for (const c of cases) test(`${engine.id}: ${c.name}`, caseOptions(engine, c), () => runCase(engine, c));
for (const engine of ENGINES) for (const c of concurrent) test(`${engine.id}: ${c.name}`, concurrentOptions(engine, c), () => runConcurrent(engine, c));
