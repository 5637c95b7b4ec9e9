/**
 * Engine conformance, cookies and forms (README, "Cookies and forms"): request.cookies,
 * response.cookie() and request.form(), each behaviour one row run against every engine in
 * ENGINES (test/helpers/engines.ts). Expected Set-Cookie lines and form contents are computed
 * here from the inputs (dates with Node's Date, forms with URLSearchParams and Buffers), not
 * copied from what the engines answered.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { FORM_MAX_FIELD_BYTES, FORM_MAX_PARTS } from '../../runtime/engines/host.js';
import { ENGINES, caseOptions, perEngine, runCase, type Case } from '../helpers/engines.js';
import type { Served } from '../helpers/script-host.js';

/** The Set-Cookie lines of a response, in order. */
function setCookies(out: Served): string[] {
  return out.headerLines.filter(([name]) => name === 'set-cookie').map(([, value]) => value);
}

/** A multipart/form-data body: each part a field (value) or a file (filename, type, data). */
interface PartSpec {
  name: string;
  value?: string;
  filename?: string;
  type?: string;
  data?: Buffer;
}

const BOUNDARY = '----lodestone-test-7d3f';

function multipart(parts: readonly PartSpec[], boundary = BOUNDARY): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename !== undefined) head += `; filename="${p.filename}"`;
    head += '\r\n';
    if (p.type !== undefined) head += `Content-Type: ${p.type}\r\n`;
    chunks.push(Buffer.from(head + '\r\n'), p.data ?? Buffer.from(p.value ?? ''), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

function post(contentType: string, body: string | Buffer): { params: Record<string, string>; body: string | Buffer } {
  return { params: { REQUEST_METHOD: 'POST', CONTENT_TYPE: contentType, CONTENT_LENGTH: String(Buffer.byteLength(body)) }, body };
}

const MULTIPART = `multipart/form-data; boundary=${BOUNDARY}`;

// Every byte value, twice, so the file holds NUL, CR LF, and bytes that are no UTF-8.
const BINARY = Buffer.from([...Array(512).keys()].map((i) => i % 256));

// ---- cookies ---------------------------------------------------------------------------------

const COOKIE_HEADER = 'sid=a%20b%3Bc; theme=dark; sid=second; euro=%E2%82%AC; bad=%E0%A4%A; empty=';

const EXPIRES = 1_700_000_000; // seconds since the epoch
const EXPIRES_TEXT = new Date(EXPIRES * 1000).toUTCString();

const cookies: Case[] = [
  {
    name: 'request.cookies: values percent-decoded, the first of a repeated name, an undecodable value kept as sent',
    script: {
      lua: [
        'local c = request.cookies',
        'local names = {} for k in pairs(c) do names[#names + 1] = k end table.sort(names)',
        'for _, k in ipairs(names) do print(k, "[" .. c[k] .. "]") end',
        'print(request.cookies == c, c.missing == nil)',
      ].join('\n'),
      js: [
        'const c = request.cookies;',
        'for (const k of Object.keys(c).sort()) print(k, "[" + c[k] + "]");',
        'print(request.cookies === c, c.missing === undefined)',
      ].join('\n'),
    },
    request: { params: { HTTP_COOKIE: COOKIE_HEADER } },
    expect: {
      body: 'bad\t[%E0%A4%A]\nempty\t[]\neuro\t[€]\nsid\t[a b;c]\ntheme\t[dark]\ntrue\ttrue\n',
    },
    then: [
      {
        // The next request on the same engine has no Cookie header: nothing of the last one is left.
        script: { lua: 'print(next(request.cookies) == nil)', js: 'print(Object.keys(request.cookies).length === 0)' },
        expect: { body: 'true\n' },
      },
    ],
  },
  {
    name: 'response.cookie: one Set-Cookie line per call, every option, in the order of the calls and header changes',
    script: {
      lua: [
        'response.cookie("sid", "a b;c€", { path = "/app", domain = "example.com", maxAge = 3600, expires = ' + EXPIRES + ',',
        '  httpOnly = true, secure = true, sameSite = "Strict", partitioned = true })',
        'response.headers["X-Between"] = "1"',
        'response.cookie("theme", "dark")',
        'response.cookie("n", 42, { sameSite = "lax", maxAge = 0, httpOnly = false })',
        'response.cookie("gone", "", { maxAge = -1, sameSite = "NONE", secure = true, path = nil })',
        'print(response.headers["Set-Cookie"])',
      ].join('\n'),
      js: [
        'response.cookie("sid", "a b;c€", { path: "/app", domain: "example.com", maxAge: 3600, expires: new Date(' + EXPIRES * 1000 + '),',
        '  httpOnly: true, secure: true, sameSite: "Strict", partitioned: true });',
        'response.headers["X-Between"] = "1";',
        'response.cookie("theme", "dark");',
        'response.cookie("n", 42, { sameSite: "lax", maxAge: 0, httpOnly: false });',
        'response.cookie("gone", "", { maxAge: -1, sameSite: "NONE", secure: true, path: undefined });',
        'print(response.headers["Set-Cookie"])',
      ].join('\n'),
    },
    expect: { error: null },
    check: (out) => {
      const first = `sid=${encodeURIComponent('a b;c€')}; Max-Age=3600; Domain=example.com; Path=/app; Expires=${EXPIRES_TEXT}; HttpOnly; Secure; Partitioned; SameSite=Strict`;
      assert.deepEqual(setCookies(out), [first, 'theme=dark', 'n=42; Max-Age=0; SameSite=Lax', 'gone=; Max-Age=-1; Secure; SameSite=None']);
      const names = out.headerLines.map(([name]) => name).filter((n) => n === 'set-cookie' || n === 'x-between');
      assert.deepEqual(names, ['set-cookie', 'x-between', 'set-cookie', 'set-cookie', 'set-cookie'], 'the lines keep the order of the calls');
      // A header read sees the first line, as for any header sent several times.
      assert.equal(out.text, `${first}\n`);
    },
  },
  {
    name: 'response.cookie: expires is seconds since the epoch in both languages',
    script: {
      lua: `response.cookie("e", "1", { expires = ${EXPIRES} + 0.5 })`,
      js: `response.cookie("e", "1", { expires: ${EXPIRES} + 0.5 })`,
    },
    expect: { error: null },
    check: (out) => assert.deepEqual(setCookies(out), [`e=1; Expires=${new Date(EXPIRES * 1000 + 500).toUTCString()}`]),
  },
  {
    name: 'response.cookie: a bad name, value or option is refused with a clear, catchable error and adds nothing',
    script: {
      lua: [
        'local function try(...)',
        '  local ok, err = pcall(response.cookie, ...)',
        '  print(ok, (tostring(err):gsub("^[^:]*:%d+: ", "")))',
        'end',
        'try("a b", "v") try("a;b", "v") try("", "v") try("a=b", "v") try(nil, "v") try("n", nil) try("n", {})',
        'try("n", "\\255\\254")',
        'try("n", "v", { max_age = 1 }) try("n", "v", { maxAge = 1.5 }) try("n", "v", { sameSite = "sometimes" })',
        'try("n", "v", { path = "/a;b" }) try("n", "v", { domain = "bad domain" }) try("n", "v", { httpOnly = "yes" })',
        'try("n", "v", { expires = "tomorrow" }) try("n", "v", { path = {} }) try("n", "v", "opts") try("n", "v", { [1] = true })',
        'print(response.headers["Set-Cookie"])',
      ].join('\n'),
      js: [
        'const tryIt = (...args) => {',
        '  try { response.cookie(...args); print(true); } catch (e) { print(false, e.name + ": " + e.message); }',
        '};',
        'tryIt("a b", "v"); tryIt("a;b", "v"); tryIt("", "v"); tryIt("a=b", "v"); tryIt(undefined, "v"); tryIt("n", undefined); tryIt("n", {});',
        'tryIt("n", "\\ud800");',
        'tryIt("n", "v", { max_age: 1 }); tryIt("n", "v", { maxAge: 1.5 }); tryIt("n", "v", { sameSite: "sometimes" });',
        'tryIt("n", "v", { path: "/a;b" }); tryIt("n", "v", { domain: "bad domain" }); tryIt("n", "v", { httpOnly: "yes" });',
        'tryIt("n", "v", { expires: "tomorrow" }); tryIt("n", "v", { path: {} }); tryIt("n", "v", "opts"); tryIt("n", "v", [true]);',
        'print(response.headers["Set-Cookie"])',
      ].join('\n'),
    },
    expect: {
      body: perEngine({
        lua: expectedRefusals('', (m) => `false\t${m}`, 'the value is not valid UTF-8 (encode binary data first, e.g. as base64)', 'nil', 1),
        js: expectedRefusals('TypeError: ', (m) => `false\t${m}`, 'the value is not valid Unicode text (a lone surrogate)', 'undefined', 0),
      }),
    },
    check: (out) => assert.deepEqual(setCookies(out), []),
  },
  {
    name: 'response.cookie: an uncaught refusal ends the run with its line',
    script: { lua: 'print("a")\nresponse.cookie("bad name", "v")', js: 'print("a");\nresponse.cookie("bad name", "v");' },
    expect: {
      error: { kind: 'runtime', line: 2, message: perEngine({ lua: 'response.cookie(): argument name is invalid: bad name', js: 'TypeError: response.cookie(): argument name is invalid: bad name' }) },
    },
  },
  {
    name: 'response.cookie after flush() is refused (the headers are sent), catchably',
    script: {
      lua: 'response.cookie("a", "1") print("x") flush()\nlocal ok, err = pcall(response.cookie, "b", "2") print(ok, (err:gsub("^[^:]*:%d+: ", "")))',
      js: 'response.cookie("a", "1"); print("x"); flush();\ntry { response.cookie("b", "2"); } catch (e) { print(false, e.message); }',
    },
    expect: { body: 'x\nfalse\theader Set-Cookie set after the headers were sent\n' },
    check: (out) => assert.deepEqual(setCookies(out), ['a=1']),
  },
  {
    name: 'response.cookie across a wait: every line arrives, in order, with the header changes between',
    script: {
      lua: 'response.cookie("a", "1") response.headers["Set-Cookie"] = nil response.cookie("b", "2") sleep(1) response.cookie("c", "3")',
      js: 'response.cookie("a", "1"); delete response.headers["Set-Cookie"]; response.cookie("b", "2"); await sleep(1); response.cookie("c", "3");',
    },
    expect: { error: null },
    // Removing Set-Cookie removes the lines added before it, as for any header.
    check: (out) => assert.deepEqual(setCookies(out), ['b=2', 'c=3']),
  },
];

/** The body the refusal case prints, message by message, for one language. */
function expectedRefusals(prefix: string, line: (message: string) => string, badValue: string, none: string, numberKey: number): string {
  const m = (s: string): string => line(`${prefix}response.cookie(): ${s}`);
  const known = 'path, domain, maxAge, expires, httpOnly, secure, sameSite, partitioned';
  return [
    m('argument name is invalid: a b'),
    m('argument name is invalid: a;b'),
    m('argument name is invalid: '),
    m('argument name is invalid: a=b'),
    m('the name must be a string'),
    m('the value must be a string'),
    m('the value must be a string'),
    m(badValue),
    m(`unknown option max_age (known: ${known})`),
    m('option maxAge must be an integer (seconds)'),
    m('option sameSite must be "Strict", "Lax" or "None"'),
    m('option path is invalid: /a;b'),
    m('option domain is invalid: bad domain'),
    m('option httpOnly must be a boolean'),
    m('option expires must be a time in seconds since the epoch'),
    m('option path must be a string'),
    m('the options must be a table or an object'),
    // Lua's { [1] = true } and JS's [true]: a key that is a number, as each language counts.
    m(`unknown option ${numberKey} (known: ${known})`),
    none,
  ].join('\n') + '\n';
}

// ---- forms -----------------------------------------------------------------------------------

/** Prints a form's parts in order, then its fields and files tables sorted by name. */
const DUMP_FORM = {
  lua: [
    'local f = request.form()',
    'for i, p in ipairs(f.parts) do',
    '  if p.data then print(i, p.name, "file", p.filename, p.content_type, p.size, #p.data, f.files[p.name] == p)',
    '  else print(i, p.name, "[" .. p.value .. "]") end',
    'end',
    'local names = {} for k in pairs(f.fields) do names[#names + 1] = k end table.sort(names)',
    'for _, k in ipairs(names) do print("field", k, "[" .. f.fields[k] .. "]") end',
    'names = {} for k in pairs(f.files) do names[#names + 1] = k end table.sort(names)',
    'for _, k in ipairs(names) do print("file", k, f.files[k].filename) end',
  ].join('\n'),
  js: [
    'const f = await request.form();',
    'f.parts.forEach((p, i) => {',
    '  if ("data" in p) print(i + 1, p.name, "file", p.filename, p.content_type, p.size, p.data.length, f.files[p.name] === p);',
    '  else print(i + 1, p.name, "[" + p.value + "]");',
    '});',
    'for (const k of Object.keys(f.fields).sort()) print("field", k, "[" + f.fields[k] + "]");',
    'for (const k of Object.keys(f.files).sort()) print("file", k, f.files[k].filename);',
  ].join('\n'),
};

/** What DUMP_FORM prints for fields only, computed from the body with URLSearchParams. */
function dumpOfFields(pairs: ReadonlyArray<readonly [string, string]>): string {
  const lines = pairs.map(([k, v], i) => `${i + 1}\t${k}\t[${v}]`);
  const last = new Map<string, string>();
  for (const [k, v] of pairs) last.set(k, v);
  for (const k of [...last.keys()].sort()) lines.push(`field\t${k}\t[${last.get(k)}]`);
  return lines.join('\n') + '\n';
}

const URLENCODED = 'a=1&b=%E2%82%AC+x&a=2&&empty=&flag&c%20d=%3D%26';

/** A urlencoded body of `n` short pairs. */
function manyPairs(n: number): string {
  return Array.from({ length: n }, (_, i) => `k${i}=${i}`).join('&');
}

const PCALL_FORM = {
  lua: 'local ok, err = pcall(request.form) print(ok, err) print("still running")',
  js: 'try { await request.form(); print(true); } catch (e) { print(false, e.message); } print("still running")',
};

/** What PCALL_FORM prints when form() is refused with `message`. */
function refused(message: string): Case['expect'] {
  return { body: perEngine({ lua: `false\t${message}\nstill running\n`, js: `false\t${message}\nstill running\n` }) };
}

const forms: Case[] = [
  {
    name: 'request.form: urlencoded, decoded by URLSearchParams; a repeated name: the last in fields, all in parts',
    script: DUMP_FORM,
    request: post('application/x-www-form-urlencoded; charset=UTF-8', URLENCODED),
    expect: { body: dumpOfFields([...new URLSearchParams(URLENCODED)]) },
  },
  {
    name: 'request.form: multipart fields and files, in body order; file bytes exact in Lua, UTF-8 text in JS',
    script: {
      lua: DUMP_FORM.lua + '\nwrite(request.form().files.bin.data)',
      js: DUMP_FORM.js + '\nwrite(f.files.bin.data)',
    },
    request: post(
      MULTIPART,
      multipart([
        { name: 'user', value: 'ann' },
        { name: 'bin', filename: 'dir/naïve.bin', type: 'application/octet-stream', data: BINARY },
        { name: 'note', value: 'line 1\r\nline 2 €' },
        { name: 'user', value: 'bob' },
        { name: 'empty', filename: '', type: 'application/octet-stream', data: Buffer.alloc(0) },
        { name: 'text', filename: 'a.txt', data: Buffer.from('plain') },
      ]),
    ),
    expect: {
      body: perEngine({
        lua: Buffer.concat([Buffer.from(formDump(BINARY.length)), BINARY]),
        // The string's length: UTF-16 units of the bytes decoded as UTF-8 (U+FFFD for each bad one).
        js: Buffer.concat([Buffer.from(formDump(BINARY.toString('utf8').length)), Buffer.from(BINARY.toString('utf8'))]),
      }),
    },
  },
  {
    name: 'request.form: files of a repeated name: the last in files, each in parts',
    script: {
      lua: 'local f = request.form() print(#f.parts, f.files.up.data, f.parts[1].data, f.parts[2].data, f.parts[1] ~= f.parts[2])',
      js: 'const f = await request.form(); print(f.parts.length, f.files.up.data, f.parts[0].data, f.parts[1].data, f.parts[0] !== f.parts[1])',
    },
    request: post(
      MULTIPART,
      multipart([
        { name: 'up', filename: 'one.txt', type: 'text/plain', data: Buffer.from('first') },
        { name: 'up', filename: 'two.txt', type: 'text/plain', data: Buffer.from('second') },
      ]),
    ),
    expect: { body: '2\tsecond\tfirst\tsecond\ttrue\n' },
  },
  {
    name: 'request.form and request.body share the body: either order, both whole',
    script: {
      lua: 'local b = request.body() local f = request.form() print(#b, f.fields.a, request.body() == b, request.form().fields.b)',
      js: 'const b = await request.body(); const f = await request.form(); print(b.length, f.fields.a, (await request.body()) === b, f === (await request.form()), f.fields.b)',
    },
    request: post('application/x-www-form-urlencoded', 'a=1&b=2'),
    expect: { body: perEngine({ lua: '7\t1\ttrue\t2\n', js: '7\t1\ttrue\ttrue\t2\n' }) },
    then: [
      {
        script: {
          lua: 'local f = request.form() print(f.fields.a, request.body())',
          js: 'const f = await request.form(); print(f.fields.a, await request.body())',
        },
        request: post('application/x-www-form-urlencoded', 'a=next'),
        expect: { body: 'next\ta=next\n' },
      },
    ],
  },
  {
    name: 'request.form: another Content-Type, or none, is an empty form (the body is still readable)',
    script: {
      lua: 'local f = request.form() print(next(f.fields) == nil, next(f.files) == nil, #f.parts, request.body())',
      js: 'const f = await request.form(); print(Object.keys(f.fields).length, Object.keys(f.files).length, f.parts.length, await request.body())',
    },
    request: post('application/json', '{"a=1":"b"}'),
    expect: { body: perEngine({ lua: 'true\ttrue\t0\t{"a=1":"b"}\n', js: '0\t0\t0\t{"a=1":"b"}\n' }) },
    then: [
      {
        script: { lua: 'print(#request.form().parts)', js: 'print((await request.form()).parts.length)' },
        expect: { body: '0\n' },
      },
    ],
  },
  {
    name: `request.form: more than ${FORM_MAX_PARTS} urlencoded fields is refused, catchably`,
    script: PCALL_FORM,
    request: post('application/x-www-form-urlencoded', manyPairs(FORM_MAX_PARTS + 1)),
    expect: refused(`request.form(): more than ${FORM_MAX_PARTS} fields and files`),
    then: [
      {
        // Exactly at the limit is a form; empty pairs ("&&") do not count.
        script: { lua: 'print(#request.form().parts)', js: 'print((await request.form()).parts.length)' },
        request: post('application/x-www-form-urlencoded', manyPairs(FORM_MAX_PARTS) + '&&&&'),
        expect: { body: `${FORM_MAX_PARTS}\n` },
      },
    ],
  },
  {
    name: `request.form: more than ${FORM_MAX_PARTS} multipart parts is refused, catchably`,
    script: PCALL_FORM,
    request: post(MULTIPART, multipart(Array.from({ length: FORM_MAX_PARTS + 1 }, (_, i) => ({ name: `f${i}`, value: 'x' })))),
    expect: refused(`request.form(): more than ${FORM_MAX_PARTS} fields and files`),
    then: [
      {
        script: { lua: 'local f = request.form() print(#f.parts, f.fields.f999)', js: 'const f = await request.form(); print(f.parts.length, f.fields.f999)' },
        request: post(MULTIPART, multipart(Array.from({ length: FORM_MAX_PARTS }, (_, i) => ({ name: `f${i}`, value: String(i) })))),
        expect: { body: `${FORM_MAX_PARTS}\t${FORM_MAX_PARTS - 1}\n` },
      },
    ],
  },
  {
    name: `request.form: a field over ${FORM_MAX_FIELD_BYTES} bytes is refused, catchably (multipart and urlencoded)`,
    script: PCALL_FORM,
    request: post(MULTIPART, multipart([{ name: 'big', value: 'x'.repeat(FORM_MAX_FIELD_BYTES + 1) }])),
    expect: refused(`request.form(): field "big" is over ${FORM_MAX_FIELD_BYTES} bytes`),
    then: [
      {
        script: PCALL_FORM,
        request: post('application/x-www-form-urlencoded', 'big=' + '%E2%82%AC'.repeat(Math.floor(FORM_MAX_FIELD_BYTES / 3) + 1)),
        expect: refused(`request.form(): field "big" is over ${FORM_MAX_FIELD_BYTES} bytes`),
      },
    ],
  },
  {
    name: 'request.form: a truncated multipart body or one without a boundary is refused, catchably',
    script: PCALL_FORM,
    request: post(MULTIPART, multipart([{ name: 'a', value: 'x' }]).subarray(0, 60)),
    expect: refused('request.form(): malformed multipart body: Unexpected end of form'),
    then: [
      {
        script: PCALL_FORM,
        request: post('multipart/form-data', 'a'),
        expect: refused('request.form(): Multipart: Boundary not found'),
      },
    ],
  },
  {
    // The line is the call's in every engine: in JS the host makes the error outside any
    // script frame, so the prelude gives it the stack of the call.
    name: 'request.form: an uncaught refusal ends the run as a script error at the line of the call',
    script: { lua: 'print("a")\nlocal f = request.form()', js: 'print("a");\nconst f = await request.form();' },
    request: post('application/x-www-form-urlencoded', manyPairs(FORM_MAX_PARTS + 1)),
    expect: {
      error: { kind: 'runtime', line: 2, message: perEngine({ lua: /more than 1000 fields and files/, js: /^Error: request\.form\(\): more than 1000 fields and files/ }) },
    },
  },
];

/** What DUMP_FORM prints for the multipart case's body (`length`: the bin file's data's length as the script sees it). */
function formDump(length: number): string {
  return [
    '1\tuser\t[ann]',
    `2\tbin\tfile\tnaïve.bin\tapplication/octet-stream\t${BINARY.length}\t${length}\ttrue`,
    '3\tnote\t[line 1\r\nline 2 €]',
    '4\tuser\t[bob]',
    '5\tempty\tfile\t\tapplication/octet-stream\t0\t0\ttrue',
    '6\ttext\tfile\ta.txt\ttext/plain\t5\t5\ttrue',
    'field\tnote\t[line 1\r\nline 2 €]',
    'field\tuser\t[bob]',
    'file\tbin\tnaïve.bin',
    'file\tempty\t',
    'file\ttext\ta.txt',
  ].join('\n') + '\n';
}

const cases = [...cookies, ...forms];

for (const engine of ENGINES) for (const c of cases) test(`${engine.id}: ${c.name}`, caseOptions(engine, c), () => runCase(engine, c));
