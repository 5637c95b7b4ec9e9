/**
 * Engine micro-benchmarks, in one process and without sockets: what a script request costs
 * Lodestone beyond the FastCGI plumbing that bench/e2e.ts measures end to end.
 *
 * - Hello (`print("hello")`) in Lua (fengari) and JavaScript (QuickJS): the per-request cost of
 *   running a cached compiled script, host set-up included, next to the host alone.
 * - An application-sized script (~2,000 generated lines, bench/lib/big-script.ts) in both
 *   languages: cached (compiled once, run every time) against parse-per-request (compiled,
 *   run and disposed every time), and their ratio: what the script cache saves.
 *
 * Each request is served the way runtime/pipeline.ts serves one (bench/lib/script-host.ts): a
 * fresh Request with a typical nginx param set, a Response whose channel drops the bytes, a
 * ScriptHost started and finished around `engine.run`. Before timing, each case is checked
 * once (the body it sends, and `engine.compiles`: cached runs must not compile). A compilation
 * of the known-good source that fails anyway is an engine bug: it is retried (up to 3 times),
 * counted and listed under "Engine failures" in the report, so the timings still hold.
 *
 *   npm run bench:engines
 *   BENCH_RUNS=2000 node dist/bench/engines.js      # a quick look
 *
 * Environment: BENCH_RUNS (runs of each cached case, default 20000), BENCH_BATCHES (the runs
 * are timed in this many batches; reported: median us/run over batches, and min–max; default
 * 10). Parse-per-request cases do fewer runs (a quarter for hello, 1/100 for the big scripts,
 * at least 2 per batch), so that the slow cases do not take minutes. Warm-up: a quarter of each
 * case's runs, untimed.
 *
 * Prints a markdown report on stdout and writes it to bench/results/engines-latest.md. Exit
 * code: 0 when done, 1 when a check failed, 2 on bad settings.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ScriptError, type CompiledScript, type ScriptEngine } from '../runtime/engines/engine.js';
import { createJsEngine } from '../runtime/engines/js.js';
import { LuaEngine } from '../runtime/engines/lua.js';
import { BIG_OUTPUT, bigJsScript, bigLuaScript } from './lib/big-script.js';
import { idleLoad } from './lib/cpu.js';
import { median } from './lib/report.js';
import { nginxParams, serveOnce, Sink } from './lib/script-host.js';
import { SettingsError, envInt } from './lib/settings.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// Scripts are compiled from memory: the path is for error messages and request params only.
const DOCUMENT_ROOT = '/srv/bench';

type Mode = 'host' | 'cached' | 'parse';

interface Case {
  script: string;
  engine: ScriptEngine | null;
  mode: Mode;
  source: string;
  file: string;
  /** The body the script must send. */
  expected: string;
  /** Lines of source, for the report. */
  lines: number;
  /** Divides BENCH_RUNS for this case (parse-per-request is slower). */
  divisor: number;
}

interface Result {
  c: Case;
  runs: number;
  /** us/run of each batch. */
  batches: number[];
  /** Compilations of a valid source that failed (and were retried), warm-up included. */
  failedCompiles: Map<string, number>;
  /** Compilations done, warm-up included. */
  compilesDone: number;
}

/** Retries of one compilation before the case gives up. */
const COMPILE_RETRIES = 3;

/** The body of the CGI response in framed FastCGI bytes: STDOUT contents after the header block. */
function bodyOf(framed: Buffer): string {
  const stdout: Buffer[] = [];
  for (let o = 0; o + 8 <= framed.length; ) {
    const type = framed[o + 1]!;
    const length = framed.readUInt16BE(o + 4);
    const padding = framed[o + 6]!;
    if (type === 6) stdout.push(framed.subarray(o + 8, o + 8 + length));
    o += 8 + length + padding;
  }
  const cgi = Buffer.concat(stdout).toString('utf8');
  const end = cgi.indexOf('\r\n\r\n');
  return end < 0 ? cgi : cgi.slice(end + 4);
}

/** Runs a case once (compile + run) outside the timing and checks what it sent. */
async function check(c: Case): Promise<void> {
  const sink = new Sink();
  sink.kept = [];
  const params = nginxParams(c.file, DOCUMENT_ROOT);
  const script = c.engine ? c.engine.compile(c.source, c.file) : null;
  try {
    await serveOnce(c.engine, script, params, sink, c.file, DOCUMENT_ROOT);
  } finally {
    script?.dispose();
  }
  const body = bodyOf(Buffer.concat(sink.kept));
  if (body !== c.expected) {
    throw new Error(`${label(c)}: expected body ${JSON.stringify(c.expected)}, got ${JSON.stringify(body.slice(0, 300))}`);
  }
}

/** Warm-up, then `batches` timed batches of `perBatch` requests. */
async function measure(c: Case, perBatch: number, batches: number): Promise<Result> {
  const sink = new Sink();
  const params = nginxParams(c.file, DOCUMENT_ROOT);
  const engine = c.engine;
  const cached: CompiledScript | null = engine && c.mode === 'cached' ? engine.compile(c.source, c.file) : null;
  const failedCompiles = new Map<string, number>();
  let retries = 0;
  // The source is known good (check() compiled it): a failure here is the engine's, counted
  // and reported rather than ending the benchmark.
  const compile = (e: ScriptEngine): CompiledScript => {
    for (let attempt = 0; ; attempt++) {
      try {
        return e.compile(c.source, c.file);
      } catch (err) {
        if (!(err instanceof ScriptError) || attempt >= COMPILE_RETRIES) throw err;
        failedCompiles.set(err.message, (failedCompiles.get(err.message) ?? 0) + 1);
        retries++;
      }
    }
  };
  const compilesAtStart = engine?.compiles ?? 0;
  const once = async (): Promise<void> => {
    if (engine && c.mode === 'parse') {
      const script = compile(engine);
      try {
        await serveOnce(engine, script, params, sink, c.file, DOCUMENT_ROOT);
      } finally {
        script.dispose();
      }
    } else {
      await serveOnce(engine, cached, params, sink, c.file, DOCUMENT_ROOT);
    }
  };
  try {
    const warmup = Math.max(1, Math.ceil((perBatch * batches) / 4));
    for (let i = 0; i < warmup; i++) await once();
    const compilesBefore = engine?.compiles ?? 0;
    const retriesBefore = retries;
    const times: number[] = [];
    for (let b = 0; b < batches; b++) {
      const t0 = performance.now();
      for (let i = 0; i < perBatch; i++) await once();
      times.push(((performance.now() - t0) * 1000) / perBatch);
    }
    const compiled = (engine?.compiles ?? 0) - compilesBefore;
    const expectedCompiles = c.mode === 'parse' ? perBatch * batches + retries - retriesBefore : 0;
    if (compiled !== expectedCompiles) {
      throw new Error(`${label(c)}: ${compiled} compilations in ${perBatch * batches} runs, expected ${expectedCompiles}`);
    }
    return { c, runs: perBatch * batches, batches: times, failedCompiles, compilesDone: (engine?.compiles ?? 0) - compilesAtStart };
  } finally {
    cached?.dispose();
  }
}

const MODE_LABEL: Record<Mode, string> = {
  host: 'host only (no script)',
  cached: 'cached',
  parse: 'parse per request',
};

const language = (c: Case): string => (c.engine?.name === 'lua' ? 'Lua' : c.engine?.name === 'js' ? 'JS' : '—');

function label(c: Case): string {
  return c.engine ? `${c.script}, ${language(c)}, ${MODE_LABEL[c.mode]}` : MODE_LABEL[c.mode];
}

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1]) return m[1].trim();
  } catch {
    // not Linux
  }
  return os.cpus()[0]?.model ?? 'unknown';
}

const us = (n: number): string => (n < 10 ? n.toFixed(2) : n < 1000 ? n.toFixed(1) : Math.round(n).toLocaleString('en-US'));
const spread = (values: readonly number[]): string => `${us(Math.min(...values))}–${us(Math.max(...values))}`;
const lineCount = (s: string): number => s.split('\n').length - (s.endsWith('\n') ? 1 : 0);

function render(
  h: { runs: number; batches: number; engines: string[]; loadBefore: number; loadavg: string },
  results: readonly Result[],
): string {
  const lines: string[] = [];
  const med = (r: Result): number => median(r.batches);
  lines.push('# Lodestone engine micro-benchmarks', '');
  lines.push(`- Date: ${new Date().toISOString()}`);
  lines.push(`- Node: ${process.version}; CPU: ${cpuModel()} (${os.cpus().length} CPUs)`);
  lines.push(
    `- Other load before the run: ${Math.round(h.loadBefore)}% of one CPU (all CPUs summed); loadavg at the end ${h.loadavg}` +
      (h.loadBefore > 10 ? ' — **NOISY**: the machine was busy, expect slower and more scattered numbers' : ''),
  );
  lines.push(`- Engines: ${h.engines.join('; ')}`);
  lines.push(
    `- Method: one process, requests served one after another as runtime/pipeline.ts serves them (fresh Request with ` +
      `21 nginx params, Response to a channel that drops the bytes, ScriptHost start/run/finish); ` +
      `BENCH_RUNS=${h.runs} runs per cached case in ${h.batches} timed batches after an untimed warm-up of a quarter as many; ` +
      `us/run is the median over batches, with the batches' min–max`,
  );
  lines.push('- Parse per request: `engine.compile` + run + `dispose` for every request (no script cache)', '');
  lines.push('| Case | Lines | Runs | us/run (median) | us/run (min–max) | req/s on one core |');
  lines.push('|---|---:|---:|---:|---:|---:|');
  for (const r of results) {
    lines.push(
      `| ${label(r.c)} | ${r.c.engine ? r.c.lines.toLocaleString('en-US') : '—'} | ${r.runs.toLocaleString('en-US')} | ${us(med(r))} | ${spread(r.batches)} | ` +
        `${Math.round(1e6 / med(r)).toLocaleString('en-US')} |`,
    );
  }
  const base = results.find((r) => r.c.mode === 'host');
  lines.push('');
  lines.push('What the script cache saves (parse-per-request us/run ÷ cached us/run; the compile alone is the difference):', '');
  lines.push('| Script | Engine | cached us/run | parse per request us/run | compile (difference) | parse / cached |');
  lines.push('|---|---|---:|---:|---:|---:|');
  for (const cached of results.filter((r) => r.c.mode === 'cached')) {
    const parse = results.find((r) => r.c.mode === 'parse' && r.c.script === cached.c.script && r.c.engine === cached.c.engine);
    if (!parse) continue;
    const n = cached.c.lines;
    lines.push(
      `| ${cached.c.script} (${n.toLocaleString('en-US')} line${n === 1 ? '' : 's'}) | ${language(cached.c)} | ${us(med(cached))} | ` +
        `${us(med(parse))} | ${us(med(parse) - med(cached))} | **${(med(parse) / med(cached)).toFixed(1)}×** |`,
    );
  }
  lines.push('');
  lines.push(
    'A cached request still runs the script\'s top level, with fresh globals: for the app scripts that defines every ' +
      'module\'s functions, config tables and metatable classes again (a few hundred closures and table fields), then ' +
      'runs the request code, which does real work (filtering rows, counting words with gmatch, sorting keys with a ' +
      'comparator, string.format, gsub with a callback). Measured on the Lua app (Nov 2026): about a third of the cached ' +
      'cost is the definitions, two thirds the request code (render_1, the sort and format loop, alone a quarter), and ' +
      'the fresh globals and host a few us. The ratio is therefore compile cost over what the top level does per ' +
      'request: higher for scripts whose top level does less.',
  );
  if (base) {
    lines.push('');
    const hello = results.filter((r) => r.c.mode === 'cached' && r.c.script === 'hello');
    const parts = hello.map((r) => `${language(r.c)} ${us(med(r) - med(base))} us`);
    lines.push(
      `Engine share of a cached hello request (its us/run minus the host-only baseline of ${us(med(base))} us): ${parts.join(', ')}.`,
    );
  }
  const failures = results.filter((r) => r.failedCompiles.size > 0);
  if (failures.length > 0) {
    lines.push('');
    lines.push('**Engine failures**: compilations of a source that compiles fine failed (then retried, so the timings hold):', '');
    for (const r of failures) {
      for (const [message, n] of r.failedCompiles) {
        lines.push(`- ${label(r.c)}: ${n} of ${r.compilesDone.toLocaleString('en-US')} compilations: \`${message}\``);
      }
    }
  }
  lines.push('');
  return lines.join('\n');
}

async function main(): Promise<number> {
  let runs: number;
  let batches: number;
  try {
    runs = envInt('BENCH_RUNS', 20000, 1);
    batches = envInt('BENCH_BATCHES', 10, 1);
  } catch (err) {
    if (!(err instanceof SettingsError)) throw err;
    process.stderr.write(`bench: ${err.message}\n`);
    return 2;
  }
  // Measured before we start anything, so the header says what the machine was doing anyway.
  const loadBefore = await idleLoad(1000);
  const lua = new LuaEngine();
  const js = await createJsEngine();
  try {
    const bigLua = bigLuaScript();
    const bigJs = bigJsScript();
    const file = (name: string): string => path.join(DOCUMENT_ROOT, name);
    const cases: Case[] = [
      { script: 'host', engine: null, mode: 'host', source: '', file: file('none.lua'), expected: '', lines: 0, divisor: 1 },
    ];
    for (const [engine, big] of [
      [lua, bigLua],
      [js, bigJs],
    ] as const) {
      const ext = engine.extension;
      const hello = 'print("hello")';
      for (const mode of ['cached', 'parse'] as const) {
        cases.push({ script: 'hello', engine, mode, source: hello, file: file(`hello${ext}`), expected: 'hello\n', lines: 1, divisor: mode === 'parse' ? 4 : 1 });
      }
      for (const mode of ['cached', 'parse'] as const) {
        cases.push({
          script: 'app',
          engine,
          mode,
          source: big,
          file: file(`app${ext}`),
          expected: `${BIG_OUTPUT}\n`,
          lines: lineCount(big),
          divisor: mode === 'parse' ? 100 : 1,
        });
      }
    }

    for (const c of cases) await check(c);
    const results: Result[] = [];
    for (const c of cases) {
      const perBatch = Math.max(2, Math.round(runs / c.divisor / batches));
      process.stderr.write(`[bench] ${label(c)}: ${perBatch * batches} runs\n`);
      const r = await measure(c, perBatch, batches);
      for (const [message, count] of r.failedCompiles) {
        process.stderr.write(`bench: ${label(c)}: ${count} of ${r.compilesDone} compilations failed (retried): ${message}\n`);
      }
      results.push(r);
    }
    const report = render(
      {
        runs,
        batches,
        engines: [`Lua: ${lua.version}`, `JS: ${js.version}`],
        loadBefore,
        loadavg: fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
      },
      results,
    );
    process.stdout.write(report);
    const resultsDir = path.join(repoRoot, 'bench/results');
    fs.mkdirSync(resultsDir, { recursive: true });
    const out = path.join(resultsDir, 'engines-latest.md');
    fs.writeFileSync(out, report);
    process.stderr.write(`bench: wrote ${path.relative(process.cwd(), out) || 'engines-latest.md'}\n`);
    return 0;
  } finally {
    js.close();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
