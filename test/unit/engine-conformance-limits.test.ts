/**
 * Engine conformance, the limits (README, "Limits"): CPU time, memory, stack, output, wall time
 * and the web server's abort, each ending the run with a limit error the script cannot catch,
 * and each case followed by a request that must still succeed (test/helpers/engines.ts), as the
 * next request on the same worker would. Each behaviour is one row run against every engine in
 * ENGINES; fengari's guards and QuickJS's heap cap keep their own tests in engine-lua.test.ts and
 * engine-js.test.ts.
 */
import test from 'node:test';
import { ENGINES, caseOptions, notWritable, perEngine, runCase, type Case } from '../helpers/engines.js';

const cpu50 = { limits: { cpuMs: 50 } };
const CPU_50 = { kind: 'limit', message: 'CPU time over 50 ms' } as const;

const cpu: Case[] = [
  {
    name: 'CPU limit: an endless loop ends',
    script: { lua: 'local n = 0\nwhile true do n = n + 1 end', js: 'let n = 0;\nwhile (true) { n++ }' },
    request: cpu50,
    expect: { error: { ...CPU_50, line: 2 }, withinMs: 2000 },
  },
  {
    // A JS script that says `await` runs as an async function. In a frame resumed after an await
    // QuickJS still holds the await's position (line 1 here): the engine gives no line rather
    // than that wrong one (js/limits.ts, lineHere).
    name: 'CPU limit: an endless loop in a script that awaits ends, with no wrong line',
    script: { lua: 'local n = 0\nwhile true do n = n + 1 end', js: 'await null;\nlet n = 0;\nwhile (true) { n++ }' },
    request: cpu50,
    expect: { error: { ...CPU_50, line: perEngine({ lua: 2, js: null }) }, withinMs: 2000 },
  },
  {
    name: 'CPU limit: a loop in an async function after its await gives no wrong line',
    script: {
      lua: 'local function spin()\n  coroutine.yield()\n  while true do end\nend\nlocal co = coroutine.wrap(spin)\nco()\nco()',
      js: 'async function spin() {\n  await null;\n  for (;;) {}\n}\nawait spin();',
    },
    request: cpu50,
    expect: { error: { ...CPU_50, line: perEngine({ lua: 3, js: null }) }, withinMs: 2000 },
  },
  {
    name: 'CPU limit: a loop that calls a function names a line of the script, in the function or at the call',
    script: {
      lua: 'local function f(x) return x + 1 end\nlocal n = 0\nwhile true do\n  n = f(n)\nend',
      js: 'function f(x) { return x + 1; }\nlet n = 0;\nfor (;;) {\n  n = f(n);\n}',
    },
    request: cpu50,
    expect: {
      error: [
        { ...CPU_50, line: 4 },
        { ...CPU_50, line: 1 },
      ],
    },
  },
  {
    name: 'CPU limit: catching errors around an endless loop does not catch the limit',
    script: { lua: 'while true do pcall(function() while true do end end) end', js: 'while (true) { try { while (true) {} } catch (e) {} }' },
    request: cpu50,
    expect: { error: CPU_50 },
  },
  {
    name: 'CPU limit: still watched after an error was caught',
    script: { lua: 'pcall(error, "x") while true do end', js: 'try { throw new Error("x") } catch (e) {}\nwhile (true) {}' },
    request: cpu50,
    expect: { error: CPU_50 },
  },
  {
    name: 'CPU limit: an endless coroutine or async function, resumed and caught in a loop, ends',
    script: {
      lua: 'while true do coroutine.resume(coroutine.create(function() while true do end end)) end',
      js: 'async function spin() { while (true) {} }\nwhile (true) { try { await spin() } catch (e) {} }',
    },
    request: cpu50,
    expect: { error: CPU_50 },
  },
  {
    name: 'CPU limit: a pathological pattern or regular expression ends',
    script: { lua: 'string.find(("a"):rep(1500), ".-.-.-b")', js: '/(a*)*b/.test("a".repeat(40))' },
    request: cpu50,
    expect: { error: CPU_50 },
    elsewhere: {
      lua54: "PUC Lua's pattern matcher is C code that no count hook interrupts; the master's watchdog stops the worker (sandbox-limits.test.ts)",
    },
  },
  {
    name: 'CPU limit: a sort whose comparator never returns ends',
    script: { lua: 'table.sort({3, 1, 2}, function() while true do end end)', js: '[3, 1, 2].sort(() => { for (;;) {} })' },
    request: cpu50,
    expect: { error: CPU_50 },
  },
  {
    name: 'CPU limit: counts time running, not waiting',
    script: { lua: 'sleep(150) print("woke")', js: 'await sleep(150); print("woke")' },
    request: cpu50,
    expect: { body: 'woke\n' },
  },
];

const memory: Case[] = [
  {
    name: 'memory limit: one allocation over memoryBytes ends the run',
    script: { lua: 'local s = ("x"):rep(1e9)\nprint(#s)', js: 'const s = "x".repeat(100e6);\nprint(s.length)' },
    request: { limits: { memoryBytes: 8e6 } },
    expect: { error: { kind: 'limit', message: perEngine<string | RegExp>({ lua: /^memory over 8000000 bytes/, js: 'out of memory' }) } },
  },
  {
    name: 'memory limit: a run that keeps allocating ends with a limit error, not an out-of-memory crash',
    script: {
      lua: 'local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(100) .. i end',
      js: notWritable('a JS run is bounded by the engine\'s capped wasm heap (createJsEngine maxHeapBytes), not memoryBytes (README "Limits"): engine-js.test.ts fills the heap of a 24 MiB engine'),
    },
    request: { limits: { memoryBytes: 32 * 1024 * 1024, cpuMs: 60_000 } },
    expect: { error: { kind: 'limit', message: /memory over 33554432 bytes/ }, withinMs: 10_000 },
  },
];

// Generous CPU and wall limits: on a loaded machine the default CPU limit could end the run
// first, which is not what these test.
const slow = { limits: { cpuMs: 600_000, wallMs: 600_000 } };

const stack: Case[] = [
  {
    name: 'stack: deep recursion ends cleanly, never a crash',
    script: { lua: 'local function f() return f() + 1 end\nf()', js: 'function f() { return f() + 1 }\nf()' },
    request: slow,
    expect: {
      // Not the same kind: a Lua stack overflow is an ordinary runtime error (or the memory
      // limit comes first), QuickJS's stack limit is reported as a limit.
      error: perEngine({
        lua: [
          { kind: 'runtime', message: /stack overflow/ },
          { kind: 'limit', message: /memory/ },
        ],
        js: { kind: 'limit', message: 'stack overflow', line: 1 },
      }),
    },
  },
  {
    name: 'stack: an overflow the script catches is an ordinary error',
    script: {
      // Lua to Lua calls do not grow the native stack, and the memory limit comes first: the
      // stack that overflows is the one of nested pcalls, rethrowing what stopped them.
      lua: 'local d = 0 local function f() d = d + 1 local ok, e = pcall(f) error(e, 0) end local ok, e = pcall(f) print(ok, d > 150, e)',
      js: 'let d = 0; function f() { d++; f() } try { f() } catch (e) { print(false, d > 150, e.message) }',
    },
    request: slow,
    expect: { body: /^false\ttrue\t.*stack overflow/ },
  },
];

const output: Case[] = [
  {
    name: 'output limit: the run ends even when the script catches the error',
    script: {
      lua: 'for i = 1, 1e6 do pcall(print, "0123456789") end\nwhile true do end',
      js: 'try { for (;;) print("0123456789") } catch (e) {}\nfor (;;) {}',
    },
    request: { limits: { outputBytes: 100 } },
    expect: { error: { kind: 'limit', message: 'output over 100 bytes' } },
  },
  {
    name: 'output limit: one write over the limit ends the run, caught or not',
    script: { lua: 'pcall(write, ("x"):rep(200))\nprint("more")', js: 'try { write("x".repeat(200)) } catch (e) {}\nprint("more")' },
    request: { limits: { outputBytes: 100 } },
    expect: { error: { kind: 'limit', message: 'output over 100 bytes' } },
  },
];

const wall: Case[] = [
  {
    name: 'wall-time limit: a waiting run ends promptly',
    script: { lua: 'print("waiting") sleep(100000) print("never")', js: 'print("waiting"); await sleep(100000); print("never")' },
    request: { limits: { wallMs: 200 } },
    expect: { error: { kind: 'limit', message: 'wall time over 200 ms' }, atLeastMs: 190, withinMs: 1000 },
  },
  {
    name: 'wall-time limit: an endless sleep ends the run at the limit, not at once',
    script: { lua: 'sleep(math.huge) print("never")', js: 'await sleep(Infinity); print("never")' },
    request: { limits: { wallMs: 60 } },
    expect: { error: { kind: 'limit', message: 'wall time over 60 ms' }, atLeastMs: 50, withinMs: 1000 },
  },
  {
    name: 'the web server aborting the request stops a waiting run, even one catching errors',
    script: { lua: 'pcall(sleep, 1000) print("never")', js: 'try { await sleep(1000) } catch (e) {} print("never")' },
    during: (t) => void setTimeout(() => t.request.abort(new Error('client went away')), 10),
    expect: { error: { kind: 'limit', message: 'request aborted by the web server' }, withinMs: 900 },
  },
];

const cases = [...cpu, ...memory, ...stack, ...output, ...wall];

for (const engine of ENGINES) for (const c of cases) test(`${engine.id}: ${c.name}`, caseOptions(engine, c), () => runCase(engine, c));
