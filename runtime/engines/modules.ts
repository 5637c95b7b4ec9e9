/**
 * Modules: `require("util.strings")` gives a script the value `util/strings.lua` (or `.js`)
 * returns, found in the configured `modules.paths` (default `<root>/lib`).
 *
 * Isolation stays absolute: nothing one request does to a module (a counter, a cache table, a
 * global) is seen by the next. How depends on the engine:
 * - lua54 shares a module (lua54/shared-modules-lua.ts): its top level runs once per Lua state,
 *   its tables are copy-on-write proxies and the locals its functions assign are set back
 *   before the next run that uses it, so each run sees the module as it loaded. A hello that
 *   requires a 1,927-line module costs ~2x hello, not ~12x (README, "Modules"). A module whose
 *   top level touches the request (or whose value holds a coroutine) runs per request instead.
 * - QuickJS shares a module whose functions keep nothing of their own (js/share.ts decides from
 *   the source, js/api/modules.ts loads): its top level runs once per Vm, with the API that
 *   holds a request refusing, and every run gets its exports deep-frozen. A write to them
 *   throws a TypeError. JS cannot be copy-on-write as Lua is: a closure's top-level `let` can be
 *   neither enumerated nor set back from outside, so a module whose functions assign one (or
 *   change a module value in place) runs per request.
 * - fengari runs a module's top level afresh in each run that requires it (once per run, cached
 *   for that run), in the run's own globals, as do the modules the two above do not share.
 * What is shared otherwise is only what cannot hold request data: the compiled code.
 *
 * Never a disk read at run time: the store finds the literal names a source requires
 * ({@link requiredNames}) when it compiles the source, and loads those modules (and theirs)
 * with the script, revalidated on the same stat interval, bytecode-cached like scripts.
 * require() then only looks a name up in the run's {@link ModuleSlots}. A name the store did
 * not find that way (a computed name) is refused with a message that says so.
 */
import path from 'node:path';
import type { CompiledScript } from './compiled.js';
import { field, invalid } from '../config-schema.js';

/** A module name: parts of letters, digits, `_` and `-`, joined by dots (Lua's `a.b.c`). */
export const MODULE_NAME = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;

/** Module names longer than this are refused (a name is a path under a module directory). */
export const MAX_MODULE_NAME = 200;

/** The config's `modules.paths`: directories searched in order. */
export const modulesPathsField = field<readonly string[]>({
  doc: 'directories `require("a.b")` searches, in order, for `a/b.lua` (or `a/b.js` from a JS script); relative to the config file. A file in them is a module, never run or sent as a script',
  shown: '`["<root>/lib"]`',
  default: (ctx) => defaultModulePaths(ctx.done.root as string),
  parse(value, at) {
    if (!Array.isArray(value) || value.length === 0 || value.some((v) => typeof v !== 'string' || v === '')) {
      throw invalid(at.name, 'must be a non-empty array of directories, e.g. ["lib", "/srv/lua/shared"]');
    }
    return Object.freeze(value.map((v: string) => path.resolve(at.dir, v)));
  },
});

/** `modules.paths` when the config names none: `<root>/lib`, as OpenResty sites keep `lib/`. */
export function defaultModulePaths(root: string): readonly string[] {
  return [path.join(root, 'lib')];
}

// require("x"), require('x'), and Lua's require "x" / require 'x'.
const REQUIRE = /\brequire\s*(?:\(\s*)?(["'])([A-Za-z0-9_.-]{1,200})\1/g;

/**
 * The module names a source requires with a literal argument, in order of first mention. A
 * match in a comment or a string only costs a lookup: a name that is not found is reported
 * when (and only if) the run requires it.
 *
 * @example
 *   requiredNames('local s = require("util.strings")'); // ['util.strings']
 */
export function requiredNames(source: string): string[] {
  const names = new Set<string>();
  for (const m of source.matchAll(REQUIRE)) if (MODULE_NAME.test(m[2]!)) names.add(m[2]!);
  return [...names];
}

/** What the store found for one module name: the compiled module, or why there is none. */
export type ModuleSlot =
  | { readonly script: CompiledScript; readonly file: string; readonly problem?: undefined }
  | { readonly problem: string; readonly script?: undefined };

/** Every module a script may require, by name (its literal requires, and theirs). */
export type ModuleSlots = ReadonlyMap<string, ModuleSlot>;
