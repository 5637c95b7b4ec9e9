/**
 * Engine conformance, the script API (README, "Script API"): output, the request, the response,
 * the returned status, log, sleep, flush and raw-output mode, each behaviour one row run against
 * every engine in ENGINES (test/helpers/engines.ts). Engine-specific checks stay in
 * engine-lua.test.ts and engine-js.test.ts; the cache, emit and pass rows are in
 * engine-cache-api.test.ts.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { ScriptError } from '../../runtime/engines/engine.js';
import { DEFAULT_CONTENT_TYPE } from '../../runtime/engines/host.js';
import { ENGINES, caseOptions, everywhere, instance, perEngine, perEngineOf, runCase, type Case } from '../helpers/engines.js';
import { serve } from '../helpers/script-host.js';

/** The script file `serve` runs under, per engine. */
const FILE = perEngineOf((name) => `/srv/www/test.${name}`);

const output: Case[] = [
  {
    name: 'print writes a line; the default status is 200 with the default Content-Type',
    script: everywhere('print("hello")'),
    expect: { body: 'hello\n', status: 200, returned: undefined, headers: { 'content-type': DEFAULT_CONTENT_TYPE } },
  },
  {
    name: 'print joins with tabs, converts each value as the language does, ends the line; write adds nothing',
    script: {
      lua: 'print("a", "b", 1, 2.5, nil, true) write("c", "d") write(1, 2) write() print() print(setmetatable({}, {__tostring = function() return "T" end}))',
      js: 'print("a", "b", 1, 2.5, null, true); write("c", "d"); write(1, 2); write(); print(); print({ toString() { return "T" } }); print(undefined, {}); write("x", 2, undefined)',
    },
    expect: {
      body: perEngine({
        lua: 'a\tb\t1\t2.5\tnil\ttrue\ncd12\nT\n',
        js: 'a\tb\t1\t2.5\tnull\ttrue\ncd12\nT\nundefined\t[object Object]\nx2undefined',
      }),
    },
  },
  {
    name: 'writes across waits keep their order',
    script: {
      lua: 'for i = 0, 4 do write(i) end write("|") sleep(1) for i = 5, 7 do print(i) end',
      js: 'for (let i = 0; i < 5; i++) write(i); await null; write("|"); await sleep(1); for (let i = 5; i < 8; i++) print(i)',
    },
    expect: { body: '01234|5\n6\n7\n' },
  },
  {
    name: 'a large output in many writes arrives whole and in order',
    script: {
      lua: 'for i = 0, 39999 do write(i % 10) end print() print(("y"):rep(20000))',
      js: 'for (let i = 0; i < 40000; i++) write(i % 10); print(); print("y".repeat(20000))',
    },
    // The case is about order, not limits: 40,000 host calls took over the default 1 s of CPU
    // (slice time, which a loaded machine stretches) on fengari when three test runs shared two cores.
    request: { limits: { cpuMs: 10_000 } },
    expect: { body: '0123456789'.repeat(4000) + '\n' + 'y'.repeat(20000) + '\n' },
  },
  {
    name: 'strings holding NUL cross the boundary whole, in both directions',
    script: {
      lua: 'print("a\\0b", #request.path, request.path == "/x\\0y") log("e\\0f")',
      js: 'print("a\\0b", request.path.length, request.path === "/x\\0y"); log("e\\0f")',
    },
    request: { params: { REQUEST_URI: '/x%00y', QUERY_STRING: '' } },
    expect: { body: 'a\0b\t4\ttrue\n', stderr: 'e\0f\n' },
  },
];

const requestFields = {
  REQUEST_METHOD: 'POST',
  REQUEST_URI: '/a%20b/c?a=1&b=x%20y&a=%C3%A9',
  QUERY_STRING: 'a=1&b=x%20y&a=%C3%A9',
  HTTP_USER_AGENT: 'UA/1',
  HTTP_X_FORWARDED_FOR: '10.0.0.1',
  CONTENT_TYPE: 'text/plain',
  CONTENT_LENGTH: '0',
  CUSTOM: 'yes',
  REMOTE_ADDR: '10.1.2.3',
  SERVER_NAME: 'example.org',
};

const request: Case[] = [
  {
    name: 'request fields: method, uri, decoded path and query (last wins), headers by lower-case name, params, addresses, paths',
    script: {
      lua: [
        'print(request.method, request.uri, request.path, request.query_string)',
        'print(request.query.a, request.query.b, request.query.x == nil)',
        'print(request.headers["user-agent"], request.headers["x-forwarded-for"], request.headers["content-type"], request.headers["content-length"], request.headers["User-Agent"] == nil)',
        'print(request.params.REQUEST_METHOD, request.params.CUSTOM, request.params.SERVER_NAME, request.remote_addr)',
        'print(request.script_filename, request.document_root, request.nope == nil)',
        'print(request.query == request.query, request.headers == request.headers)',
      ].join('\n'),
      js: [
        'print(request.method, request.uri, request.path, request.query_string);',
        'print(request.query.a, request.query.b, request.query.x === undefined);',
        'print(request.headers["user-agent"], request.headers["x-forwarded-for"], request.headers["content-type"], request.headers["content-length"], request.headers["User-Agent"] === undefined);',
        'print(request.params.REQUEST_METHOD, request.params.CUSTOM, request.params.SERVER_NAME, request.remote_addr);',
        'print(request.script_filename, request.document_root, request.nope === undefined);',
        'print(request.query === request.query, request.headers === request.headers);',
      ].join('\n'),
    },
    request: { params: requestFields },
    expect: {
      body: perEngineOf(
        (name) =>
          'POST\t/a%20b/c?a=1&b=x%20y&a=%C3%A9\t/a b/c\ta=1&b=x%20y&a=%C3%A9\n' +
          'é\tx y\ttrue\n' +
          'UA/1\t10.0.0.1\ttext/plain\t0\ttrue\n' +
          'POST\tyes\texample.org\t10.1.2.3\n' +
          `/srv/www/test.${name}\t/srv/www\ttrue\n` +
          'true\ttrue\n',
      ),
    },
  },
  {
    name: 'a path that does not percent-decode is given as sent',
    script: { lua: 'print(request.path)', js: 'print(request.path)' },
    request: { params: { REQUEST_URI: '/bad%E0%A4?x=1' } },
    expect: { body: '/bad%E0%A4\n' },
  },
  {
    name: 'request.body() gives the posted body, the same on every call',
    script: {
      lua: 'local a = request.body() local b = request.body() print(a, a == b)',
      js: 'const a = await request.body(); const b = await request.body(); print(a, a === b)',
    },
    request: { params: { REQUEST_METHOD: 'POST', CONTENT_LENGTH: '7' }, body: 'héllo!' },
    expect: { body: 'héllo!\ttrue\n' },
  },
  {
    name: 'request.body() with nothing posted is the empty string',
    script: { lua: 'print(request.body() == "")', js: 'print((await request.body()) === "")' },
    expect: { body: 'true\n' },
  },
];

const response: Case[] = [
  {
    name: 'response.status and response.headers: read, set (strings and numbers), read back by any case, removed',
    script: {
      lua: [
        'print(response.status)',
        'response.status = 201',
        'response.headers["X-A"] = 1',
        'response.headers["Content-Type"] = "text/plain"',
        'response.headers["X-B"] = "b" response.headers["x-b"] = nil',
        'response.headers["X-C"] = "c" response.headers["X-C"] = nil',
        'response.headers["X-D"] = "d" response.headers["x-D"] = nil',
        'print(response.status, response.headers["x-a"], response.headers["X-A"], response.headers["content-type"])',
        'print(response.headers["x-b"] == nil, response.headers["x-c"] == nil, response.headers["x-d"] == nil)',
      ].join('\n'),
      // The three ways JS has to remove a header.
      js: [
        'print(response.status);',
        'response.status = 201;',
        'response.headers["X-A"] = 1;',
        'response.headers["Content-Type"] = "text/plain";',
        'response.headers["X-B"] = "b"; delete response.headers["x-b"];',
        'response.headers["X-C"] = "c"; response.headers["X-C"] = undefined;',
        'response.headers["X-D"] = "d"; response.headers["x-D"] = null;',
        'print(response.status, response.headers["x-a"], response.headers["X-A"], response.headers["content-type"]);',
        'print(response.headers["x-b"] === undefined, response.headers["x-c"] === undefined, response.headers["x-d"] === undefined);',
      ].join('\n'),
    },
    expect: {
      body: '200\n201\t1\t1\ttext/plain\ntrue\ttrue\ttrue\n',
      status: 201,
      headers: { 'x-a': '1', 'content-type': 'text/plain', 'x-b': undefined, 'x-c': undefined, 'x-d': undefined },
    },
  },
  {
    name: 'a status and header set by one request are not seen by the next',
    script: everywhere('response.status = 201; response.headers["X-Set"] = "yes"'),
    expect: { status: 201, headers: { 'x-set': 'yes' } },
    then: [
      {
        script: { lua: 'print(response.headers["X-Set"] == nil, response.status)', js: 'print(response.headers["X-Set"] === undefined, response.status)' },
        expect: { body: 'true\t200\n', headers: { 'x-set': undefined } },
      },
    ],
  },
  {
    name: 'an invalid status is refused with an error the script can catch',
    script: {
      lua: 'for _, v in ipairs({42, 1000, 200.5}) do print(pcall(function() response.status = v end)) end print(response.status)',
      js: 'for (const v of [42, 1000, 200.5]) { try { response.status = v; print("accepted", v) } catch (e) { print(false, e.message) } } print(response.status)',
    },
    expect: { body: /^false\t(.*: )?invalid status 42\nfalse\t(.*: )?invalid status 1000\nfalse\t(.*: )?invalid status 200\.5\n200\n$/, status: 200 },
  },
  {
    name: 'an invalid header name or value is refused with an error the script can catch; nothing is injected',
    script: {
      lua: 'print(pcall(function() response.headers["X-Bad"] = "a\\r\\nInjected: 1" end)) print(pcall(function() response.headers["bad name"] = "x" end))',
      js: 'for (const [k, v] of [["X-Bad", "a\\r\\nInjected: 1"], ["bad name", "x"]]) { try { response.headers[k] = v; print("accepted", k) } catch (e) { print(false, e.message) } }',
    },
    expect: {
      body: /^false\t(.*: )?invalid value for header X-Bad: CR, LF or NUL\nfalse\t(.*: )?invalid header name "bad name"\n$/,
      headers: { injected: undefined, 'x-bad': undefined, 'bad name': undefined },
    },
  },
  {
    name: 'an invalid status left uncaught is a runtime error naming its line',
    script: everywhere('print("a");\nresponse.status = 1000'),
    expect: { error: { kind: 'runtime', message: /invalid status 1000/, line: 2 } },
  },
];

/** `return V` for values that are not a status code: the run has no status, the response keeps 200. */
const notStatus: Array<[what: string, lua: string, js: string]> = [
  ['a string of digits', '"404"', '"404"'],
  ['a fraction', '200.5', '200.5'],
  ['a table or object', '{}', '{}'],
  ['nil or null', 'nil', 'null'],
];

const returned: Case[] = [
  {
    name: 'a returned integer is the status',
    script: everywhere('return 404'),
    expect: { returned: 404, status: 404 },
  },
  {
    name: 'a status returned after a wait',
    script: { lua: 'sleep(1) return 302', js: 'await sleep(1); return 302' },
    expect: { returned: 302, status: 302 },
  },
  {
    name: 'a returned integral float is the status',
    script: everywhere('return 302.0'),
    expect: { returned: 302, status: 302 },
  },
  ...notStatus.map(([what, lua, js]): Case => ({
    name: `a returned ${what} is not a status`,
    script: { lua: `return ${lua}`, js: `return ${js}` },
    expect: { returned: undefined, status: 200 },
  })),
  ...['99', '1000'].map(
    (v): Case => ({
      name: `a returned integer outside 100..999 (${v}) is not a status`,
      script: everywhere(`return ${v}`),
      expect: { returned: undefined, status: 200, error: null },
    }),
  ),
];

const logging: Case[] = [
  {
    name: 'log() sends a line to FCGI_STDERR, arguments joined with tabs',
    script: everywhere('log("warn", 1, true); print("ok")'),
    expect: { stderr: 'warn\t1\ttrue\n', body: 'ok\n' },
  },
  {
    name: 'log(): a long line is cut with a marker, then the run budget spent with one marker; the run goes on',
    script: everywhere('log("0123456789abc"); log("cut by the engine", 100, "characters"); log("over"); log("dropped"); print("on")'),
    request: { limits: { logLineBytes: 10, logBytes: 16 } },
    expect: {
      body: 'on\n',
      // Lua counts what it cut in bytes, JS in characters (its string length): README, "Script API".
      stderr: perEngineOf((name) => {
        const unit = name === 'js' ? 'characters' : 'bytes';
        return (
          `0123456789 [lodestone: log line cut, 3 more ${unit} not logged]\n` +
          `cut by [lodestone: log line cut, 26 more ${unit} not logged]\n` +
          'lodestone: log budget of this run spent (scriptLimits.logBytes = 16): this and later log lines dropped\n'
        );
      }),
    },
  },
  {
    name: 'log(): a line is cut at a character boundary, and the marker counts what was cut',
    // "€" is 3 bytes: 9 of the 12 fit in 10, and 3 bytes (JS: 1 character) are cut.
    script: everywhere('log("€€€€")'),
    request: { limits: { logLineBytes: 10 } },
    expect: {
      stderr: perEngine({
        lua: '€€€ [lodestone: log line cut, 3 more bytes not logged]\n',
        js: '€€€ [lodestone: log line cut, 1 more characters not logged]\n',
      }),
    },
  },
];

const waits: Case[] = [
  {
    name: 'sleep() waits without blocking the event loop',
    script: { lua: 'sleep(50) print("woke")', js: 'await sleep(50); print("woke")' },
    during: (_t, ctx) => {
      const events = ['started'];
      ctx.notes.events = events;
      ctx.notes.timer = setTimeout(() => events.push('timer'), 10);
      setImmediate(() => events.push('immediate'));
    },
    expect: { body: 'woke\n', atLeastMs: 45 },
    check: (_out, ctx) => {
      clearTimeout(ctx.notes.timer as NodeJS.Timeout);
      const events = ctx.notes.events as string[];
      // Both fired while the script waited (their relative order is the event loop's business).
      assert.equal(events[0], 'started');
      assert.deepEqual(events.slice(1).sort(), ['immediate', 'timer']);
    },
  },
  {
    name: 'NaN and negative sleeps wait 0',
    script: { lua: 'sleep(0/0) sleep(-1) print("ok")', js: 'await sleep(NaN); await sleep(-1); print("ok")' },
    expect: { body: 'ok\n', withinMs: 500 },
  },
  {
    name: 'flush() sends the headers and the body so far while the script goes on',
    script: {
      lua: 'response.headers["X-Early"] = "1" print("a") flush() sleep(80) print("b")',
      js: 'response.headers["X-Early"] = "1"; print("a"); flush(); await sleep(80); print("b")',
    },
    during: (t, ctx) => {
      setTimeout(() => {
        const sent = t.result(false);
        ctx.notes.midway = { headersSent: t.response.headersSent, body: sent.body.toString(), header: sent.headers['x-early'], ended: sent.ended };
      }, 30);
    },
    expect: { body: 'a\nb\n', headers: { 'x-early': '1' } },
    check: (_out, ctx) => assert.deepEqual(ctx.notes.midway, { headersSent: true, body: 'a\n', header: '1', ended: false }),
  },
  {
    // The JS engine keeps head changes in the sandbox until the slice ends or a call acts on the
    // response: the order of sets and removals, and the refusal after flush(), must not change.
    name: 'header changes apply in order; after flush() the head is sent and a header change is refused',
    script: {
      lua: [
        'response.headers["X-A"] = "1" response.headers["X-A"] = nil response.headers["X-B"] = "2" response.headers["x-b"] = "3"',
        'response.status = 201 print(response.headers["X-B"], response.headers["X-A"]) flush()',
        'print(pcall(function() response.headers["X-C"] = "4" end) and "set" or "refused", response.headers["X-C"])',
      ].join('\n'),
      js: [
        'response.headers["X-A"] = "1"; delete response.headers["X-A"]; response.headers["X-B"] = "2"; response.headers["x-b"] = "3";',
        'response.status = 201; print(response.headers["X-B"], response.headers["X-A"]); flush();',
        'let r; try { response.headers["X-C"] = "4"; r = "set"; } catch (e) { r = e instanceof TypeError ? "refused" : e.name; } print(r, response.headers["X-C"]);',
      ].join('\n'),
    },
    expect: {
      status: 201,
      headers: { 'x-a': undefined, 'x-b': '3', 'x-c': undefined },
      body: perEngine({ lua: '3\tnil\nrefused\tnil\n', js: '3\tundefined\nrefused\tundefined\n' }),
    },
  },
];

const raw: Case[] = [
  {
    name: 'raw output mode: the printed CGI head becomes the status and headers',
    script: everywhere('write("Status: 404 Not Found\\r\\nContent-Type: text/plain\\r\\n\\r\\nnot "); write("here")'),
    request: { raw: true },
    expect: { status: 404, headers: { 'content-type': 'text/plain' }, body: 'not here' },
  },
  {
    name: 'raw output mode: flush waits for the whole head, then streams',
    script: everywhere('write("Content-Type: text/plain\\r\\n"); flush(); write("\\r\\nfirst "); flush(); write("second")'),
    request: { raw: true },
    expect: { status: 200, headers: { 'content-type': 'text/plain' }, body: 'first second' },
  },
  {
    name: 'raw output mode: no complete head is a script error',
    script: everywhere('write("Content-Type: text/plain\\r\\nno blank line")'),
    request: { raw: true },
    expect: { error: { kind: 'runtime', message: /no complete CGI header block/ } },
  },
];

const cases = [...output, ...request, ...response, ...returned, ...logging, ...waits, ...raw];

for (const engine of ENGINES) for (const c of cases) test(`${engine.id}: ${c.name}`, caseOptions(engine, c), () => runCase(engine, c));

// ---- the ScriptEngine interface itself ---------------------------------------------------

for (const entry of ENGINES) {
  test(`${entry.id}: identity: its name, its extension, a version string`, async () => {
    const engine = await instance(entry);
    assert.equal(engine.name, entry.name);
    assert.equal(engine.extension, `.${entry.name}`);
    assert.ok(typeof engine.version === 'string' && engine.version.length > 0);
  });

  test(`${entry.id}: compiles counts compile() calls, failed ones too, not runs`, async () => {
    const engine = await instance(entry);
    const before = engine.compiles;
    const script = engine.compile('print(1)', FILE.values[entry.name]);
    assert.equal(engine.compiles, before + 1);
    for (let i = 0; i < 3; i++) assert.equal((await serve(engine, script)).text, '1\n');
    assert.equal(engine.compiles, before + 1);
    assert.throws(() => engine.compile('print(', FILE.values[entry.name]), ScriptError);
    assert.equal(engine.compiles, before + 2);
    script.dispose();
    script.dispose(); // idempotent
  });
}
