/**
 * Engine conformance, the data library (README, "Script library"): Lua's json, and base64, url,
 * crypto and time in both languages, each behaviour one row run against every engine in ENGINES
 * (test/helpers/engines.ts), hostile inputs included (a nesting bomb, input over the limit,
 * garbage to decode, a huge random_bytes, an unknown HMAC algorithm, NUL and invalid UTF-8).
 * Expected digests, encodings and dates are computed here with Node, not copied from a run.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import test from 'node:test';
import { MAX_LIBRARY_BYTES, MAX_RANDOM_BYTES } from '../../runtime/engines/host/codecs.js';
import { ENGINES, caseOptions, everywhere, notWritable, perEngine, runCase, type Case } from '../helpers/engines.js';

const JS_HAS_JSON = notWritable('JS keeps its own JSON; json.* is Lua only');

/** Lua bytes that are not UTF-8 (NUL, 0xff, a lone continuation byte) plus "é", and the same bytes in Node. */
const LUA_BYTES = String.raw`"a\0b\255\128\195\169"`;
const BYTES = Buffer.from([0x61, 0, 0x62, 0xff, 0x80, 0xc3, 0xa9]);
/** JS strings are text: NUL, "é" and "€", sent as UTF-8. */
const JS_TEXT = String.raw`"a\0bé€"`;
const TEXT = Buffer.from('a\0bé€', 'utf8');

const hex = (alg: string, data: Buffer): string => createHash(alg).update(data).digest('hex');

const json: Case[] = [
  {
    name: 'json.encode: scalars, arrays by cjson rules (holes are null), objects, json.null, empty table and json.array',
    script: {
      lua: String.raw`
print(json.encode(nil), json.encode(true), json.encode(42), json.encode(-1.5), json.encode("x\"\n\0é"))
print(json.encode({1, "two", false}), json.encode({[1] = 1, [3] = 3}), json.encode({}), json.encode(json.array({})))
print(json.encode({a = json.null}), json.encode(json.null), json.encode({[2] = "b", [1] = "a"}), json.encode({{}, {{}}}))
print(json.encode({1, 2, x = 3}) == json.encode({["1"] = 1, ["2"] = 2, x = 3}) or json.encode({1, 2, x = 3}))
print(json.encode({[1.5] = "f"}), json.encode(json.array({1, 2, x = "ignored"})), json.encode(2^53), json.encode(0.1))
local t = json.array({}) print(rawequal(json.array(t), t))`,
      js: JS_HAS_JSON,
    },
    expect: {
      body: [
        'null\ttrue\t42\t-1.5\t"x\\"\\n\\u0000é"',
        '[1,"two",false]\t[1,null,3]\t{}\t[]',
        '{"a":null}\tnull\t["a","b"]\t[{},[{}]]',
        'true',
        '{"1.5":"f"}\t[1,2]\t9007199254740992\t0.1',
        'true',
        '',
      ].join('\n'),
    },
  },
  {
    name: 'json.encode: an object with many keys is JSON.parse-able back to the same object (any key order)',
    script: { lua: 'print(json.encode({a = 1, b = {c = "d", e = {1, 2}}, ["__proto__"] = 5, ["with space"] = true}))', js: JS_HAS_JSON },
    expect: {},
    check: (out) => assert.deepEqual(JSON.parse(out.text), JSON.parse('{"a":1,"b":{"c":"d","e":[1,2]},"__proto__":5,"with space":true}')),
  },
  {
    name: 'json.encode: what cannot be encoded is a catchable error naming it and where it is',
    script: {
      lua: String.raw`
local function try(v) local ok, err = pcall(json.encode, v) print(ok, err) end
try({a = {print}})
try({n = 0/0})
try(math.huge)
local t = {} t.self = {t} try(t)
try({[1] = 1, [30] = 2})
try({[true] = 1})
try("\255")
try({k = coroutine.create(print)})`,
      js: JS_HAS_JSON,
    },
    expect: {
      body: [
        'false\tjson.encode: cannot encode a function (at $.a[1])',
        'false\tjson.encode: cannot encode NaN or infinity (at $.n)',
        'false\tjson.encode: cannot encode NaN or infinity',
        'false\tjson.encode: a table contains itself (at $.self[1])',
        'false\tjson.encode: excessively sparse array (use string keys, or fill the holes)',
        'false\tjson.encode: a table key must be a string or a number, not a boolean',
        'false\tjson.encode: a string is not valid UTF-8',
        'false\tjson.encode: cannot encode a thread (at $.k)',
        '',
      ].join('\n'),
    },
  },
  {
    // ~600,000 values reach the bound: about a second of CPU on the dev machine, so the CPU
    // limit is raised here (with the default one, that limit would end the run instead).
    name: 'json.encode: a table shared 2^40 times over stops at the size bound, not after 2^40 values',
    script: {
      lua: 'local t = {"x"} for i = 1, 40 do t = {t, t} end\nlocal ok, err = pcall(json.encode, t) print(ok, err)',
      js: JS_HAS_JSON,
    },
    request: { limits: { cpuMs: 20000, wallMs: 30000 } },
    expect: { body: new RegExp(`^false\\tjson\\.encode: result over ${MAX_LIBRARY_BYTES} bytes \\(at \\$(\\[[12]\\])+\\)\\n$`), withinMs: 15000 },
  },
  {
    name: 'json.decode: values, json.null, integers and floats, UTF-8 bytes, arrays that encode back as arrays',
    script: {
      lua: String.raw`
local v = json.decode('{"a":[1,2.5,null,"\\u00e9\\u0000"],"b":{},"c":[],"d":true,"big":1e300}')
print(v.a[1], math.type(v.a[1]), v.a[2], v.a[3] == json.null, #v.a, v.a[4] == "é\0", v.d, v.big)
print(json.encode(v.b), json.encode(v.c), json.decode("null") == json.null, json.decode(" 7 "), json.decode('"x"'))
print(json.encode(json.decode('[[],{},[[]]]')))`,
      js: JS_HAS_JSON,
    },
    expect: { body: '1\tinteger\t2.5\ttrue\t4\ttrue\ttrue\t1e+300\n{}\t[]\ttrue\t7\tx\n[[],{},[[]]]\n' },
  },
  {
    name: 'json.decode: invalid JSON is a catchable error with the byte position',
    script: {
      lua: String.raw`
for _, s in ipairs({'{"a":}', '[1, 2, x]', '[1,2', '', '{"é":1} x', '"\255"'}) do
  local ok, err = pcall(json.decode, s) print(ok, (err:gsub(": [^:]*$", "")))
end`,
      js: JS_HAS_JSON,
    },
    expect: {
      body: [
        'false\tjson.decode: invalid JSON at byte 6',
        'false\tjson.decode: invalid JSON at byte 8',
        'false\tjson.decode: invalid JSON at byte 5',
        'false\tjson.decode: invalid JSON at byte 1',
        'false\tjson.decode: invalid JSON at byte 10',
        'false\tjson.decode',
        '',
      ].join('\n'),
    },
  },
  {
    name: 'json.decode: an uncaught error ends the run at the script line',
    script: { lua: 'print("a")\nlocal v = json.decode("{")', js: JS_HAS_JSON },
    expect: { error: { kind: 'runtime', message: /json\.decode: invalid JSON at byte 2/, line: 2 } },
  },
  {
    name: 'json.decode: a nesting bomb, deep valid nesting and input over the limit are clean catchable errors',
    script: {
      lua: String.raw`
print(pcall(json.decode, string.rep("[", 100000)))
print(pcall(json.decode, string.rep("[", 5000) .. string.rep("]", 5000)))
print(pcall(json.decode, string.rep('{"a":', 1001) .. "1" .. string.rep("}", 1001)))
print(#json.encode(json.decode(string.rep("[", 1000) .. string.rep("]", 1000))))
print(pcall(json.decode, string.rep(" ", ${MAX_LIBRARY_BYTES + 1})))
local t = {} for i = 1, 1001 do t = {t} end print(pcall(json.encode, t))`,
      js: JS_HAS_JSON,
    },
    expect: {
      body: [
        'false\tjson.decode: invalid JSON at byte 100001: unexpected end of the text',
        'false\tjson.decode: nested deeper than 1000 levels at byte 1001',
        `false\tjson.decode: nested deeper than 1000 levels at byte ${5 * 1000 + 1}`,
        '2000',
        `false\tjson.decode: input over ${MAX_LIBRARY_BYTES} bytes`,
        `false\tjson.encode: nested deeper than 1000 levels (at $${'[1]'.repeat(1000)})`,
        '',
      ].join('\n'),
      withinMs: 10000,
    },
  },
  {
    name: 'json.array marks and returns its table; anything but a table is an error at the line',
    script: { lua: 'local t = {}\nprint(json.array(t) == t)\njson.array("x")', js: JS_HAS_JSON },
    expect: { error: { kind: 'runtime', message: /bad argument #1 to 'array' \(table expected, got string\)/, line: 3 } },
  },
];

const codecs: Case[] = [
  {
    name: 'base64.encode/decode and the URL-safe variants round-trip bytes (Lua) or UTF-8 text (JS)',
    script: {
      lua: `local s = ${LUA_BYTES} .. "??>>" print(base64.encode(s), base64.encode_url(s), base64.decode(base64.encode(s)) == s, base64.decode_url(base64.encode_url(s)) == s)`,
      js: `const s = ${JS_TEXT} + "??>>"; print(base64.encode(s), base64.encode_url(s), base64.decode(base64.encode(s)) === s, base64.decode_url(base64.encode_url(s)) === s)`,
    },
    expect: {
      body: perEngine({
        lua: `${Buffer.concat([BYTES, Buffer.from('??>>')]).toString('base64')}\t${Buffer.concat([BYTES, Buffer.from('??>>')]).toString('base64url')}\ttrue\ttrue\n`,
        js: `${Buffer.concat([TEXT, Buffer.from('??>>')]).toString('base64')}\t${Buffer.concat([TEXT, Buffer.from('??>>')]).toString('base64url')}\ttrue\ttrue\n`,
      }),
    },
  },
  {
    name: 'base64.decode of garbage is nil/null, never a partial result; missing padding is accepted',
    script: {
      lua: String.raw`
for _, s in ipairs({"!!!!", "QQ", "QQ==", "QQ=", "Q", "QUJD\n", "QU JD", "a-_b", "QQ==QQ==", "\255"}) do write(tostring(base64.decode(s)), " ") end
print() for _, s in ipairs({"a-_b", "a+/b", "QQ", "QQ=="}) do write(tostring(base64.decode_url(s) and #base64.decode_url(s)), " ") end`,
      js: String.raw`
for (const s of ["!!!!", "QQ", "QQ==", "QQ=", "Q", "QUJD\n", "QU JD", "a-_b", "QQ==QQ==", "\xff"]) write(String(base64.decode(s)), " ");
print(); for (const s of ["a-_b", "a+/b", "QQ", "QQ=="]) write(String(base64.decode_url(s) && base64.decode_url(s).length), " ");`,
    },
    expect: { body: perEngine({ lua: 'nil A A nil nil nil nil nil nil nil \n3 nil 1 1 ', js: 'null A A null null null null null null null \n3 null 1 1 ' }) },
  },
  {
    name: 'url.escape escapes like ngx.escape_uri (a URI component, upper-case hex); url.unescape also turns + into a space',
    script: {
      lua: String.raw`local s = "" for i = 32, 126 do s = s .. string.char(i) end
write(url.escape(s .. "\0é"), "\t", url.unescape("a+b%20c%2Bd%zz%4%e9%C3%A9"))`,
      js: String.raw`let s = ""; for (let i = 32; i <= 126; i++) s += String.fromCharCode(i);
write(url.escape(s + "\0é"), "\t", url.unescape("a+b%20c%2Bd%zz%4%C3%A9%00"))`,
    },
    expect: {},
    check: (out, ctx) => {
      // ngx's URI-component set is encodeURIComponent's; the Lua result is bytes (%e9 alone is the byte 0xe9).
      const printable = String.fromCharCode(...Array.from({ length: 95 }, (_, i) => i + 32));
      const unescaped = ctx.engine === 'lua' ? Buffer.from([...Buffer.from('a b c+d%zz%4'), 0xe9, ...Buffer.from('é')]) : Buffer.from('a b c+d%zz%4é\0');
      assert.deepEqual(out.body, Buffer.concat([Buffer.from(encodeURIComponent(printable + '\0é') + '\t'), unescaped]));
    },
  },
];

const KEY = Buffer.from('k\0ey');
const ALGS = ['md5', 'sha1', 'sha256', 'sha512'] as const;

const crypto: Case[] = [
  {
    name: 'crypto digests and HMACs are lower-case hex of the bytes (Lua) or UTF-8 (JS), NUL and all, as Node computes them',
    script: {
      lua: `local d = ${LUA_BYTES}\nprint(crypto.md5(d), crypto.sha1(d), crypto.sha256(d), crypto.sha512(d), crypto.md5(""))\nprint(crypto.hmac("md5", "k\\0ey", d), crypto.hmac("sha1", "k\\0ey", d), crypto.hmac("sha256", "k\\0ey", d), crypto.hmac("sha512", "k\\0ey", d))`,
      js: `const d = ${JS_TEXT};\nprint(crypto.md5(d), crypto.sha1(d), crypto.sha256(d), crypto.sha512(d), crypto.md5(""))\nprint(crypto.hmac("md5", "k\\0ey", d), crypto.hmac("sha1", "k\\0ey", d), crypto.hmac("sha256", "k\\0ey", d), crypto.hmac("sha512", "k\\0ey", d))`,
    },
    expect: {
      body: perEngine({
        lua: [...ALGS.map((a) => hex(a, BYTES)), hex('md5', Buffer.alloc(0))].join('\t') + '\n' + ALGS.map((a) => createHmac(a, KEY).update(BYTES).digest('hex')).join('\t') + '\n',
        js: [...ALGS.map((a) => hex(a, TEXT)), hex('md5', Buffer.alloc(0))].join('\t') + '\n' + ALGS.map((a) => createHmac(a, KEY).update(TEXT).digest('hex')).join('\t') + '\n',
      }),
    },
  },
  {
    name: 'crypto.hmac with an unknown algorithm is a catchable error',
    script: {
      lua: 'print(pcall(crypto.hmac, "sha3", "k", "d"))\nprint(pcall(crypto.hmac, "SHA256", "k", "d"))',
      js: 'for (const alg of ["sha3", "SHA256"]) { try { crypto.hmac(alg, "k", "d"); print("no error") } catch (e) { print(e.name, e.message) } }',
    },
    expect: {
      body: perEngine({
        lua: 'false\tcrypto.hmac: unknown algorithm "sha3" (md5, sha1, sha256 or sha512)\nfalse\tcrypto.hmac: unknown algorithm "SHA256" (md5, sha1, sha256 or sha512)\n',
        js: 'TypeError\tcrypto.hmac: unknown algorithm "sha3" (md5, sha1, sha256 or sha512)\nTypeError\tcrypto.hmac: unknown algorithm "SHA256" (md5, sha1, sha256 or sha512)\n',
      }),
    },
  },
  {
    name: 'crypto.random_bytes: n bytes (Lua) or their hex (JS), different each call; past the bound or negative, an error',
    script: {
      lua: `local a, b = crypto.random_bytes(32), crypto.random_bytes(32)\nprint(#a, a ~= b, #crypto.random_bytes(0), #crypto.random_bytes(${MAX_RANDOM_BYTES}))\nprint(pcall(crypto.random_bytes, ${MAX_RANDOM_BYTES + 1}))\nprint(pcall(crypto.random_bytes, -1))\nprint(pcall(crypto.random_bytes, 1e5))`,
      js: `const a = crypto.random_bytes(32), b = crypto.random_bytes(32);\nprint(a.length, a !== b, /^[0-9a-f]+$/.test(a), crypto.random_bytes(0).length, crypto.random_bytes(${MAX_RANDOM_BYTES}).length)\nfor (const n of [${MAX_RANDOM_BYTES + 1}, -1, 2 ** 40, 1.5]) { try { crypto.random_bytes(n); print("no error") } catch (e) { print(e.name, e.message) } }`,
    },
    expect: {
      body: perEngine({
        lua: `32\ttrue\t0\t${MAX_RANDOM_BYTES}\n` + `false\tcrypto.random_bytes: n must be an integer from 0 to ${MAX_RANDOM_BYTES}\n`.repeat(3),
        js: `64\ttrue\ttrue\t0\t${MAX_RANDOM_BYTES * 2}\n` + `TypeError\tcrypto.random_bytes: n must be an integer from 0 to ${MAX_RANDOM_BYTES}\n`.repeat(4),
      }),
    },
  },
  {
    name: 'crypto.timing_safe_equal: equal bytes only; different lengths are false, not an error',
    script: {
      lua: 'print(crypto.timing_safe_equal("abc", "abc"), crypto.timing_safe_equal("abc", "abd"), crypto.timing_safe_equal("abc", "ab"), crypto.timing_safe_equal("", ""), crypto.timing_safe_equal("a\\0b", "a\\0c"), crypto.timing_safe_equal("a\\0b", "a\\0b"))',
      js: 'print(crypto.timing_safe_equal("abc", "abc"), crypto.timing_safe_equal("abc", "abd"), crypto.timing_safe_equal("abc", "ab"), crypto.timing_safe_equal("", ""), crypto.timing_safe_equal("a\\0b", "a\\0c"), crypto.timing_safe_equal("a\\0b", "a\\0b"))',
    },
    expect: { body: 'true\tfalse\tfalse\ttrue\tfalse\ttrue\n' },
  },
];

const DATES = [0, 1290079655, 1290079655.9, 784111777, 253402300799];
const PARSED: Array<[string, number | null]> = [
  ['Thu, 18 Nov 2010 11:27:35 GMT', Date.parse('2010-11-18T11:27:35Z') / 1000],
  ['Thursday, 18-Nov-10 11:27:35 GMT', Date.parse('2010-11-18T11:27:35Z') / 1000],
  ['Sun Nov  6 08:49:37 1994', Date.parse('1994-11-06T08:49:37Z') / 1000],
  ['Sunday, 06-Nov-94 08:49:37 GMT', Date.parse('1994-11-06T08:49:37Z') / 1000],
  ['Thu, 30 Feb 2010 11:27:35 GMT', null],
  ['Thu, 18 Nov 2010 24:00:00 GMT', null],
  ['Thu, 18 Nov 2010 11:27:35 CET', null],
  ['2010-11-18T11:27:35Z', null],
  ['', null],
];
const dateList = DATES.join(', ');
const parseList = PARSED.map(([s]) => JSON.stringify(s)).join(', ');

const time: Case[] = [
  {
    name: 'time.now is the wall clock in ms',
    script: everywhere('print(time.now())'),
    expect: {},
    check: (out) => {
      const t = parseFloat(out.text);
      assert.ok(Math.abs(t - Date.now()) < 5000, `${out.text} is not now`);
    },
  },
  {
    name: 'time.http_date formats like ngx.http_time; time.parse_http_date reads the three HTTP forms, else nil/null',
    script: {
      lua: `for _, t in ipairs({${dateList}}) do write(time.http_date(t), "|") end print()\nfor _, s in ipairs({${parseList}}) do write(tostring(time.parse_http_date(s)), "|") end print()\nprint(time.parse_http_date(time.http_date(1700000000)), pcall(time.http_date, 0/0))`,
      js: `for (const t of [${dateList}]) write(time.http_date(t), "|"); print();\nfor (const s of [${parseList}]) write(String(time.parse_http_date(s)), "|"); print();\ntry { time.http_date(NaN) } catch (e) { print(time.parse_http_date(time.http_date(1700000000)), e.name, e.message) }`,
    },
    expect: {
      body: perEngine({
        lua: `${DATES.map((t) => new Date(Math.floor(t) * 1000).toUTCString() + '|').join('')}\n${PARSED.map(([, v]) => `${v ?? 'nil'}|`).join('')}\n1700000000\tfalse\ttime.http_date: t must be a finite number of seconds\n`,
        js: `${DATES.map((t) => new Date(Math.floor(t) * 1000).toUTCString() + '|').join('')}\n${PARSED.map(([, v]) => `${v ?? 'null'}|`).join('')}\n1700000000\tTypeError\ttime.http_date: t must be a finite number of seconds\n`,
      }),
    },
  },
];

const shape: Case[] = [
  {
    name: 'arguments: a number is taken as its text, anything else is an error',
    script: {
      lua: 'print(base64.encode(12), url.escape(1.5), crypto.md5(7) == crypto.md5("7"), select(2, pcall(base64.encode, {})))\nbase64.encode()',
      js: 'let e; try { base64.encode({}) } catch (err) { e = err }\nprint(base64.encode(12), url.escape(1.5), crypto.md5(7) === crypto.md5("7"), e.name, e.message)',
    },
    expect: {
      body: perEngine({
        lua: /^MTI=\t1\.5\ttrue\tbad argument #1 to '.*' \(string expected, got table\)\n$/,
        js: /^MTI=\t1\.5\ttrue\tTypeError\tbase64\.encode: expected a string, got object\n$/,
      }),
      error: perEngine({ lua: { kind: 'runtime', message: /bad argument #1 to '.*' \(string expected, got no value\)/, line: 2 }, js: null }),
    },
  },
  {
    name: 'inputs over the limit are a catchable error, in both languages',
    script: {
      lua: `print(pcall(base64.encode, string.rep("x", ${MAX_LIBRARY_BYTES + 1})))`,
      js: `try { base64.encode("x".repeat(${MAX_LIBRARY_BYTES + 1})) } catch (e) { print(false, e.message) }`,
    },
    expect: { body: `false\tbase64.encode: input over ${MAX_LIBRARY_BYTES} bytes\n` },
  },
  {
    name: 'the library tables are read-only: an error at the line, and the next request finds them intact',
    script: { lua: 'print("a")\nbase64.encode = nil', js: 'print("a");\nbase64.encode = null' },
    expect: { error: { kind: 'runtime', message: perEngine({ lua: /read-only table 'base64'/, js: /^TypeError: / }), line: 2 } },
    then: [
      {
        script: {
          lua: 'print(pcall(function() crypto.x = 1 end), pcall(function() time.now = nil end), pcall(function() url.y = 1 end), pcall(function() json.null = 1 end))\nprint(type(base64.encode), crypto.x, type(time.now))',
          js: 'for (const f of [() => { crypto.x = 1 }, () => { time.now = null }, () => { url.y = 1 }]) { try { f(); print("changed") } catch (e) { print(e.name) } }\nprint(typeof base64.encode, crypto.x, typeof time.now)',
        },
        expect: {
          body: perEngine({
            lua: /^false\tfalse\tfalse\tfalse\t.*read-only table 'json'\nfunction\tnil\tfunction\n$/,
            js: /^TypeError\nTypeError\nTypeError\nfunction\tundefined\tfunction\n$/,
          }),
        },
      },
    ],
  },
];

const cases = [...json, ...codecs, ...crypto, ...time, ...shape];

for (const entry of ENGINES) {
  for (const c of cases) test(`${entry.id}: ${c.name}`, caseOptions(entry, c), () => runCase(entry, c));
}
