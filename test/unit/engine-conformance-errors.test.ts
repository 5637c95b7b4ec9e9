/**
 * Engine conformance, errors (README, "Errors"): compile and runtime errors name `file:line` in
 * the script, whatever was thrown, and the engine serves the next request. Each behaviour is one
 * row run against every engine in ENGINES (test/helpers/engines.ts); the messages are each
 * language's own. Language-specific error forms (Lua's error levels and chunk names, JS's thrown
 * values) stay in engine-lua.test.ts and engine-js.test.ts.
 */
import test from 'node:test';
import { ENGINES, caseOptions, everywhere, perEngine, runCase, type Case } from '../helpers/engines.js';

const compile: Case[] = [
  {
    name: 'a compile error names file:line',
    script: { lua: 'local a = 1\n\nlocal = 2\n', js: 'let x = 1;\n\nlet y = ;\n' },
    expect: { error: { kind: 'compile', line: 3, message: perEngine({ lua: /expected near '='/, js: /^SyntaxError: / }) } },
  },
  {
    name: 'a call left open is a compile error at the line that shows it',
    script: everywhere('print("a")\nprint("b"\nprint("c")'),
    expect: { error: { kind: 'compile', line: 3 } },
  },
  {
    name: 'a deeply nested source is a compile error, not a crash',
    script: { lua: 'x = ' + '{'.repeat(100_000), js: 'x = ' + '['.repeat(100_000) },
    expect: { error: { kind: 'compile', message: perEngine({ lua: /./, js: /SyntaxError/ }) } },
  },
  {
    name: 'a shebang line compiles and does not shift line numbers',
    script: { lua: '#!/usr/bin/env lua\nprint("x")\nerror("boom")', js: '#!/usr/bin/env lodestone\nprint("x")\nthrow new Error("boom")' },
    expect: { error: { kind: 'runtime', line: 3, message: perEngine({ lua: 'boom', js: 'Error: boom' }) } },
  },
  {
    name: 'a byte order mark compiles',
    script: everywhere('\ufeffprint("bom")'),
    expect: { body: 'bom\n' },
  },
];

const runtime: Case[] = [
  {
    name: 'an error raised at the top level names its line',
    script: { lua: 'local x = 1\n\nerror("boom")', js: 'const x = 1;\n\nthrow new Error("boom")' },
    expect: { error: { kind: 'runtime', line: 3, message: perEngine({ lua: 'boom', js: 'Error: boom' }) } },
  },
  {
    name: 'an error inside a function names the line in the function',
    script: { lua: 'local t = {}\nlocal function f()\n  return t.x.y\nend\nf()', js: 'print("a");\nfunction h() {\n  return nope;\n}\nh();' },
    expect: {
      error: { kind: 'runtime', line: 3, message: perEngine<string | RegExp>({ lua: /attempt to index a nil value/, js: "ReferenceError: 'nope' is not defined" }) },
    },
  },
  {
    name: 'an error after a wait names its line',
    script: { lua: '\nsleep(1)\nerror("no")', js: '\nawait sleep(1);\nawait Promise.reject(new TypeError("no"))' },
    expect: { error: { kind: 'runtime', line: 3, message: perEngine({ lua: 'no', js: 'TypeError: no' }) } },
  },
  {
    name: 'an error value that is not a string or an Error ends the run cleanly',
    script: { lua: 'error({})', js: 'throw 42' },
    expect: {
      // Nothing thrown this way carries a line.
      error: { kind: 'runtime', message: perEngine({ lua: '(error object is a table value)', js: 'uncaught exception: 42' }), line: null },
    },
  },
  {
    name: 'waiting for what can never come ends the run at once',
    script: { lua: 'coroutine.yield(1)', js: 'await new Promise(() => {})' },
    expect: { error: { kind: 'runtime', message: perEngine({ lua: /yield from outside a coroutine/, js: /never settle/ }) }, withinMs: 1000 },
  },
];

const cases = [...compile, ...runtime];

for (const engine of ENGINES) for (const c of cases) test(`${engine.id}: ${c.name}`, caseOptions(engine, c), () => runCase(engine, c));
