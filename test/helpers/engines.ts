/**
 * The script engines every engine test runs against, and the runner of the conformance tables
 * (test/unit/engine-conformance-*.test.ts, engine-cache-api.test.ts).
 *
 * A {@link Case} is one behaviour of the script API, the sandbox or the limits: the script in
 * each engine's language (the same behaviour written in each), the request, and the outcome
 * expected. A test file runs every case against every engine:
 *
 *   for (const engine of ENGINES) for (const c of cases) test(`${engine.name}: ${c.name}`, caseOptions(engine, c), () => runCase(engine, c));
 *
 * so a new engine is proven by adding its line to ENGINES (and, since {@link Scripts} asks for
 * one per EngineName, its script to every case; one it cannot express says why with
 * {@link notWritable} and is reported as skipped with that reason, never dropped silently).
 * Requests are served through test/helpers/script-host.ts's `serve`, the one place that calls
 * the run API. One engine instance per entry serves all the cases of a test file, in order,
 * as one worker serves requests, and every case ends with a request that must still succeed.
 */
import assert from 'node:assert/strict';
import type { TestOptions } from 'node:test';
import { createContentCache, defaultContentCacheConfig, type ContentCache } from '../../runtime/content-cache/content-cache.js';
import type { EngineName, ScriptEngine, ScriptError, ScriptErrorKind } from '../../runtime/engines/engine.js';
import { noServices, type HostServices } from '../../runtime/engines/host.js';
import { createJsEngine } from '../../runtime/engines/js.js';
import { LuaEngine } from '../../runtime/engines/lua.js';
import { Lua54Engine } from '../../runtime/engines/lua54/engine.js';
import { Logger } from '../../runtime/log.js';
import { compileModules, serve, type Served, type ServeOptions, type TestHost } from './script-host.js';
import type { ModuleSlots } from '../../runtime/engines/modules.js';

/**
 * An engine under test: `name` is its language (which script of a case it runs), `id` the
 * engine itself: two Lua engines run the same Lua scripts. For fengari the id is its language.
 */
export interface EngineEntry {
  readonly name: EngineName;
  readonly id: EngineId;
  create(): ScriptEngine | Promise<ScriptEngine>;
}

/** Every engine implementation under test: 'lua' is fengari, 'lua54' PUC Lua 5.4 in wasm. */
export type EngineId = EngineName | 'lua54';

/** Every engine. A fourth one is one more line here. */
export const ENGINES: readonly EngineEntry[] = [
  { name: 'lua', id: 'lua', create: () => new LuaEngine() },
  { name: 'lua', id: 'lua54', create: () => new Lua54Engine() },
  { name: 'js', id: 'js', create: () => createJsEngine() },
];

/** The language of an engine id. */
export function languageOf(id: EngineId): EngineName {
  return id === 'lua54' ? 'lua' : id;
}

const instances = new Map<EngineId, Promise<ScriptEngine>>();

/** The engine of `entry` shared by the tests of this file (made on first use). */
export function instance(entry: EngineEntry): Promise<ScriptEngine> {
  let found = instances.get(entry.id);
  if (!found) {
    found = Promise.resolve(entry.create());
    instances.set(entry.id, found);
  }
  return found;
}

/** Why a case cannot be written in a language (the test is reported skipped with this reason). */
export interface NotWritable {
  readonly na: string;
}

/** Marks a case's script as not expressible in that language, saying why. */
export function notWritable(reason: string): NotWritable {
  return { na: reason };
}

/** A case's script in every engine's language. */
export type Scripts = { readonly [E in EngineName]: string | NotWritable };

/** The same source text in every language (where the languages agree, as on `print("x")`). */
export function everywhere(source: string): Scripts {
  return { lua: source, js: source };
}

/**
 * An expected value that differs by engine: the same behaviour, in each language's words; an
 * engine id's own entry (`lua54`: Lua 5.4's wording) wins over its language's.
 */
export class PerEngine<T> {
  constructor(readonly values: { readonly [E in EngineName]: T } & { readonly [E in EngineId]?: T }) {}
}

/** An expected value per engine, e.g. `perEngine({ lua: 'boom', js: 'Error: boom' })`. */
export function perEngine<T>(values: { readonly [E in EngineName]: T } & { readonly [E in EngineId]?: T }): PerEngine<T> {
  return new PerEngine(values);
}

/** An expected value computed from each engine's name (its script file, its extension). */
export function perEngineOf<T>(f: (engine: EngineName) => T): PerEngine<T> {
  return new PerEngine(Object.fromEntries(ENGINES.map((e) => [e.name, f(e.name)])) as { [E in EngineName]: T });
}

type Maybe<T> = T | PerEngine<T>;

function pick<T>(value: Maybe<T>, engine: EngineId): T {
  if (!(value instanceof PerEngine)) return value;
  const own = (value.values as Partial<Record<EngineId, T>>)[engine];
  return own !== undefined || Object.hasOwn(value.values, engine) ? (own as T) : value.values[languageOf(engine)];
}

/** The error a request is expected to fail with. */
export interface ExpectedError {
  readonly kind: Maybe<ScriptErrorKind>;
  /** The whole message, or a pattern it matches. */
  readonly message?: Maybe<string | RegExp>;
  /** The script line it names (null: none); checked as `file:line` on the script's own file. */
  readonly line?: Maybe<number | null>;
}

/** What a request must come to; a field left out is not checked. */
export interface Expect {
  /** The failure (any one of an array); absent or null: the request must succeed. */
  readonly error?: Maybe<ExpectedError | readonly ExpectedError[] | null>;
  readonly status?: Maybe<number>;
  /** The body: exact text, a pattern the text matches, or exact bytes. */
  readonly body?: Maybe<string | RegExp | Buffer>;
  /** Response headers by lower-case name; undefined: the header must be absent. */
  readonly headers?: Maybe<Readonly<Record<string, string | undefined>>>;
  /** What log() sent to FCGI_STDERR: exact text or a pattern. */
  readonly stderr?: Maybe<string | RegExp>;
  /** What the run resolved with (the status the script returned); write `returned: undefined` for none. */
  readonly returned?: Maybe<number | undefined>;
  /** The request ends within this many ms (wall time, compile included). */
  readonly withinMs?: number;
  /** The request takes at least this many ms. */
  readonly atLeastMs?: number;
}

/** What a case's hooks see: the engine it runs on, its cache, and a place to keep notes. */
export interface CaseContext {
  readonly engine: EngineName;
  /** The engine implementation (two run Lua). */
  readonly id: EngineId;
  /** The case's content cache (with `cache: true`), else null. */
  readonly cache: ContentCache | null;
  /** Free-form notes a `during` hook leaves for `check`. */
  readonly notes: Record<string, unknown>;
}

/** One request of a case. */
export interface Step {
  readonly script: Scripts;
  /** Params, body, limits, raw mode; the case's services are added. */
  readonly request?: Omit<ServeOptions, 'during' | 'services' | 'scriptFilename' | 'documentRoot' | 'modules'>;
  /** Modules the script may require, by name, in each language (see ServeOptions.modules). */
  readonly modules?: { readonly [E in EngineName]: Readonly<Record<string, string>> };
  /** Called once the run has started (see serve's `during`). */
  readonly during?: (t: TestHost, ctx: CaseContext) => void;
  /** Services beyond the case's cache (a FetchClient for fetch()); none unless given. */
  readonly services?: Partial<HostServices>;
  readonly expect: Expect;
  /** Checks beyond {@link Expect}. */
  readonly check?: (out: Served, ctx: CaseContext) => void | Promise<void>;
}

/** One behaviour, run against every engine. */
export interface Case extends Step {
  readonly name: string;
  /** Later requests on the same engine, in order: what the next request on the worker gets. */
  readonly then?: readonly Step[];
  /** Serve with a fresh in-memory content cache (ctx.cache), shared by the case's requests. */
  readonly cache?: boolean;
  /** Runs before the first request (e.g. to fill the cache). */
  readonly before?: (ctx: CaseContext) => void | Promise<void>;
  /**
   * A known defect of an engine, named: the case still runs there, reported as todo, and does
   * not fail the suite. Remove the entry with the fix.
   */
  readonly todo?: Partial<Record<EngineId, string>>;
  /**
   * An engine that cannot meet this case inside one process by design, with the mechanism that
   * covers it instead and where that is tested: reported as skipped with the reason.
   */
  readonly elsewhere?: Partial<Record<EngineId, string>>;
}

const lines: string[] = [];
const log = new Logger('debug', (line) => lines.push(line));

/** A fresh embedded (memory) content cache. */
export function memoryCache(): ContentCache {
  return createContentCache({ ...defaultContentCacheConfig, backend: 'memory' }, log);
}

/** The script every case ends with: the engine must still serve after whatever the case did. */
const STILL_SERVES = everywhere('print("still here")');

/** node:test options for case `c` on `entry`: skipped with the reason, or todo with the defect. */
export function caseOptions(entry: EngineEntry, c: { readonly script: Scripts; readonly todo?: Case['todo']; readonly elsewhere?: Case['elsewhere'] }): TestOptions {
  const script = c.script[entry.name];
  if (typeof script !== 'string') return { skip: `not writable in ${entry.name}: ${script.na}` };
  const elsewhere = c.elsewhere?.[entry.id];
  if (elsewhere) return { skip: `not in process on ${entry.id}: ${elsewhere}` };
  const todo = c.todo?.[entry.id];
  return todo ? { todo } : {};
}

/** Runs case `c` on the shared engine of `entry`: each request checked, then one that must succeed. */
export async function runCase(entry: EngineEntry, c: Case): Promise<void> {
  const engine = await instance(entry);
  const ctx: CaseContext = { engine: entry.name, id: entry.id, cache: c.cache ? memoryCache() : null, notes: {} };
  await c.before?.(ctx);
  // A step that names the same module sources as an earlier one gets the same compiled modules,
  // as the next request on a worker does (lua54 keeps a shared module per compiled chunk).
  const compiled = new Map<object, ModuleSlots>();
  try {
    for (const step of [c, ...(c.then ?? [])]) await runStep(engine, step, ctx, compiled);
    await runStep(engine, { script: STILL_SERVES, expect: { body: 'still here\n' } }, ctx);
  } finally {
    for (const slots of compiled.values()) for (const slot of slots.values()) slot.script?.dispose();
  }
}

/** Serves one step's request on `engine` and checks it; returns what it came to. */
export async function runStep(engine: ScriptEngine, step: Step, ctx: CaseContext, compiled?: Map<object, ModuleSlots>): Promise<Served> {
  const source = step.script[ctx.engine];
  assert.ok(typeof source === 'string', `a later step cannot be written in ${ctx.engine}: ${(source as NotWritable).na}`);
  const base = ctx.cache ? { ...noServices, cache: ctx.cache } : noServices;
  const services = step.services ? { ...base, ...step.services } : base;
  const during = step.during;
  const started = performance.now();
  const sources = step.modules?.[ctx.engine];
  let modules: Readonly<Record<string, string>> | ModuleSlots | undefined = sources;
  if (sources !== undefined && compiled !== undefined) {
    let slots = compiled.get(sources);
    if (slots === undefined) compiled.set(sources, (slots = compileModules(engine, sources)));
    modules = slots;
  }
  const out = await serve(engine, source, { ...step.request, services, ...(modules ? { modules } : {}), ...(during ? { during: (t: TestHost) => during(t, ctx) } : {}) });
  checkOutcome(out, step.expect, ctx.id, `/srv/www/test${engine.extension}`, performance.now() - started);
  await step.check?.(out, ctx);
  return out;
}

/** Asserts that `out` is what `expect` says, for `engine` (the script file is `file`). */
export function checkOutcome(out: Served, expect: Expect, engine: EngineId, file: string, tookMs: number): void {
  checkError(out.error, pick(expect.error ?? null, engine), engine, file);
  if (expect.status !== undefined) assert.equal(out.status, pick(expect.status, engine), 'status');
  if (expect.body !== undefined) {
    const body = pick(expect.body, engine);
    if (typeof body === 'string') assert.equal(out.text, body, 'body');
    else if (body instanceof RegExp) assert.match(out.text, body, 'body');
    else assert.deepEqual(out.body, body, 'body bytes');
  }
  if (expect.headers !== undefined) {
    const headers = pick(expect.headers, engine);
    for (const name of Object.keys(headers)) assert.equal(out.headers[name], headers[name], `header ${name}`);
  }
  if (expect.stderr !== undefined) {
    const stderr = pick(expect.stderr, engine);
    if (typeof stderr === 'string') assert.equal(out.stderr, stderr, 'FCGI_STDERR');
    else assert.match(out.stderr, stderr, 'FCGI_STDERR');
  }
  if (Object.hasOwn(expect, 'returned')) assert.equal(out.returned, pick(expect.returned, engine), 'the run resolved with');
  if (expect.withinMs !== undefined) assert.ok(tookMs < expect.withinMs, `took ${Math.round(tookMs)} ms, expected under ${expect.withinMs} ms`);
  if (expect.atLeastMs !== undefined) assert.ok(tookMs >= expect.atLeastMs, `took ${Math.round(tookMs)} ms, expected at least ${expect.atLeastMs} ms`);
}

function describe(err: ScriptError): string {
  return `${err.kind} error at ${err.location}: ${err.message}`;
}

function checkError(got: ScriptError | null, expected: ExpectedError | readonly ExpectedError[] | null, engine: EngineId, file: string): void {
  if (expected === null) {
    assert.equal(got, null, got ? `unexpected ${describe(got)}` : '');
    return;
  }
  const options = Array.isArray(expected) ? (expected as readonly ExpectedError[]) : [expected as ExpectedError];
  assert.ok(got, `expected a ${options.map((o) => pick(o.kind, engine)).join(' or ')} error, the request succeeded`);
  if (options.length > 1) {
    const matches = options.some((o) => {
      try {
        matchError(got, o, engine, file);
        return true;
      } catch {
        return false;
      }
    });
    assert.ok(matches, `${describe(got)} is none of the expected errors`);
    return;
  }
  matchError(got, options[0]!, engine, file);
}

function matchError(got: ScriptError, expected: ExpectedError, engine: EngineId, file: string): void {
  assert.equal(got.kind, pick(expected.kind, engine), `kind of ${describe(got)}`);
  assert.equal(got.file, file, 'the error names the script file');
  const message = expected.message === undefined ? undefined : pick(expected.message, engine);
  if (typeof message === 'string') assert.equal(got.message, message, 'error message');
  else if (message) assert.match(got.message, message, 'error message');
  if (expected.line !== undefined) {
    const line = pick(expected.line, engine);
    assert.equal(got.line, line, `line of ${describe(got)}`);
    assert.equal(got.location, line === null ? file : `${file}:${line}`, 'file:line');
  }
}

/** Several requests served at once on one engine, each with its own expected outcome. */
export interface ConcurrentCase {
  readonly name: string;
  /** Started in this order, without waiting for each other. */
  readonly runs: readonly Step[];
  /** The order in which the runs must end (indexes into `runs`). */
  readonly order?: readonly number[];
  readonly todo?: Case['todo'];
}

/** A short wait in every language: warms as many sandboxes as a concurrent case runs at once. */
const WARM: Scripts = { lua: 'sleep(1)', js: 'await sleep(1)' };

/** node:test options for a concurrent case (skipped when any of its runs cannot be written). */
export function concurrentOptions(entry: EngineEntry, c: ConcurrentCase): TestOptions {
  const na = c.runs.map((r) => r.script[entry.name]).find((s): s is NotWritable => typeof s !== 'string');
  if (na) return { skip: `not writable in ${entry.name}: ${na.na}` };
  const todo = c.todo?.[entry.id];
  return todo ? { todo } : {};
}

/** Runs a concurrent case on the shared engine of `entry`. */
export async function runConcurrent(entry: EngineEntry, c: ConcurrentCase): Promise<void> {
  const engine = await instance(entry);
  const ctx: CaseContext = { engine: entry.name, id: entry.id, cache: null, notes: {} };
  // Each JS run in flight has a sandbox of its own; making one costs ~6-10 ms, which is not
  // what the order of a case is about: have enough before it starts.
  await Promise.all(c.runs.map(() => runStep(engine, { script: WARM, expect: {} }, ctx)));
  const ended: number[] = [];
  await Promise.all(c.runs.map((step, i) => runStep(engine, step, ctx).then(() => void ended.push(i))));
  if (c.order) assert.deepEqual(ended, c.order, 'the order the runs ended in');
  await runStep(engine, { script: STILL_SERVES, expect: { body: 'still here\n' } }, ctx);
}
