/**
 * Engine conformance, modules (README, "Modules"): require() on every engine in ENGINES, with
 * the modules compiled as the store compiles them (test/helpers/script-host.ts `modules`).
 * What the store does before a run (finding files in modules.paths, confinement, stat
 * revalidation, bytecode) is tested through a real server in test/integration/modules.test.ts.
 *
 * The isolation rows are the point: a module's top level runs afresh in each run, so a counter,
 * a table or a global a module keeps is never seen by the next request.
 */
import test from 'node:test';
import { ENGINES, caseOptions, perEngine, runCase, type Case } from '../helpers/engines.js';

const COUNTER = {
  lua: { counter: 'local n = 0\nlocal seen = {}\nreturn { bump = function(who) n = n + 1 seen[#seen + 1] = who return n, #seen end }' },
  js: { counter: 'let n = 0;\nconst seen = [];\nexports.bump = (who) => { n++; seen.push(who); return [n, seen.length]; };' },
};

const cases: Case[] = [
  {
    name: 'require returns what the module returns (Lua) or its module.exports (JS), once per run; Lua modules get their name as ...',
    modules: {
      lua: { 'util.strings': 'local name = ...\nreturn { name = name, shout = function(s) return s:upper() end }' },
      js: { 'util.strings': 'exports.name = "util.strings";\nexports.shout = (s) => s.toUpperCase();' },
    },
    script: {
      lua: 'local s = require("util.strings")\nprint(s.name, s.shout("hi"), require("util.strings") == s, require "util.strings" == s)',
      js: 'const s = require("util.strings");\nprint(s.name, s.shout("hi"), require("util.strings") === s, require(\'util.strings\') === s);',
    },
    expect: { body: 'util.strings\tHI\ttrue\ttrue\n' },
  },
  {
    name: "a module's state is the run's own: a counter and a table it keeps start afresh in the next request",
    modules: COUNTER,
    script: {
      lua: 'local c = require("counter")\nc.bump("alice")\nprint(c.bump("alice"))',
      js: 'const c = require("counter");\nc.bump("alice");\nprint(...c.bump("alice"));',
    },
    expect: { body: '2\t2\n' },
    then: [
      {
        modules: COUNTER,
        script: { lua: 'print(require("counter").bump("bob"))', js: 'print(...require("counter").bump("bob"));' },
        expect: { body: '1\t1\n' },
      },
    ],
  },
  {
    name: "a module's functions act on the request that calls them (print, request), whichever run first loaded it",
    modules: {
      lua: { greet: 'return function() print("hello " .. request.query.who) end' },
      js: { greet: 'module.exports = () => print("hello " + request.query.who);' },
    },
    script: { lua: 'require("greet")()', js: 'require("greet")();' },
    request: { params: { QUERY_STRING: 'who=alice' } },
    expect: { body: 'hello alice\n' },
    then: [
      {
        modules: { lua: { greet: 'return function() print("hello " .. request.query.who) end' }, js: { greet: 'module.exports = () => print("hello " + request.query.who);' } },
        script: { lua: 'require("greet")()', js: 'require("greet")();' },
        request: { params: { QUERY_STRING: 'who=bob' } },
        expect: { body: 'hello bob\n' },
      },
    ],
  },
  {
    name: 'a global a Lua module sets is in its run only; a JS module cannot set one (the global object is frozen)',
    modules: { lua: { setter: 'helper = "from module"\nreturn true' }, js: { setter: 'globalThis.x = 1;' } },
    script: { lua: 'require("setter")\nprint(helper)', js: 'print(typeof require("setter"));' },
    expect: { body: perEngine({ lua: 'from module\n', js: '' }), error: perEngine({ lua: null, js: { kind: 'runtime', message: /TypeError/ } }) },
    then: [{ script: { lua: 'print(helper)', js: 'print(typeof globalThis.x);' }, expect: { body: perEngine({ lua: 'nil\n', js: 'undefined\n' }) } }],
  },
  {
    name: "an error in a module's top level fails the run at the require's line, naming the module's file:line",
    modules: { lua: { bad: 'local x = 1\nerror("boom")' }, js: { bad: 'const x = 1;\nthrow new Error("boom");' } },
    script: { lua: 'print("a")\nrequire("bad")', js: 'print("a");\nrequire("bad");' },
    expect: {
      error: {
        kind: 'runtime',
        message: perEngine({ lua: '/srv/www/lib/bad.lua:2: boom', js: 'Error: boom (at /srv/www/lib/bad.js:2)' }),
        line: 2,
      },
    },
  },
  {
    name: 'through nested modules a Lua error reads as the chain of requires; JS names the innermost module',
    modules: {
      lua: { outer: 'local x = 1\nlocal inner = require("inner")\nreturn inner', inner: '\n\nerror("deep")' },
      js: { outer: 'const x = 1;\nmodule.exports = require("inner");', inner: '\n\nthrow new Error("deep");' },
    },
    script: { lua: 'require("outer")', js: 'require("outer");' },
    expect: {
      error: {
        kind: 'runtime',
        message: perEngine({ lua: '/srv/www/lib/outer.lua:2: /srv/www/lib/inner.lua:3: deep', js: 'Error: deep (at /srv/www/lib/inner.js:3)' }),
        line: 1,
      },
    },
  },
  {
    name: 'a require cycle is an error naming the chain',
    modules: {
      lua: { 'cyc.a': 'local b = require("cyc.b")\nreturn b', 'cyc.b': 'local a = require("cyc.a")\nreturn a' },
      js: { 'cyc.a': 'module.exports = require("cyc.b");', 'cyc.b': 'module.exports = require("cyc.a");' },
    },
    script: { lua: '\nrequire("cyc.a")', js: '\nrequire("cyc.a");' },
    expect: { error: { kind: 'runtime', message: /require cycle: test\.(lua|js) -> cyc\.a -> cyc\.b -> cyc\.a/, line: 2 } },
  },
  {
    name: 'a module the store did not load is an error the script can catch, naming the chain; the run goes on',
    script: {
      lua: 'local ok, err = pcall(require, "nope")\nprint(ok, err)\nlocal name = "no" .. "pe"\nprint(pcall(require, name))',
      js: 'try { require("nope"); } catch (e) { print(false, e.message); }\nprint("after");',
    },
    expect: {
      body: perEngine({
        lua: /^false\tmodule 'nope' not found: it was not loaded with the script: require a module by a literal name, as in require\("nope"\) \(test\.lua -> nope\)\nfalse\tmodule 'nope' not found/,
        js: /^false\tmodule 'nope' not found: .* \(test\.js -> nope\)\nafter\n$/,
      }),
    },
  },
  {
    name: 'after a module failed and was caught, the chain of a later require starts at the script again',
    modules: {
      lua: { bad: 'local inner = require("missing.one")\nreturn inner' },
      js: { bad: 'module.exports = require("missing.one");' },
    },
    script: {
      lua: 'print((select(2, pcall(require, "bad"))):match("%(test[^()]*%)$"))\nprint((select(2, pcall(require, "nope"))):match("%(test[^()]*%)$"))',
      js: 'for (const name of ["bad", "nope"]) { try { require(name); } catch (e) { print(e.message.match(/\\(test[^()]*\\)$/)[0]); } }',
    },
    expect: { body: perEngine({ lua: '(test.lua -> bad -> missing.one)\n(test.lua -> nope)\n', js: '(test.js -> bad -> missing.one)\n(test.js -> nope)\n' }) },
  },
  {
    name: 'an uncaught missing module fails at the line of the require',
    script: { lua: 'print("a")\nlocal m = require("nope")', js: 'print("a");\nconst m = require("nope");' },
    expect: { error: { kind: 'runtime', message: /module 'nope' not found/, line: 2 } },
  },
  {
    name: 'a module that does not compile is an error at the require, naming its file:line',
    modules: { lua: { broken: 'local = 1' }, js: { broken: 'let = ;' } },
    script: { lua: 'require("broken")', js: 'require("broken");' },
    expect: { error: { kind: 'runtime', message: /module 'broken' does not compile: \/srv\/www\/lib\/broken\.(lua|js):1: .* \(test\.(lua|js) -> broken\)/, line: 1 } },
  },
  {
    name: 'require takes a string',
    script: { lua: 'require(42)', js: 'require(42);' },
    expect: { error: { kind: 'runtime', message: perEngine({ lua: /bad argument #1 to 'require' \(string expected, got number\)/, js: /TypeError: require\(\): the module name must be a string/ }), line: 1 } },
  },
  {
    name: 'a module may wait: Lua at its top level, JS in a function the script awaits',
    modules: {
      lua: { later: 'sleep(5)\nreturn function() sleep(5) return "woke" end' },
      js: { later: 'module.exports = async () => { await sleep(5); return "woke"; };' },
    },
    script: { lua: 'print(require("later")())', js: 'print(await require("later")());' },
    expect: { body: 'woke\n', atLeastMs: 5 },
  },
  {
    name: "a JS module's top level cannot await (require is synchronous)",
    modules: { lua: { x: 'return 1' }, js: { x: 'await sleep(1);' } },
    script: { lua: 'print(require("x"))', js: 'require("x");' },
    expect: {
      body: perEngine({ lua: '1\n', js: '' }),
      error: perEngine({ lua: null, js: { kind: 'runtime', message: /module 'x' does not compile: \/srv\/www\/lib\/x\.js:1: SyntaxError/ } }),
    },
  },
];

for (const entry of ENGINES) {
  for (const c of cases) test(`${entry.id}: ${c.name}`, caseOptions(entry, c), () => runCase(entry, c));
}
