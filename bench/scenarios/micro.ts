/**
 * The micro scenario: in one process and without sockets, what the parts of a request cost.
 *
 * - Codec: a typical nginx request (BEGIN_REQUEST, ~20 params, empty PARAMS, empty STDIN) in
 *   one chunk and in two, through the record parser and the params handling the connection
 *   does (scan, lazy params, the two lookups every request makes); a typical response (status,
 *   Content-Type, "123") through the real Response, framed into one buffer; 64 KiB bodies both
 *   ways. Records/s and requests/s.
 * - Engines: hello in Lua (fengari) and JavaScript (QuickJS), cached and parsed per request,
 *   next to the host alone; the ~2,000-line script (bench/lib/big-script.ts) cached and parsed:
 *   what the script cache saves. Each request is served as runtime/handlers/pipeline.ts serves one
 *   (bench/lib/script-host.ts).
 * - Engines side by side: lua54, fengari and JS, cached, on hello, the render scenario's page
 *   (bench/peers/render.lua / .js) and a 20,000-step arithmetic loop: the cost of script work
 *   per engine, where hello is mostly the host's.
 * - Script store: a hit inside the stat interval, a hit that re-stats the file (interval 0), and
 *   a miss that reads and compiles (two files, room for one).
 *
 * Every case is checked once before timing, then timed in batches after an untimed warm-up; the
 * report gives the median time per operation over batches and the batches' range.
 *
 *   node dist/bench/scenarios/micro.js      # this scenario alone (BENCH_QUICK=1: a smoke run)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import releaseSyncImport from '@jitl/quickjs-wasmfile-release-sync';
import { newQuickJSWASMModuleFromVariant, type QuickJSSyncVariant } from 'quickjs-emscripten-core';
import { ScriptStore } from '../../runtime/engines/script-store.js';
import type { ScriptEngine } from '../../runtime/engines/engine.js';
import { createJsEngine } from '../../runtime/engines/js.js';
import { LuaEngine } from '../../runtime/engines/lua.js';
import { createLuaEngine } from '../../runtime/engines/lua-engines.js';
import { FCGI_BEGIN_REQUEST, FCGI_PARAMS, FCGI_RESPONDER, FCGI_STDIN, FCGI_STDOUT } from '../../runtime/fastcgi/constants.js';
import { scanPairs } from '../../runtime/fastcgi/pairs.js';
import { encodeRecord, RecordParser, writeStream, framedLength } from '../../runtime/fastcgi/records.js';
import { Request } from '../../runtime/fastcgi/server/request.js';
import { Response } from '../../runtime/fastcgi/server/response.js';
import { BIG_OUTPUT, bigJsScript, bigLuaScript } from '../lib/big-script.js';
import { machine, type Context } from '../lib/harness.js';
import { BIG_MODULE_NAME, bigModule } from '../lib/big-module.js';
import type { ModuleSlots } from '../../runtime/engines/modules.js';
import { COMPUTE_SOURCE, COMPUTE_STEPS, computeOutput, peerScript, renderPage, RENDER_ROWS } from '../lib/render.js';
import { median } from '../lib/report.js';
import type { Scenario, ScenarioResult } from '../lib/scenario.js';
import { nginxParams, serveOnce, Sink } from '../lib/script-host.js';

/** Options of {@link runMicro}. */
export interface MicroOptions {
  /** Far fewer iterations: a smoke run of a few seconds. */
  quick: boolean;
  /** Called with a short label as each case starts (the progress line). */
  step: (label: string) => void;
}

/** One timed case: per-operation times of each batch, in ns. */
interface Timing {
  name: string;
  ops: number;
  perOpNs: number[];
  /** Extra cells (records per op, bytes per op...). */
  note?: string;
}

const noFlow = { pauseFor(): void {}, resumeFor(): void {} };

/** Times `op` in `batches` batches of `perBatch` calls after a warm-up of a quarter as many. */
async function time(name: string, perBatch: number, batches: number, op: () => void | Promise<void>, note?: string): Promise<Timing> {
  const warm = Math.max(1, Math.ceil((perBatch * batches) / 4));
  for (let i = 0; i < warm; i++) await op();
  const perOpNs: number[] = [];
  for (let b = 0; b < batches; b++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < perBatch; i++) await op();
    perOpNs.push(Number(process.hrtime.bigint() - t0) / perBatch);
  }
  return { name, ops: perBatch * batches, perOpNs, note };
}

/** Synchronous variant of {@link time}: no await per call, so a µs-scale op is not dwarfed by a microtask. */
function timeSync(name: string, perBatch: number, batches: number, op: () => void, note?: string): Timing {
  const warm = Math.max(1, Math.ceil((perBatch * batches) / 4));
  for (let i = 0; i < warm; i++) op();
  const perOpNs: number[] = [];
  for (let b = 0; b < batches; b++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < perBatch; i++) op();
    perOpNs.push(Number(process.hrtime.bigint() - t0) / perBatch);
  }
  return { name, ops: perBatch * batches, perOpNs, note };
}

/** A duration in ns as "123 ns", "4.56 µs" or "7.89 ms". */
export function duration(ns: number): string {
  if (!Number.isFinite(ns)) return '—';
  if (ns < 1000) return `${ns.toFixed(0)} ns`;
  if (ns < 1e6) return `${(ns / 1000).toFixed(ns < 1e4 ? 2 : 1)} µs`;
  return `${(ns / 1e6).toFixed(2)} ms`;
}

/** Operations per second for a per-operation time in ns, rounded to what the measurement supports. */
export function perSecond(ns: number): string {
  if (!Number.isFinite(ns) || ns <= 0) return '—';
  const rate = 1e9 / ns;
  return Number(rate.toPrecision(3)).toLocaleString('en-US');
}

function table(timings: readonly Timing[], noteHeading?: string): string[] {
  const lines = [
    `| Case | per op (median) | per op (min–max) | ops/s |${noteHeading !== undefined ? ` ${noteHeading} |` : ''}`,
    `|---|---:|---:|---:|${noteHeading !== undefined ? '---|' : ''}`,
  ];
  for (const t of timings) {
    const med = median(t.perOpNs);
    lines.push(
      `| ${t.name} | ${duration(med)} | ${duration(Math.min(...t.perOpNs))}–${duration(Math.max(...t.perOpNs))} | ${perSecond(med)} |` +
        (noteHeading !== undefined ? ` ${t.note ?? ''} |` : ''),
    );
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------
// Codec

/** A typical nginx GET as one buffer: BEGIN_REQUEST (keep-conn), PARAMS, empty PARAMS, empty STDIN. */
export function typicalRequest(): Buffer {
  const begin = Buffer.alloc(8);
  begin.writeUInt16BE(FCGI_RESPONDER, 0);
  begin[2] = 1;
  return Buffer.concat([
    encodeRecord(FCGI_BEGIN_REQUEST, 1, begin),
    encodeRecord(FCGI_PARAMS, 1, nginxParams('/srv/www/hello.lua', '/srv/www')),
    encodeRecord(FCGI_PARAMS, 1),
    encodeRecord(FCGI_STDIN, 1),
  ]);
}

/**
 * The connection's input work for one request, without the socket: records parsed, the PARAMS
 * block gathered, scanned and handed to a Request, the two params every request reads looked
 * up, STDIN ended. Returns a function that feeds chunks and counts requests and records.
 */
export function requestDecoder(): { push(chunk: Buffer): void; requests: number; records: number; lastScript: string | undefined } {
  const state = { requests: 0, records: 0, lastScript: undefined as string | undefined };
  let request: Request | null = null;
  let block: Buffer[] = [];
  const parser = new RecordParser((type, id, buf, start, end) => {
    state.records++;
    if (type === FCGI_BEGIN_REQUEST) {
      request = new Request(id, 'RESPONDER', (buf[start + 2]! & 1) === 1, { id: 1, peer: undefined }, state.requests + 1, noFlow);
      block = [];
    } else if (type === FCGI_PARAMS && request !== null) {
      // The connection copies the PARAMS content out of the socket's chunk, as here.
      if (end > start) block.push(Buffer.from(buf.subarray(start, end)));
      else {
        const params = block.length === 1 ? block[0]! : Buffer.concat(block);
        if (scanPairs(params, 1000) !== null) throw new Error('malformed params');
        request.setParams(params);
        request.param('CONTENT_LENGTH');
        state.lastScript = request.param('SCRIPT_FILENAME');
      }
    } else if (type === FCGI_STDIN && request !== null && end === start) {
      request.stdin.end();
      state.requests++;
      request = null;
    }
  });
  return {
    push: (chunk) => {
      if (parser.push(chunk) !== null) throw new Error('parse error');
    },
    get requests() {
      return state.requests;
    },
    get records() {
      return state.records;
    },
    get lastScript() {
      return state.lastScript;
    },
  };
}

function codec(quick: boolean, step: (l: string) => void): string[] {
  // Sub-microsecond operations: batches of 20,000 are long enough (~20 ms) to time well.
  const n = quick ? 2_000 : 200_000;
  const batches = quick ? 3 : 10;
  const per = Math.round(n / batches);
  const req = typicalRequest();
  const half = Math.floor(req.length / 2);
  const [first, second] = [req.subarray(0, half), req.subarray(half)];
  const timings: Timing[] = [];

  // Check, then time: decoding.
  const d = requestDecoder();
  d.push(req);
  d.push(first);
  d.push(second);
  if (d.requests !== 2 || d.records !== 8 || d.lastScript !== '/srv/www/hello.lua') {
    throw new Error(`codec check: ${d.requests} requests, ${d.records} records, script ${String(d.lastScript)}`);
  }
  step('micro: codec decode');
  timings.push(timeSync('decode a typical nginx request (4 records, 21 params), one chunk', per, batches, () => d.push(req), `${req.length} bytes`));
  timings.push(
    timeSync('the same request split into two chunks', per, batches, () => {
      d.push(first);
      d.push(second);
    }, `${req.length} bytes`),
  );

  // Encoding: the real Response, framed into one buffer per response.
  const sink = new Sink();
  sink.kept = [];
  const respond = (): void => {
    const res = new Response(sink);
    res.setHeader('Content-Type', 'text/plain');
    res.end('123');
  };
  respond();
  const framed = Buffer.concat(sink.kept);
  sink.kept = null;
  if (!framed.includes('Content-Type: text/plain\r\n\r\n123') || framed.length % 8 !== 0) {
    throw new Error(`codec check: response ${JSON.stringify(framed.toString('latin1'))}`);
  }
  step('micro: codec encode');
  timings.push(timeSync('encode a typical response (headers + "123" + END_REQUEST)', per, batches, respond, `${framed.length} bytes`));

  // 64 KiB bodies: framing into STDOUT records and parsing them back.
  const body = Buffer.alloc(64 * 1024, 0x61);
  const out = Buffer.allocUnsafe(framedLength(body.length));
  const frame = (): number => writeStream(out, 0, FCGI_STDOUT, 1, [body], body.length);
  if (frame() !== out.length) throw new Error('codec check: framed length');
  let seen = 0;
  const parser = new RecordParser((_t, _id, _buf, start, end) => (seen += end - start));
  parser.push(out);
  if (seen !== body.length) throw new Error(`codec check: parsed ${seen} of ${body.length} body bytes`);
  const bigPer = Math.max(10, Math.round(per / 20));
  step('micro: codec 64 KiB');
  const enc = timeSync('frame a 64 KiB body as STDOUT records (copying once)', bigPer, batches, frame);
  const dec = timeSync('parse a framed 64 KiB body (content handed over as windows, not copied)', bigPer, batches, () => parser.push(out));
  enc.note = `${((body.length / median(enc.perOpNs)) * 1e9 / 1024 ** 3).toFixed(2)} GiB/s`;
  dec.note = '2 records; the parser reads headers only';
  timings.push(enc, dec);

  const decodeNs = median(timings[0]!.perOpNs);
  return [
    '## Codec',
    '',
    'The connection\'s input work without the socket (record parser, PARAMS gathered and scanned, `Request.setParams`, ' +
      'the `CONTENT_LENGTH` and `SCRIPT_FILENAME` lookups every request makes, STDIN ended) and the real `Response` framing ' +
      'a reply into one buffer. Params are decoded lazily: a script that reads them pays for that in its engine time.',
    '',
    ...table(timings, 'size / rate'),
    '',
    `Decoding reads ${perSecond(decodeNs / 4)} records/s (${perSecond(decodeNs)} requests/s) on one core.`,
    '',
  ];
}

// ---------------------------------------------------------------------------------------------
// Engines

interface EngineCase {
  name: string;
  engine: ScriptEngine | null;
  mode: 'host' | 'cached' | 'parse';
  source: string;
  file: string;
  expected: string;
  divisor: number;
}

/** The body of the framed CGI response: STDOUT contents after the header block. */
function bodyOf(framed: Buffer): string {
  const stdout: Buffer[] = [];
  for (let o = 0; o + 8 <= framed.length; ) {
    const length = framed.readUInt16BE(o + 4);
    if (framed[o + 1] === FCGI_STDOUT) stdout.push(framed.subarray(o + 8, o + 8 + length));
    o += 8 + length + framed[o + 6]!;
  }
  const cgi = Buffer.concat(stdout).toString('utf8');
  const end = cgi.indexOf('\r\n\r\n');
  return end < 0 ? cgi : cgi.slice(end + 4);
}

async function engines(quick: boolean, step: (l: string) => void): Promise<string[]> {
  const lua = new LuaEngine();
  const js = await createJsEngine();
  const root = '/srv/bench';
  const file = (n: string): string => path.join(root, n);
  try {
    const cases: EngineCase[] = [];
    for (const [engine, big, lang] of [
      [lua, bigLuaScript(), 'Lua'],
      [js, bigJsScript(), 'JS'],
    ] as const) {
      for (const mode of ['cached', 'parse'] as const) {
        cases.push({ name: `hello, ${lang}, ${mode === 'cached' ? 'cached' : 'parsed per request'}`, engine, mode, source: 'print("hello")', file: file(`hello${engine.extension}`), expected: 'hello\n', divisor: mode === 'parse' ? 4 : 1 });
      }
      for (const mode of ['cached', 'parse'] as const) {
        cases.push({ name: `${big.split('\n').length.toLocaleString('en-US')}-line app, ${lang}, ${mode === 'cached' ? 'cached' : 'parsed per request'}`, engine, mode, source: big, file: file(`app${engine.extension}`), expected: `${BIG_OUTPUT}\n`, divisor: mode === 'parse' ? 100 : 1 });
      }
    }
    // The host alone last, with everything warm: measured first it ran into the codec cases' garbage.
    cases.push({ name: 'host only (no script)', engine: null, mode: 'host', source: '', file: file('none.lua'), expected: '', divisor: 1 });
    const runs = quick ? 400 : 20_000;
    const batches = quick ? 2 : 10;
    const timings: Timing[] = [];
    for (const c of cases) {
      const params = nginxParams(c.file, root);
      const sink = new Sink();
      // Check the body once (compile + run), outside the timing.
      sink.kept = [];
      const probe = c.engine ? c.engine.compile(c.source, c.file) : null;
      try {
        await serveOnce(c.engine, probe, params, sink, c.file, root);
      } finally {
        probe?.dispose();
      }
      const body = bodyOf(Buffer.concat(sink.kept));
      if (body !== c.expected) throw new Error(`${c.name}: expected ${JSON.stringify(c.expected)}, got ${JSON.stringify(body.slice(0, 200))}`);
      sink.kept = null;
      step(`micro: ${c.name}`);
      const engine = c.engine;
      const cached = engine && c.mode === 'cached' ? engine.compile(c.source, c.file) : null;
      try {
        const compilesBefore = engine?.compiles ?? 0;
        const perBatch = Math.max(2, Math.round(runs / c.divisor / batches));
        const t = await time(c.name, perBatch, batches, async () => {
          if (engine && c.mode === 'parse') {
            const s = engine.compile(c.source, c.file);
            try {
              await serveOnce(engine, s, params, sink, c.file, root);
            } finally {
              s.dispose();
            }
          } else await serveOnce(engine, cached, params, sink, c.file, root);
        });
        // Cached runs must not compile; parse runs compile every time (warm-up included).
        const compiled = (engine?.compiles ?? 0) - compilesBefore;
        const expected = c.mode === 'parse' ? t.ops + Math.max(1, Math.ceil(t.ops / 4)) : 0;
        if (compiled !== expected) throw new Error(`${c.name}: ${compiled} compilations, expected ${expected}`);
        timings.push(t);
      } finally {
        cached?.dispose();
      }
    }
    const med = (name: string): number => median(timings.find((t) => t.name === name)?.perOpNs ?? []);
    const saves = cases
      .filter((c) => c.mode === 'cached')
      .map((c) => {
        const parseName = c.name.replace(/cached$/, 'parsed per request');
        return `${c.name.replace(/, cached$/, '')}: ${(med(parseName) / med(c.name)).toFixed(1)}x`;
      });
    return [
      '## Engines',
      '',
      `Engines: Lua ${lua.version}; JS ${js.version}. Each request as runtime/handlers/pipeline.ts serves one: a fresh Request with ` +
        '21 nginx params, a Response whose channel drops the bytes, ScriptHost start/run/finish. "Parsed per request" ' +
        'compiles, runs and disposes the script every time (no script cache).',
      '',
      // The host-only baseline first, as the row every other one contains.
      ...table([timings[timings.length - 1]!, ...timings.slice(0, -1)]),
      '',
      `What the script cache saves (parsed per request / cached): ${saves.join('; ')}. A cached run still executes the ` +
        "script's top level with fresh globals; for the app that is defining its modules again and the request code's real work.",
      '',
    ];
  } finally {
    js.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Engines side by side

/** One workload of {@link perEngine}: its source per language and what it prints. */
interface Workload {
  name: string;
  lua: string;
  js: string;
  expected: string;
  /** The bare QuickJS floor's source when it is not `js` (a module inlined: bare has no require). */
  bare?: string;
  /** A module the scripts require (as BIG_MODULE_NAME), in each language. */
  modules?: { lua: string; js: string };
}

/**
 * Calls `op` until `minMs` have passed (at least twice) and returns its mean time in ns: a first
 * estimate, so that every case gets batches of about the same length, whether it costs 3 µs
 * (hello) or 5 ms (the render on fengari).
 */
async function estimateNs(op: () => Promise<void>, minMs: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  let n = 0;
  while (n < 2 || Number(process.hrtime.bigint() - t0) < minMs * 1e6) {
    await op();
    n++;
  }
  return Number(process.hrtime.bigint() - t0) / n;
}

/**
 * The floor under the JS column: the same script in a bare QuickJS context of the same build,
 * with no sandbox, no prelude, no host and no limits (print appends to a string the call
 * returns). What the JS engine costs beyond this is Lodestone's; the rest is QuickJS's own speed.
 */
async function bareQuickJs(): Promise<{ prepare(source: string, expected: string): () => void; close(): void }> {
  // The package's types describe its CommonJS build; Node's ESM import gives the variant itself.
  const variant = (releaseSyncImport as unknown as { default?: QuickJSSyncVariant }).default ?? (releaseSyncImport as unknown as QuickJSSyncVariant);
  const runtime = (await newQuickJSWASMModuleFromVariant(variant)).newRuntime();
  const ctx = runtime.newContext();
  const fns: Array<{ dispose(): void }> = [];
  return {
    prepare(source, expected) {
      const fn = ctx.unwrapResult(ctx.evalCode(`(function () { let out = ''; const print = (...a) => { out += a.join('\\t') + '\\n'; };\n${source}\nreturn out; })`));
      fns.push(fn);
      const op = (): string => {
        const result = ctx.unwrapResult(ctx.callFunction(fn, ctx.undefined));
        const text = ctx.getString(result);
        result.dispose();
        return text;
      };
      const got = op();
      if (got !== expected) throw new Error(`bare QuickJS: expected ${JSON.stringify(expected.slice(0, 200))}, got ${JSON.stringify(got.slice(0, 200))}`);
      return () => void op();
    },
    close() {
      for (const fn of fns) fn.dispose();
      ctx.dispose();
      runtime.dispose();
    },
  };
}

async function perEngine(quick: boolean, step: (l: string) => void): Promise<string[]> {
  const root = '/srv/bench';
  const js = await createJsEngine();
  const engines: Array<{ label: string; engine: ScriptEngine; lang: 'lua' | 'js' }> = [
    { label: 'Lua 5.4 (lua54)', engine: await createLuaEngine('lua54'), lang: 'lua' },
    { label: 'Lua 5.3 (fengari)', engine: await createLuaEngine('fengari'), lang: 'lua' },
    { label: 'JS (QuickJS)', engine: js, lang: 'js' },
  ];
  const big = bigModule();
  const workloads: Workload[] = [
    { name: 'hello', lua: 'print("hello")', js: 'print("hello")', expected: 'hello\n' },
    {
      name: `hello + require of a ${big.lines.toLocaleString('en-US')}-line module`,
      lua: `local util = require("${BIG_MODULE_NAME}")\nprint("hello")`,
      js: `const util = require("${BIG_MODULE_NAME}");\nprint("hello")`,
      bare: `const module = { exports: {} };\n(function (module, exports) {\n${big.js}})(module, module.exports);\nprint("hello")`,
      expected: 'hello\n',
      modules: { lua: big.lua, js: big.js },
    },
    {
      name: `that module's top level, as a script`,
      lua: `${big.lua.replace(/return M\n$/, '')}print("hello")`,
      js: `const module = { exports: {} };\n${big.js}print("hello")`,
      expected: 'hello\n',
    },
    { name: `render: ${RENDER_ROWS}-row table (bench/peers/render.*)`, lua: peerScript('render.lua'), js: peerScript('render.js'), expected: renderPage() },
    { name: `compute: ${COMPUTE_STEPS.toLocaleString('en-US')}-step arithmetic loop`, lua: COMPUTE_SOURCE.lua, js: COMPUTE_SOURCE.js, expected: computeOutput() },
  ];
  // Batches of ~50 ms (~5 ms quick): long against the clock, short against drift.
  const batchMs = quick ? 5 : 50;
  const batches = quick ? 2 : 10;
  const cells = new Map<string, Timing>();
  const bare = await bareQuickJs();
  const floors = new Map<string, Timing>();
  try {
    for (const w of workloads) {
      step(`micro: ${w.name}, bare QuickJS`);
      const op = bare.prepare(w.bare ?? w.js, w.expected);
      const perOp = await estimateNs(() => Promise.resolve(op()), batchMs);
      floors.set(w.name, timeSync(`${w.name}, bare QuickJS`, Math.max(2, Math.round((batchMs * 1e6) / perOp)), batches, op));
      for (const e of engines) {
        const name = `${w.name}, ${e.label}`;
        const file = path.join(root, `${w.name.split(':')[0]}${e.engine.extension}`);
        const params = nginxParams(file, root);
        const sink = new Sink();
        const script = e.engine.compile(w[e.lang], file);
        const modules: ModuleSlots | null = w.modules
          ? new Map([[BIG_MODULE_NAME, { script: e.engine.compile(w.modules[e.lang], path.join(root, `lib/big${e.engine.extension}`), 'module'), file: 'lib' }]])
          : null;
        try {
          // Check the body once, outside the timing: a fast wrong answer is no result.
          sink.kept = [];
          await serveOnce(e.engine, script, params, sink, file, root, modules);
          const body = bodyOf(Buffer.concat(sink.kept));
          if (body !== w.expected) throw new Error(`${name}: expected ${JSON.stringify(w.expected.slice(0, 200))}, got ${JSON.stringify(body.slice(0, 200))}`);
          sink.kept = null;
          step(`micro: ${name}`);
          const op = (): Promise<void> => serveOnce(e.engine, script, params, sink, file, root, modules);
          const perBatch = Math.max(2, Math.round((batchMs * 1e6) / (await estimateNs(op, batchMs))));
          const compiles = e.engine.compiles;
          cells.set(name, await time(name, perBatch, batches, op));
          if (e.engine.compiles !== compiles) throw new Error(`${name}: compiled during the timing`);
        } finally {
          script.dispose();
          for (const slot of modules?.values() ?? []) slot.script?.dispose();
        }
      }
    }
  } finally {
    js.close();
    bare.close();
  }
  const med = (w: Workload, label: string): number => median(cells.get(`${w.name}, ${label}`)?.perOpNs ?? []);
  const [l54, feng, jsLabel] = engines.map((e) => e.label) as [string, string, string];
  const lines = [
    `| Workload | ${engines.map((e) => `${e.label} per request (median, min–max)`).join(' | ')} | bare QuickJS (JS floor) | fengari / lua54 | JS / lua54 | JS / bare QuickJS |`,
    `|---|${'---:|'.repeat(engines.length + 4)}`,
  ];
  const range = (t: Timing): string => `${duration(median(t.perOpNs))} (${duration(Math.min(...t.perOpNs))}–${duration(Math.max(...t.perOpNs))})`;
  for (const w of workloads) {
    const floor = floors.get(w.name)!;
    lines.push(
      `| ${w.name} | ${engines.map((e) => range(cells.get(`${w.name}, ${e.label}`)!)).join(' | ')} | ${range(floor)} | ` +
        `${(med(w, feng) / med(w, l54)).toFixed(1)}x | ${(med(w, jsLabel) / med(w, l54)).toFixed(1)}x | ${(med(w, jsLabel) / median(floor.perOpNs)).toFixed(1)}x |`,
    );
  }
  return [
    '## Engines side by side',
    '',
    `The same work on each engine, cached, served as in "Engines" (host included): ${engines.map((e) => `${e.label}: ${e.engine.version}`).join('; ')}. ` +
      `The render is the render scenario's page (${Buffer.byteLength(renderPage()).toLocaleString('en-US')} bytes, checked), ` +
      'the compute loop integer arithmetic only. Bare QuickJS: the JS script called as a function in a plain context of the same QuickJS build ' +
      '(no sandbox, prelude, host or limits; print appends to a string): what QuickJS itself costs, the floor under the JS column. ' +
      'Ratios: times of the median batch.',
    '',
    ...lines,
    '',
  ];
}

// ---------------------------------------------------------------------------------------------
// Script store

async function store(quick: boolean, step: (l: string) => void): Promise<string[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lodestone-micro-store-'));
  const lua = new LuaEngine();
  const enginesByExt = new Map<string, ScriptEngine>([['.lua', lua]]);
  const a = path.join(dir, 'a.lua');
  const b = path.join(dir, 'b.lua');
  fs.writeFileSync(a, 'print("a")\n');
  fs.writeFileSync(b, 'print("b")\n');
  const base = { root: dir, engines: enginesByExt, maxBytes: 64 << 20, cacheDir: null };
  const n = quick ? 400 : 20_000;
  const batches = quick ? 2 : 10;
  // The hits cost well under a microsecond: ten times the runs, so that a batch lasts ~50 ms.
  const hits = n * 10;
  const lookup = async (s: ScriptStore, file: string): Promise<void> => {
    const found = await s.get(file);
    if (found.kind !== 'script') throw new Error(`store: ${file}: ${found.kind}`);
    found.lease.release();
  };
  try {
    const timings: Timing[] = [];
    const within = new ScriptStore({ ...base, statIntervalMs: 60_000, maxEntries: 100 });
    await lookup(within, a);
    step('micro: script store');
    // The pipeline's common case is synchronous: peek() answers without a promise.
    timings.push(
      timeSync('hit inside the stat interval (`peek`, synchronous)', Math.round(hits / batches), batches, () => {
        const found = within.peek(a);
        if (found?.kind !== 'script') throw new Error('store: peek missed');
        found.lease.release();
      }),
    );
    timings.push(await time('hit inside the stat interval (`get`, awaited)', Math.round(hits / batches), batches, () => lookup(within, a)));
    const restat = new ScriptStore({ ...base, statIntervalMs: 0, maxEntries: 100 });
    await lookup(restat, a);
    timings.push(await time('hit that re-stats the file (stat interval 0: realpath + stat on the pool)', Math.max(2, Math.round(n / 4 / batches)), batches, () => lookup(restat, a)));
    const compiles = lua.compiles;
    const tiny = new ScriptStore({ ...base, statIntervalMs: 60_000, maxEntries: 1 });
    let flip = false;
    const miss = await time('miss: read and compile (two files, room for one)', Math.max(2, Math.round(n / 20 / batches)), batches, () => {
      flip = !flip;
      return lookup(tiny, flip ? a : b);
    });
    if (lua.compiles - compiles < miss.ops) throw new Error(`store: ${lua.compiles - compiles} compiles for ${miss.ops} misses`);
    timings.push(miss);
    return [
      '## Script store',
      '',
      '`runtime/engines/script-store.ts` over real files in a temp dir, a one-line Lua script, leases released each time. A hit ' +
        'inside the stat interval is a map lookup and a clock read; the pipeline uses `peek` and awaits `get` only when ' +
        'the disk must be asked.',
      '',
      ...table(timings),
      '',
    ];
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs every micro-benchmark; resolves to the markdown report. Throws if a check fails. */
export async function runMicro(options: MicroOptions): Promise<string> {
  const m = machine();
  const sections = [
    '# micro: the parts of a request, in one process',
    '',
    `- Date: ${m.date}; machine: ${m.cpuModel}, ${m.cpus} CPUs, Linux ${m.kernel}; Node ${m.node}; load average at the start ` +
      `${m.loadavg.map((n) => n.toFixed(2)).join(', ')} (1/5/15 min): nothing here flags other load, so read the ranges`,
    `- Method: each case checked once, warmed up, then timed in ${options.quick ? 'a few (BENCH_QUICK)' : '10'} batches; ` +
      'per-operation median over batches and the batches\' range; one core, nothing else running in this process',
    '',
    ...codec(options.quick, options.step),
    ...(await engines(options.quick, options.step)),
    ...(await perEngine(options.quick, options.step)),
    ...(await store(options.quick, options.step)),
  ];
  return sections.join('\n');
}

export const micro: Scenario = {
  name: 'micro',
  summary: 'in one process: FastCGI codec records/s, engines cached vs parsed, lua54/fengari/JS on hello, render, compute, script store',
  needs: [],
  run: async (ctx: Context): Promise<ScenarioResult> => ({
    markdown: await runMicro({ quick: process.env.BENCH_QUICK === '1', step: (label) => ctx.progress.status(label) }),
    valid: true,
  }),
};

// Standalone: node dist/bench/scenarios/micro.js
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.stdout.write(await runMicro({ quick: process.env.BENCH_QUICK === '1', step: (label) => process.stderr.write(`[bench] ${label}\n`) }));
}
