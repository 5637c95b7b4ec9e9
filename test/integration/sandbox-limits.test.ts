/**
 * Issue 16, items 5-8: limits that a single library call, a message handler or a sort escaped,
 * in Lua, and the same kinds of attack in JavaScript. Each attack goes through the real server (`serve --workers 0`) and must end the
 * clean way (test/helpers/sandbox.ts): 500 with LS_SCRIPT_LIMIT within ~2x the CPU limit, a
 * concurrent victim answered with its own body, peak RSS under 4x the memory budget above the
 * pre-attack RSS, the next request its own, the server alive.
 *
 * Small limits keep the suite fast and light: 16 MiB of memory (attacks allocate little before
 * being refused) and 400 ms of CPU. The watchdog is set to 3 s so that on code without these
 * guards an uninterruptible attack kills the server within the test instead of after 10 s.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { SLACK_MS, attack, startSandbox, type Sandbox } from '../helpers/sandbox.js';

const MEMORY = 16 * 1024 * 1024;
const CPU_MS = 400;
const LIMITS = { memoryBytes: MEMORY, cpuMs: CPU_MS };

/** The bounds: the limit error within ~2x the CPU limit, RSS peak under 4x the budget. */
const BOUNDS = { code: 'LS_SCRIPT_LIMIT', cpuMs: 2 * CPU_MS + SLACK_MS, peakBytes: 4 * MEMORY } as const;

async function sandbox(t: TestContext, luaEngine = 'fengari'): Promise<Sandbox> {
  return startSandbox(t, { config: { scriptLimits: LIMITS, watchdogMs: 3000, luaEngine } });
}

/** A 12 MiB string (within the 16 MiB budget) and `n` references to it in table `t`. */
const BIG = (n: number): string => `local s = ("x"):rep(12 * 1024 * 1024)\nlocal t = {}\nfor i = 1, ${n} do t[i] = s end\n`;

const NUMBERS = 'local t = {("\\1\\7\\3\\250\\99\\45\\200\\13\\77\\31\\5"):rep(6000):byte(1, -1)}\n';

const attacks: Array<[string, string]> = [
  // Item 5: the hook's error ran the handler with hooks off; the handler spun forever.
  ['xpcall message handler that spins', 'xpcall(function() error("x") end, function() while true do end end)'],
  ['nested xpcall handlers that spin', 'xpcall(function() xpcall(function() error("x") end, function() while true do end end) end, function() while true do end end)'],
  // Item 6: one gsub call built 2 GB.
  ['gsub with a 1 MiB replacement', 'local r = ("a"):rep(2000):gsub("a", ("y"):rep(2^20))'],
  ['gsub calling a library function per byte', 'local r = ("x"):rep(8 * 2^20):gsub(".", string.upper)'],
  // A library loop calling C, or doing nothing per step, runs where no count hook sees it: in
  // Lua 5.4 these ran until the watchdog (the sandbox now wraps gsub, sort, rep and move).
  ['gsub calling a library function, over and over', 'local s = ("x"):rep(2^20)\nfor i = 1, 100 do s = s:gsub(".", string.upper) end'],
  ['gsub through a table whose __index is a library function that returns ""', 'local s = ("x"):rep(2^20)\nlocal t = setmetatable({}, { __index = table.concat })\nwhile true do local r = s:gsub(".", t) end'],
  ['table.move of 2^31 nils', 'table.move({}, 1, 2^31 - 1, 1)'],
  ['string.rep of an empty string 2^31 times, over and over', 'while true do local s = ("").rep("", 2^31 - 1) end'],
  // Item 7: results built first, charged after.
  ['20-operand `..` of a 12 MiB string', `local s = ("x"):rep(12 * 1024 * 1024)\nlocal r = ${Array(20).fill('s').join('..')}`],
  ['write(table.unpack(t)) of 30 references', `${BIG(30)}write(table.unpack(t))`],
  ['print(table.unpack(t)) of 30 references', `${BIG(30)}print(table.unpack(t))`],
  ['table.concat of 30 references', `${BIG(30)}local r = table.concat(t)`],
  ['table.concat with a big separator', 'local t = {} for i = 1, 3000 do t[i] = "" end\nlocal r = table.concat(t, ("-"):rep(2^20))'],
  ['lighty.r.resp_body.get of a big body', `${BIG(30)}lighty.r.resp_body.set(t)\nlocal b = lighty.r.resp_body.get()`],
  ['string.format of 8 big strings', `local s = ("x"):rep(12 * 1024 * 1024)\nlocal r = string.format(("%s"):rep(8), s, s, s, s, s, s, s, s)`],
  ['load() of a big chunk', 'local f = load(("x = 1 "):rep(2 * 2^20))'],
  // Item 8: sorts ran outside the hook.
  // The table is built in one call (a loop filling it would spend the CPU budget itself):
  // 66,000 small numbers; their sort took 2.3 s without a comparator, 5.8 s with math.ult.
  ['table.sort without a comparator', `${NUMBERS}table.sort(t)`],
  ['table.sort with a library comparator', `${NUMBERS}table.sort(t, math.ult)`],
  // The watchdog's classic case: the pattern matcher now counts its steps.
  ['a pathological pattern', 'string.find(("a"):rep(1500), ".-.-.-b")'],
];

/**
 * Lua 5.4 (WebAssembly, README "Lua engines") meets most of these by its allocator budget. Its
 * sorts are C: 66,000 numbers sort in milliseconds, so those end well (200) within the bounds.
 * Its pattern matcher is C that no hook interrupts: the watchdog's case (lua54.test.ts).
 */
const lua54: Record<string, 'ok' | 'watchdog'> = {
  'table.sort without a comparator': 'ok',
  'table.sort with a library comparator': 'ok',
  'a pathological pattern': 'watchdog',
};

for (const [name, source] of attacks) {
  test(`Lua: ${name} ends with a limit error, within bounds`, async (t) => {
    const sb = await sandbox(t);
    sb.script('attack.lua', source);
    await attack(sb, 'lua', 'attack.lua', BOUNDS);
  });
  const outcome = lua54[name];
  const ends = outcome === 'ok' ? 'is served (200)' : outcome === 'watchdog' ? 'is the watchdog\'s' : 'ends with a limit error';
  test(`Lua 5.4: ${name} ${ends}, within bounds`, { skip: outcome === 'watchdog' ? 'the watchdog stops it (lua54.test.ts)' : false }, async (t) => {
    const sb = await sandbox(t, 'lua54');
    sb.script('attack.lua', source);
    await attack(sb, 'lua', 'attack.lua', outcome === 'ok' ? { status: 200, cpuMs: BOUNDS.cpuMs, peakBytes: BOUNDS.peakBytes } : BOUNDS);
  });
}

/**
 * JavaScript: QuickJS checks its interrupt handler only while running JS code, so the same kinds
 * of attack: work done inside one built-in (a sort without a comparator ran 1.9 s with a 400 ms
 * limit before the prelude gave sort a JS comparator), results built in one call.
 */
const jsAttacks: Array<[string, string, string]> = [
  ['Array sort without a comparator', 'const a = []; for (let i = 0; i < 3e5; i++) a.push(String((i * 7919) % 1000003));\nfor (;;) { a.sort(); a.reverse(); }', 'LS_SCRIPT_LIMIT'],
  ['toSorted without a comparator', 'const a = []; for (let i = 0; i < 3e5; i++) a.push(String((i * 7919) % 1000003));\nfor (;;) a.toSorted();', 'LS_SCRIPT_LIMIT'],
  ['typed array sort', 'const t = new Float64Array(4e6); for (let i = 0; i < t.length; i++) t[i] = (i * 7919) % 1000003;\nfor (;;) { t.sort(); t.reverse(); }', 'LS_SCRIPT_LIMIT'],
  ['catastrophic regex backtracking', "print(/^(a+)+$/.test('a'.repeat(40) + 'b'));", 'LS_SCRIPT_LIMIT'],
  ['print of 30 references to a 12 MiB string', "const s = 'x'.repeat(12 * 2 ** 20); print(...Array(30).fill(s));", 'LS_SCRIPT_LIMIT'],
  ['a 2 GB repeat', "const r = 'y'.repeat(2 ** 20).repeat(2000); print(r.length);", 'LS_SCRIPT_ERROR'],
];

for (const [name, source, code] of jsAttacks) {
  test(`JS: ${name} ends with ${code}, within bounds`, async (t) => {
    // JS memory is the engine's capped heap (256 MiB), not a per-run byte count: the default
    // per-run budget (64 MiB) and its 4x bound.
    const sb = await startSandbox(t, { config: { scriptLimits: { cpuMs: CPU_MS }, watchdogMs: 3000 } });
    sb.script('attack.js', source);
    await attack(sb, 'js', 'attack.js', { code, cpuMs: BOUNDS.cpuMs, peakBytes: 4 * 64 * 2 ** 20 });
  });
}

test('JS: default sort orders are the spec\'s (strings, undefined and holes last; typed arrays numeric, -0 first, NaN last)', async (t) => {
  const sb = await startSandbox(t);
  sb.script(
    'sorts.js',
    "const a = [3, 1, undefined, 10, 2, , 'b', 'a', null, -0, 0];\n" +
      'const f = new Float64Array([3, NaN, -0, 0, -Infinity, 1, NaN, 2]).sort();\n' +
      "print(JSON.stringify(a.sort()), a.length, [...f].map((x) => (Object.is(x, -0) ? '-0' : String(x))).join(), [5, 1, 4].toSorted().join(), [1, 2, 3].sort((x, y) => y - x).join(), Array.prototype.sort.name, Array.prototype.sort.length);",
  );
  const a = await sb.get('sorts.js');
  assert.equal(a.status, 200, a.stderr);
  // What V8 answers for the same lines.
  assert.equal(a.body, '[0,0,1,10,2,3,"a","b",null,null,null]\t11\t-Infinity,-0,0,1,2,3,NaN,NaN\t1,4,5\t3,2,1\tsort\t1\n');
});

test('Lua: log() of 30 references to a 12 MiB string copies only the log room (200, RSS bounded)', async (t) => {
  // Not a limit error any more: log() cuts its line to the run's log room before joining
  // (scriptLimits.logLineBytes; sandbox-host.test.ts checks the markers and the budget).
  const sb = await sandbox(t);
  sb.script('attack.lua', `${BIG(30)}log(table.unpack(t))`);
  const hit = await attack(sb, 'lua', 'attack.lua', { status: 200, cpuMs: BOUNDS.cpuMs, peakBytes: BOUNDS.peakBytes });
  assert.ok(hit.stderr.length < 16 * 1024, `FCGI_STDERR holds ${hit.stderr.length} bytes`);
  assert.match(hit.stderr, /log line cut/);
});

test('Lua: work under the limits is not refused by the guards', async (t) => {
  // The memory budget of the attacks; CPU to spare, since only memory refusals are in question
  // here (fengari on a loaded CI machine can take 400 ms for this script).
  const sb = await startSandbox(t, { config: { scriptLimits: { memoryBytes: MEMORY, cpuMs: 5000 }, watchdogMs: 10_000 } });
  sb.script(
    'fine.lua',
    [
      'local s = ("x"):rep(2^18)',
      'local t = {} for i = 1, 5 do t[i] = s end',
      'local joined = table.concat(t)',
      'local r = s .. s .. s',
      'local g = ("ab"):rep(2^18):gsub("a", "xyz")',
      'local f = string.format("%s|%s", s, s)',
      'local u = {} for i = 1, 3000 do u[i] = (i * 7919) % 20011 end table.sort(u)',
      'local sorted = "sorted" for i = 2, #u do if u[i - 1] > u[i] then sorted = "unsorted" end end',
      'local ok, err = xpcall(function() error("mine") end, function(m) return "handled: " .. m end)',
      'write(#joined, " ", #r, " ", #g, " ", #f, " ", sorted, " ", tostring(ok), " ", err:match("handled: .*mine") and "h" or err)',
    ].join('\n'),
  );
  const a = await sb.get('fine.lua');
  if (a.status !== 200 || a.body !== '1310720 786432 1048576 524289 sorted false h') {
    throw new Error(`fine.lua: ${a.status} ${JSON.stringify(a.body)} ${a.stderr}`);
  }
});

test('JS: a CPU-limit stop and a pass() failure are logged with file:line (issue 17, item 4)', async (t) => {
  const sb = await startSandbox(t, { config: { scriptLimits: { cpuMs: 200 } } });
  const calls = sb.script('calls.js', 'function f(x) { return x + 1; }\nlet n = 0;\nfor (;;) {\n  n = f(n);\n}\n');
  const bare = sb.script('bare.js', 'let n = 0;\n\nwhile (true) {\n  n = n + 1;\n}\n');
  const pass = sb.script('pass.js', '// a backend that is not configured\nconst r = await pass("nope");\nprint(r.status);\n');
  const spin = await sb.get('calls.js');
  assert.equal(spin.status, 500);
  assert.ok(spin.stderr.includes(`${calls}:4: CPU time over 200 ms`), spin.stderr);
  // A loop without calls, in a script that never awaits (a plain wrapper function): the line
  // of the loop's body (engine-conformance-limits.test.ts has the async case).
  const loop = await sb.get('bare.js');
  assert.ok(loop.stderr.includes(`${bare}:4: CPU time over 200 ms`), loop.stderr);
  const failed = await sb.get('pass.js');
  assert.equal(failed.status, 500);
  assert.ok(failed.stderr.includes(`${pass}:2: Error: pass(): no backend named "nope"`), failed.stderr);
  assert.ok(sb.logged('LS_SCRIPT_ERROR').some((l) => l.includes(`script=${pass}:2`)), sb.lodestone.log());
});
