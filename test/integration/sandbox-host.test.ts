/**
 * The sandbox suite's host-side cases (issue 16, items 9-12), through the real server: a FIFO
 * named as a script, to sendfile() and to stat-accel must be refused at once instead of parking
 * thread-pool threads in open(); log() is bounded per line and per run; sleep() past the wall
 * limit ends the run at the limit; a script over scriptCache.maxScriptBytes is refused before it
 * is read. Each shared case runs in both languages.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { cliPath, run } from '../helpers/lodestone.js';
import { LANGUAGES, attack, startSandbox, type Sandbox } from '../helpers/sandbox.js';

const MiB = 1024 * 1024;

/**
 * Makes a FIFO under the root. At the end of the test its write end is opened once (non-blocking),
 * which releases any reader still parked in open() (old code), so the server can stop.
 */
function fifo(t: TestContext, sb: Sandbox, name: string): string {
  const file = path.join(sb.root, name);
  execFileSync('mkfifo', [file]);
  t.after(() => {
    try {
      fs.closeSync(fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
    } catch {
      // ENXIO: nobody is waiting to read it, nothing to release.
    }
  });
  return file;
}

test('a FIFO as SCRIPT_FILENAME: more requests than thread-pool threads, each a prompt 403; the server keeps answering', async (t) => {
  // Two threads make the old failure quick and certain; the bound is the same with the default 4.
  const sb = await startSandbox(t, { env: { UV_THREADPOOL_SIZE: '2' } });
  for (const lang of LANGUAGES) fifo(t, sb, `pipe.${lang}`);
  const names = Array.from({ length: 6 }, (_, i) => `pipe.${LANGUAGES[i % 2]!}`);
  const answers = await Promise.all(names.map((name) => sb.get(name, '', 5000)));
  for (const a of answers) {
    assert.equal(a.status, 403);
    assert.ok(a.ms < 2000, `answered in ${Math.round(a.ms)} ms`);
  }
  assert.ok(sb.logged('LS_SCRIPT_FORBIDDEN').some((line) => line.includes('not a regular file')), sb.lodestone.log());
  // A fresh script (a store miss: realpath, open, read on the thread pool) is still served at once.
  for (const lang of LANGUAGES) {
    sb.script(`fresh.${lang}`, 'print("fresh")');
    const fresh = await sb.get(`fresh.${lang}`, '', 2000);
    assert.equal(fresh.status, 200);
    assert.equal(fresh.body, 'fresh\n');
  }
  await sb.assertAlive();
});

test('stat() reports a FIFO without opening it; sendfile() of one is a 403 with LS_FILE_FORBIDDEN', async (t) => {
  const sb = await startSandbox(t, { env: { UV_THREADPOOL_SIZE: '2' } });
  fifo(t, sb, 'data.pipe');
  const scripts = {
    lua: 'local st = stat("data.pipe")\nlog("stat: " .. tostring(st.is_file) .. " " .. tostring(st.is_dir))\nsendfile("data.pipe")',
    js: 'const st = await stat("data.pipe");\nlog("stat: " + st.is_file + " " + st.is_dir);\nawait sendfile("data.pipe");',
  };
  for (const lang of LANGUAGES) {
    sb.script(`send-pipe.${lang}`, scripts[lang]);
    const hit = await attack(sb, lang, `send-pipe.${lang}`, { status: 403, code: 'LS_FILE_FORBIDDEN', withinMs: 2000 });
    assert.match(hit.stderr, /stat: false false/);
    assert.match(hit.stderr, /not a regular file/);
    assert.equal(hit.headers['x-sendfile'], undefined, 'no escalation header hands the FIFO to the web server');
  }
});

test('stat-accel: a FIFO is a 403 with LS_FILE_FORBIDDEN, not an escalation the web server would block on', async (t) => {
  const sb = await startSandbox(t, { args: ['--stat-accel'] });
  fifo(t, sb, 'video.mp4');
  fs.writeFileSync(path.join(sb.root, 'real.txt'), 'hello');
  const hit = await sb.get('video.mp4', '', 5000);
  assert.equal(hit.status, 403);
  assert.equal(hit.headers['x-sendfile'], undefined);
  assert.ok(sb.logged('LS_FILE_FORBIDDEN').some((line) => line.includes('not a regular file')), sb.lodestone.log());
  const real = await sb.get('real.txt', '', 2000);
  assert.equal(real.status, 200);
  assert.ok(real.headers['x-sendfile']?.endsWith('real.txt'), JSON.stringify(real.headers));
});

test('log(): 10 x 20 MiB lines leave one bounded, marked stretch of FCGI_STDERR; the run goes on', async (t) => {
  const sb = await startSandbox(t);
  // Ten, not the five: the per-line bound (8 KiB) alone keeps five lines under the
  // run's 64 KiB, and the run's bound must be reached too.
  const scripts = {
    lua: 'local s = ("x"):rep(20 * 1024 * 1024)\nfor i = 1, 10 do log(s) end\nprint("done")',
    js: "const s = 'x'.repeat(20 * 1024 * 1024);\nfor (let i = 0; i < 10; i++) log(s);\nprint('done');",
  };
  for (const lang of LANGUAGES) {
    await sb.assertAlive();
    sb.script(`flood.${lang}`, scripts[lang]);
    const logBefore = sb.lodestone.log().length;
    // The peak bound leaves the script its own 20 MiB string (and the engine's copy of it); the
    // unbounded log added at least 100 MiB of stderr text and its framing on top.
    const hit = await attack(sb, lang, `flood.${lang}`, { status: 200, code: null, withinMs: 5000, peakBytes: 64 * MiB });
    assert.equal(hit.body, 'done\n');
    // 8 lines of 8 KiB, their markers, the budget marker.
    assert.ok(hit.stderr.length <= 64 * 1024 + 2048, `FCGI_STDERR carried ${hit.stderr.length} bytes`);
    const unit = lang === 'lua' ? 'bytes' : 'characters';
    assert.match(hit.stderr, new RegExp(`\\[lodestone: log line cut, ${20 * MiB - 8192} more ${unit} not logged\\]`));
    assert.match(hit.stderr, /log budget of this run spent \(scriptLimits\.logBytes = 65536\)/);
    assert.equal(hit.stderr.match(/log budget of this run spent/g)?.length, 1, 'one marker for the dropped lines');
    assert.ok(sb.lodestone.log().length - logBefore < 64 * 1024, 'the server log stays small too');
  }
});

test('log(): a per-run budget smaller than a line cuts that line to the budget', async (t) => {
  const sb = await startSandbox(t, { config: { scriptLimits: { logBytes: 100, logLineBytes: 60 } } });
  const scripts = {
    lua: 'log(("é"):rep(40))\nlog(("b"):rep(70))\nlog("dropped")\nlog("dropped too")',
    js: "log('é'.repeat(40));\nlog('b'.repeat(70));\nlog('dropped');\nlog('dropped too');",
  };
  for (const lang of LANGUAGES) {
    sb.script(`small.${lang}`, scripts[lang]);
    const hit = await sb.get(`small.${lang}`);
    assert.equal(hit.status, 200, hit.stderr);
    const lines = hit.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 3, hit.stderr);
    // 60 bytes of two-byte characters: 30 kept, never half of one.
    assert.equal(lines[0], `${'é'.repeat(30)} [lodestone: log line cut, ${lang === 'lua' ? '20 more bytes' : '10 more characters'} not logged]`);
    // 40 bytes of budget left: the second line is cut to them.
    assert.equal(lines[1], `${'b'.repeat(40)} [lodestone: log line cut, 30 more ${lang === 'lua' ? 'bytes' : 'characters'} not logged]`);
    assert.match(lines[2]!, /^lodestone: log budget of this run spent/);
  }
});

test('sleep(1e12) and sleep(Infinity) end the run with LS_SCRIPT_LIMIT at the wall limit; NaN and negative sleep 0', async (t) => {
  // Time bounds are relative to a wall limit long enough that a loaded 2-core machine's jitter
  // (the suite runs two files at once) stays well inside them.
  const wallMs = 1000;
  const sb = await startSandbox(t, { config: { scriptLimits: { wallMs } } });
  await sb.assertAlive(); // warm both engines up: the first run of each costs extra
  const scripts = {
    lua: { huge: 'sleep(1e12)\nprint("woke")', inf: 'sleep(math.huge)\nprint("woke")', odd: 'sleep(0/0)\nsleep(-5)\nprint("woke")' },
    js: { huge: 'await sleep(1e12);\nprint("woke");', inf: 'await sleep(Infinity);\nprint("woke");', odd: 'await sleep(NaN);\nawait sleep(-5);\nprint("woke");' },
  };
  for (const lang of LANGUAGES) {
    for (const kind of ['huge', 'inf'] as const) {
      sb.script(`${kind}.${lang}`, scripts[lang][kind]);
      const hit = await attack(sb, lang, `${kind}.${lang}`, { status: 500, code: 'LS_SCRIPT_LIMIT', withinMs: 2 * wallMs });
      assert.ok(hit.ms >= wallMs - 50, `${kind}.${lang} ended after ${Math.round(hit.ms)} ms, before the wall limit`);
      assert.match(hit.stderr, new RegExp(`wall time over ${wallMs} ms`));
      assert.doesNotMatch(hit.body, /woke/);
    }
    sb.script(`odd.${lang}`, scripts[lang].odd);
    const odd = await sb.get(`odd.${lang}`);
    assert.equal(odd.status, 200, odd.stderr);
    assert.equal(odd.body, 'woke\n');
    assert.ok(odd.ms < wallMs / 2, `odd sleeps took ${Math.round(odd.ms)} ms`);
  }
});

// A valid script of `size` bytes, almost all of it one comment, so the old code compiled it.
function bigScript(lang: (typeof LANGUAGES)[number], size: number): Buffer {
  const [head, tail] = lang === 'lua' ? ['--[[', ']]\nprint("big")\n'] : ['/*', '*/\nprint("big");\n'];
  const buf = Buffer.alloc(size, 'x');
  buf.write(head, 0);
  buf.write(tail, size - tail.length);
  return buf;
}

test('a script over scriptCache.maxScriptBytes: 500 with LS_SCRIPT_TOO_LARGE, fast, without reading it', async (t) => {
  const sb = await startSandbox(t);
  await sb.assertAlive(); // warm both engines up, so the peak and the time are the refusal's
  const size = 48 * MiB;
  for (const lang of LANGUAGES) {
    const file = path.join(sb.root, `big.${lang}`);
    fs.writeFileSync(file, bigScript(lang, size));
    // Reading it alone would add 48 MiB (the Buffer) plus its string; compiling it far more.
    const hit = await attack(sb, lang, `big.${lang}`, { status: 500, code: 'LS_SCRIPT_TOO_LARGE', withinMs: 2000, peakBytes: 32 * MiB });
    const line = sb.logged('LS_SCRIPT_TOO_LARGE').find((l) => l.includes(file));
    assert.ok(line, sb.lodestone.log());
    assert.ok(line.includes(String(size)) && line.includes(String(4 * MiB)), line);
    assert.match(hit.stderr, /over scriptCache\.maxScriptBytes/);
    fs.rmSync(file);
  }
  // At the limit is fine; the limit is configurable.
  for (const lang of LANGUAGES) fs.writeFileSync(path.join(sb.root, `edge.${lang}`), bigScript(lang, 4 * MiB));
  for (const lang of LANGUAGES) {
    const edge = await sb.get(`edge.${lang}`);
    assert.equal(edge.status, 200, edge.stderr);
    assert.equal(edge.body, 'big\n');
  }
});

test('lodestone check reports a script over scriptCache.maxScriptBytes without compiling it', (t) => {
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'lodestone-check-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'ok.lua'), 'print("ok")');
  fs.writeFileSync(path.join(dir, 'big.js'), bigScript('js', 2048));
  const config = path.join(dir, 'lodestone.json');
  fs.writeFileSync(config, JSON.stringify({ root: '.', scriptCache: { maxScriptBytes: 1024 } }));
  const r = run(process.execPath, [cliPath, 'check', '--config', config]);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /big\.js: LS_SCRIPT_TOO_LARGE: script is 2048 bytes, over scriptCache\.maxScriptBytes \(1024\)/);
  assert.doesNotMatch(r.stderr, /ok\.lua/);
});
