/**
 * What the configuration schema is made of. A field is declared once: its validator, its
 * default, the flag or environment variable that overrides the file, and its row in README's
 * config reference (the default as shown there and the meaning). A section is an object of
 * fields (`[limits]`); its type, its unknown-field check and its README rows come from that
 * object. Each section is declared beside the module it configures (`limitsSection` in
 * fastcgi/server/limits.ts, ...); cli/config.ts puts the top level together.
 *
 * A value comes from the flag, else the environment, else the file, else the default. Errors
 * are one line naming the field as the user wrote it: `limits.maxBodyBytes`, `--workers`,
 * `PHP_FCGI_CHILDREN` (LS_CONFIG_INVALID).
 *
 * @example
 *   const limitsSection = section({ maxParams: positive(1000, 'number of params per request') });
 *   type Limits = ValueOf<typeof limitsSection>; // { readonly maxParams: number }
 */
import fs from 'node:fs';
import path from 'node:path';
import { LodestoneError } from './errors.js';

/** The config error: `field: message`, one line. */
export function invalid(field: string, message: string): LodestoneError {
  return new LodestoneError('LS_CONFIG_INVALID', `${field}: ${message}`);
}

/** Where a value being validated came from. */
export interface Given {
  /** The name errors use: `files.statThreads`, `--stat-threads`, `UV_THREADPOOL_SIZE`. */
  readonly name: string;
  /** What a relative path resolves against: the config file's directory, or the cwd for a flag. */
  readonly dir: string;
  /** Text from a flag or the environment (an integer field parses it), not a typed file value. */
  readonly text: boolean;
}

/** What every field may consult while the configuration is read. */
export interface Context {
  /** The config file's directory (the cwd without a file). */
  readonly baseDir: string;
  /** The command line's values by name; undefined (or an empty list) means not given. */
  readonly cli: Readonly<Record<string, unknown>>;
  readonly env: NodeJS.ProcessEnv;
  /**
   * The top-level values read so far, in declaration order: a later field may depend on an
   * earlier one (files.roots defaults to `root`, workers to 0 with `http`).
   */
  readonly done: Readonly<Record<string, unknown>>;
}

/** A flag that overrides a field: its key in the command line's values, and its name. */
export interface Flag {
  readonly key: string;
  readonly name: string;
}

export interface Field<T> {
  /** README's meaning cell (a field with a row of its own). */
  readonly doc?: string;
  /** README's default cell. */
  readonly shown?: string;
  readonly flag?: Flag;
  /** An environment variable that wins over the file (set but blank counts as unset). */
  readonly env?: string;
  /** A section's fields: README has a row for each, `section.field`. */
  readonly fields?: Fields;
  /** The fields of each entry of a map: README has a row for each, `map.NAME.field`. */
  readonly entries?: Fields;
  /** Validates a given value. */
  parse(value: unknown, at: Given, ctx: Context): T;
  /** The value when nothing gives one; `name` is the field's, for a section's fields. */
  fallback(ctx: Context, name: string): T;
}

export type Fields = Readonly<Record<string, Field<unknown>>>;
export type ValueOf<F> = F extends Field<infer T> ? T : never;
/** The validated values of some fields; JSDoc on a field's declaration carries over. */
export type Values<S extends Fields> = { readonly [K in keyof S]: ValueOf<S[K]> };

/** A field's value: from its flag, else its environment variable, else the file, else its default. */
export function read<T>(field: Field<T>, name: string, fromFile: unknown, ctx: Context): T {
  const { flag, env } = field;
  const flagged = flag === undefined ? undefined : ctx.cli[flag.key];
  if (flag !== undefined && flagged !== undefined && !(Array.isArray(flagged) && flagged.length === 0)) {
    return field.parse(flagged, { name: flag.name, dir: process.cwd(), text: true }, ctx);
  }
  const fromEnv = env === undefined ? undefined : ctx.env[env];
  if (env !== undefined && fromEnv !== undefined && fromEnv.trim() !== '') {
    return field.parse(fromEnv, { name: env, dir: process.cwd(), text: true }, ctx);
  }
  if (fromFile !== undefined) return field.parse(fromFile, { name, dir: ctx.baseDir, text: false }, ctx);
  return field.fallback(ctx, name);
}

/**
 * The top level of the configuration: a section without a name, whose values are in
 * `ctx.done` for the fields after them. Not frozen: the caller adds what it derives.
 */
export function readTop<S extends Fields>(fields: S, file: Readonly<Record<string, unknown>>, ctx: Omit<Context, 'done'>): Values<S> {
  knownOnly(fields, file, '');
  const done: Record<string, unknown> = {};
  const full: Context = { ...ctx, done };
  for (const [key, field] of Object.entries(fields)) done[key] = read(field, key, file[key], full);
  return done as Values<S>;
}

interface FieldSpec<T> {
  readonly doc: string;
  /** README's default cell; needed when the default is computed. Else shown from the value. */
  readonly shown?: string;
  readonly flag?: Flag;
  readonly env?: string;
  /** The value when nothing gives one, or how to compute it. */
  readonly default: T | ((ctx: Context, name: string) => T);
  readonly parse: (value: unknown, at: Given, ctx: Context) => T;
}

/** A field with a row of its own in README's table. */
export function field<T>(spec: FieldSpec<T>): Field<T> {
  const computed = typeof spec.default === 'function';
  if (computed && spec.shown === undefined) throw new Error('a computed default needs `shown` for README');
  return {
    doc: spec.doc,
    shown: spec.shown ?? shownValue(spec.default),
    flag: spec.flag,
    env: spec.env,
    parse: spec.parse,
    fallback: computed ? (spec.default as (ctx: Context, name: string) => T) : () => spec.default as T,
  };
}

// How README shows a plain default: numbers as they are, null as "none", the rest as code.
function shownValue(value: unknown): string {
  if (value === null) return 'none';
  if (typeof value === 'number') return String(value);
  return `\`${typeof value === 'string' && value !== '' ? value : JSON.stringify(value)}\``;
}

type IntegerSpec = Omit<FieldSpec<number>, 'parse'> & { readonly min: number; readonly max?: number };

/**
 * An integer from `min` to `max`; without `max`, `min` is 0 or 1 ("a non-negative integer", "a
 * positive integer"). Text from a flag or the environment must be an integer first.
 */
export function integer(spec: IntegerSpec): Field<number> {
  const { min, max } = spec;
  const range = max !== undefined ? `an integer from ${min} to ${max}` : min === 0 ? 'a non-negative integer' : 'a positive integer';
  return field({
    ...spec,
    parse(value, at) {
      const n = at.text ? textInteger(at.name, value) : value;
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < min || (max !== undefined && n > max)) {
        throw invalid(at.name, `must be ${range} (got ${JSON.stringify(n)})`);
      }
      return n;
    },
  });
}

/** A positive integer, as every field of `[limits]` and `[scriptLimits]` is. */
export function positive(fallback: number, doc: string): Field<number> {
  return integer({ min: 1, default: fallback, doc });
}

// A negative number is left to the range check, whose message names the range.
function textInteger(name: string, value: unknown): unknown {
  if (typeof value !== 'string') return value;
  if (!/^-?\d+$/.test(value)) throw invalid(name, `must be an integer (got ${JSON.stringify(value)})`);
  return Number(value);
}

export function boolean(spec: Omit<FieldSpec<boolean>, 'parse'>): Field<boolean> {
  return field({ ...spec, parse: (value, at) => booleanValue(value, at.name) });
}

/** One of `values`, listed in the message. */
export function oneOf<const V extends string>(values: readonly V[], spec: Omit<FieldSpec<V>, 'parse'>): Field<V> {
  return field({
    ...spec,
    parse(value, at) {
      if (typeof value !== 'string' || !(values as readonly string[]).includes(value)) throw invalid(at.name, `must be one of ${values.join(', ')}`);
      return value as V;
    },
  });
}

interface SectionOptions<S extends Fields> {
  /** What the section must be, for the error: "an object" unless told. */
  readonly what?: string;
  /** Checks between its fields, and flags that set several at once; `given` is the file's object ({} without one). */
  finish?(value: Values<S>, given: Readonly<Record<string, unknown>>, name: string, ctx: Context): Values<S>;
}

export interface Section<S extends Fields> extends Field<Values<S>> {
  readonly fields: S;
}

/** An object of fields (`[limits]`): unknown fields are errors, absent ones take their defaults. Frozen. */
export function section<S extends Fields>(fields: S, options: SectionOptions<S> = {}): Section<S> {
  const build = (given: Readonly<Record<string, unknown>>, name: string, ctx: Context): Values<S> => {
    knownOnly(fields, given, name);
    const out: Record<string, unknown> = {};
    for (const [key, field] of Object.entries(fields)) out[key] = read(field, `${name}.${key}`, given[key], ctx);
    const value = Object.freeze(out) as Values<S>;
    return options.finish ? Object.freeze(options.finish(value, given, name, ctx)) : value;
  };
  return {
    fields,
    parse(value, at, ctx) {
      if (!isObject(value)) throw invalid(at.name, `must be ${options.what ?? 'an object'}`);
      return build(value, at.name, ctx);
    },
    fallback: (ctx, name) => build({}, name, ctx),
  };
}

const noContext: Context = Object.freeze({ baseDir: '/', cli: {}, env: {}, done: {} });

/**
 * A section's defaults, for code that builds its options without a file; `without` leaves out
 * fields that have none (a pool's servers).
 */
export function defaults<S extends Fields, K extends keyof S & string = never>(s: Section<S>, ...without: K[]): Omit<Values<S>, K> {
  const entries = Object.entries(s.fields).filter(([key]) => !(without as string[]).includes(key));
  return Object.freeze(Object.fromEntries(entries.map(([key, f]) => [key, f.fallback(noContext, key)]))) as Omit<Values<S>, K>;
}

/** README's rows for `fields`: every field that has one, sections and maps opened. */
export function* rows(fields: Fields, prefix = ''): Generator<{ name: string; shown: string; doc: string }> {
  for (const [key, field] of Object.entries(fields)) {
    const name = `${prefix}${key}`;
    if (field.fields !== undefined) yield* rows(field.fields, `${name}.`);
    else if (field.entries !== undefined) yield* rows(field.entries, `${name}.NAME.`);
    else yield { name, shown: field.shown ?? '', doc: field.doc ?? '' };
  }
}

function knownOnly(fields: Fields, given: Readonly<Record<string, unknown>>, name: string): void {
  for (const key of Object.keys(given)) {
    if (!Object.hasOwn(fields, key)) throw invalid(name === '' ? key : `${name}.${key}`, 'unknown field');
  }
}

// Small validators the fields share.

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function stringValue(value: unknown, name: string): string {
  if (typeof value !== 'string') throw invalid(name, 'must be a string');
  return value;
}

export function booleanValue(value: unknown, name: string): boolean {
  if (typeof value !== 'boolean') throw invalid(name, 'must be true or false');
  return value;
}

/** A path string, resolved against where it was given. */
export function pathValue(value: unknown, at: Given): string {
  return path.resolve(at.dir, stringValue(value, at.name));
}

/** The real path of a directory that exists; else an error naming `name`. */
export function realDirectory(name: string, dir: string): string {
  try {
    const real = fs.realpathSync(dir);
    if (fs.statSync(real).isDirectory()) return real;
  } catch {
    // reported below
  }
  throw invalid(name, `${dir} is not a directory`);
}

export function isDirectory(dir: string): boolean {
  try {
    return fs.statSync(dir).isDirectory();
  } catch {
    return false;
  }
}
