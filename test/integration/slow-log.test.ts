/**
 * The slow log while a request is slow (slowRequestMs, like php-fpm's request_slowlog_timeout),
 * through the real server: a run still going after slowRequestMs logs ONE LS_SLOW_REQUEST line
 * while the request is still in flight, saying where the script is: the stack of a script that
 * executes (the Lua count hook, QuickJS's interrupt handler), the host call and the script's
 * line of one that waits (sleep(), pass() to a slow backend). The end-of-request line with the
 * total time follows; a fast script logs neither. Each case in both languages.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { startLodestone } from '../helpers/lodestone.js';
import { startSandbox, type Answer, type Sandbox } from '../helpers/sandbox.js';

const SLOW_MS = 200;
/** How long the slow scripts take: far past SLOW_MS, so "still in flight" holds on a loaded machine. */
const TAKES_MS = 1000;
// The busy scripts stay well under their CPU limit: the slow line, not a limit, is under test.
const config = { slowRequestMs: SLOW_MS, scriptLimits: { cpuMs: 5000 } };

const BUSY = {
  lua: `-- spins in spin(), called by outer()
local function spin(ms)
  local stop = os.clock() + ms / 1000
  while os.clock() < stop do end
end
local function outer()
  spin(${TAKES_MS})
end
outer()
print("done")
`,
  js: `// spins in spin(), called by outer()
function spin(ms) {
  const stop = Date.now() + ms;
  while (Date.now() < stop) {}
}
function outer() {
  spin(${TAKES_MS});
}
outer();
print("done");
`,
};

const NAP = {
  lua: `local function nap()
  sleep(${TAKES_MS})
end
nap()
print("woke")
`,
  js: `async function nap() {
  await sleep(${TAKES_MS});
}
await nap();
print("woke");
`,
};

const PASS = {
  lua: `-- the backend (a diagnostic responder) answers after a second
local r = pass("slowpoke", { params = { QUERY_STRING = "sleep=${TAKES_MS}" } })
print(r.status)
`,
  js: `// the backend (a diagnostic responder) answers after a second
const r = await pass("slowpoke", { params: { QUERY_STRING: "sleep=${TAKES_MS}" } });
print(r.status);
`,
};

/** The LS_SLOW_REQUEST lines naming `file` (a script's base name). */
function slowLines(sb: Sandbox, file: string): string[] {
  return sb.logged('LS_SLOW_REQUEST').filter((line) => line.includes(`/${file} `));
}

/**
 * Requests `name` and waits for its in-flight slow line (`state`: running or waiting) while the
 * answer has not arrived; then returns that line and the answer, once it came.
 */
async function slowWhileInFlight(sb: Sandbox, name: string, state: 'running' | 'waiting'): Promise<{ line: string; answer: Answer }> {
  let answered = false;
  const pending = sb.get(name).then((a) => {
    answered = true;
    return a;
  });
  const escaped = name.replace('.', '\\.');
  const line = await sb.lodestone.waitForLog(new RegExp(`LS_SLOW_REQUEST slow request still ${state} .*script=\\S*/${escaped} `), 5000);
  assert.equal(answered, false, `the slow line for ${name} was logged while its request was in flight`);
  const answer = await pending;
  assert.equal(answer.status, 200, `${name}: ${answer.stderr}`);
  // The line's own time is between slowRequestMs and the whole request's.
  const ms = Number(/ ms=(\d+)/.exec(line)?.[1]);
  assert.ok(ms >= SLOW_MS && ms < answer.ms, `${name}: logged at ${ms} ms, answered in ${Math.round(answer.ms)} ms`);
  return { line, answer };
}

/** One in-flight line, then the end-of-request line with the total time, for `file`. */
async function assertOneInFlightThenEnd(sb: Sandbox, file: string): Promise<void> {
  // The end line is written once the handler is done, just after the answer went out.
  await sb.lodestone.waitForLog(new RegExp(`LS_SLOW_REQUEST slow request conn=.* script=\\S*/${file.replace('.', '\\.')} `), 5000);
  const lines = slowLines(sb, file);
  assert.equal(lines.length, 2, `one line while slow and one at the end for ${file}:\n${lines.join('\n')}`);
  assert.match(lines[0]!, /slow request still (running|waiting) /);
  assert.match(lines[1]!, /LS_SLOW_REQUEST slow request conn=\d+ request=1 script=\S+ uri=\S+ ms=\d+$/);
}

// Lua on both engines (README, "Lua engines").
for (const [lang, luaEngine, label] of [['lua', 'fengari', 'lua'], ['lua', 'lua54', 'lua54'], ['js', 'fengari', 'js']] as const) {
  test(`${label}: a busy script past slowRequestMs logs its stack (inner function's line, then the caller's) while in flight`, async (t) => {
    const sb = await startSandbox(t, { config: { ...config, luaEngine } });
    sb.script(`busy.${lang}`, BUSY[lang]);
    const { line, answer } = await slowWhileInFlight(sb, `busy.${lang}`, 'running');
    assert.equal(answer.body, 'done\n');
    assert.match(line, /^\S+ warn LS_SLOW_REQUEST slow request still running conn=\d+ request=1 script=\S+\/busy\.\w+ uri=\/busy\.\w+ ms=\d+ /);
    assert.ok(line.endsWith(` stack="spin busy.${lang}:4 < outer busy.${lang}:7 < busy.${lang}:9"`), line);
    await assertOneInFlightThenEnd(sb, `busy.${lang}`);
  });

  test(`${label}: a script sleeping past slowRequestMs logs the call it waits in and its line while in flight`, async (t) => {
    const sb = await startSandbox(t, { config: { ...config, luaEngine } });
    sb.script(`nap.${lang}`, NAP[lang]);
    const { line, answer } = await slowWhileInFlight(sb, `nap.${lang}`, 'waiting');
    assert.equal(answer.body, 'woke\n');
    assert.ok(line.endsWith(` waiting=sleep() stack="nap nap.${lang}:2 < nap.${lang}:4"`), line);
    await assertOneInFlightThenEnd(sb, `nap.${lang}`);
  });

  test(`${label}: a script waiting past slowRequestMs in pass() to a slow backend names the backend and its line`, async (t) => {
    const backend = await startLodestone(t);
    const sb = await startSandbox(t, { config: { ...config, luaEngine, backends: { slowpoke: { servers: [`127.0.0.1:${backend.port}`] } } } });
    sb.script(`passer.${lang}`, PASS[lang]);
    const { line, answer } = await slowWhileInFlight(sb, `passer.${lang}`, 'waiting');
    assert.equal(answer.body, '200\n');
    assert.ok(line.endsWith(` waiting=pass(slowpoke) stack=passer.${lang}:2`), line);
    await assertOneInFlightThenEnd(sb, `passer.${lang}`);
  });

  test(`${label}: a fast script logs nothing slow`, async (t) => {
    const sb = await startSandbox(t, { config: { ...config, luaEngine } });
    sb.script(`quick.${lang}`, lang === 'lua' ? 'sleep(10)\nprint("quick")' : 'await sleep(10);\nprint("quick");');
    // The worker makes an engine when the first script of its language arrives (serve-here.ts),
    // which takes that request past slowRequestMs on a busy machine: a request warms it first.
    sb.script(`warm.${lang}`, 'print("warm")');
    assert.equal((await sb.get(`warm.${lang}`)).body, 'warm\n');
    for (let i = 0; i < 3; i++) assert.equal((await sb.get(`quick.${lang}`)).body, 'quick\n');
    // A slow request after them: its lines are written, so the quick ones' would be by now.
    sb.script(`nap.${lang}`, NAP[lang]);
    await slowWhileInFlight(sb, `nap.${lang}`, 'waiting');
    await assertOneInFlightThenEnd(sb, `nap.${lang}`);
    assert.deepEqual(slowLines(sb, `quick.${lang}`), []);
  });
}
