/**
 * `lodestone check`, like `nginx -t`: the configuration loads and every script under the root
 * and every module in modules.paths compiles, checked before a deploy instead of by the first request that hits a broken file.
 * It compiles with the real engines but builds nothing else a server has: no socket, no Redis
 * client, no backend pool, no script store (so no bytecode is written to cache.dir).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config.js';
import { ScriptError, type ScriptEngine } from '../engines/engine.js';
import { createJsEngine } from '../engines/js.js';
import { createLuaEngine } from '../engines/lua-engines.js';
import { openRegular, readUpTo } from '../files/open-regular.js';
import { tooLargeMessage } from '../engines/script-cache-config.js';

/** What {@link checkScripts} found. */
export interface CheckResult {
  /** Real paths of the scripts compiled, in walk order. */
  readonly checked: readonly string[];
  /** Real paths of the modules compiled (files in modules.paths), in walk order. */
  readonly modules: readonly string[];
  /** JS modules that compile but run per request, with why (js/share.ts): speed, not errors. */
  readonly perRequest: ReadonlyArray<{ readonly file: string; readonly reason: string }>;
  /** One error per script that does not compile. */
  readonly failures: readonly ScriptError[];
}

/** Directories no site serves scripts from, and that can be huge: skipped by the walk. */
function skipDirectory(name: string): boolean {
  return name.startsWith('.') || name === 'node_modules';
}

/**
 * Every file under `root` whose real path has one of `extensions` and stays inside `root`, as
 * the script store would accept it (it compares the real path's extension and prefix too).
 * Symlinked directories are not followed: a link back up would loop, and the store's root
 * check is on real paths, so anything they reach inside the root is found on its real path.
 */
export async function findScripts(root: string, extensions: ReadonlySet<string>): Promise<string[]> {
  const realRoot = await fs.promises.realpath(root);
  const found: string[] = [];
  const seen = new Set<string>();
  const walk = async (dir: string): Promise<void> => {
    const entries = await fs.promises.readdir(dir, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (!skipDirectory(entry.name)) await walk(full);
        continue;
      }
      if (!entry.isFile() && !entry.isSymbolicLink()) continue;
      let real: string;
      try {
        real = await fs.promises.realpath(full);
        if (!(await fs.promises.stat(real)).isFile()) continue;
      } catch {
        continue; // a dangling link: the store would answer 404, nothing to compile
      }
      if (!extensions.has(path.extname(real))) continue;
      if (!real.startsWith(realRoot + path.sep) || seen.has(real)) continue;
      seen.add(real);
      found.push(real);
    }
  };
  await walk(realRoot);
  return found;
}

/**
 * Compiles every script under `config.root` with the real Lua and JS engines, or with a front
 * controller (`--script`) that script alone: then nothing else under the root ever runs (the
 * root may well be a PHP document root full of browser JavaScript). Each compiled script is freed at once, and the JS engine closed, so the process
 * has nothing left to wait for.
 */
export async function checkScripts(config: Config): Promise<CheckResult> {
  const lua = await createLuaEngine(config.luaEngine);
  const js = await createJsEngine();
  const engines = new Map<string, ScriptEngine>([
    [lua.extension, lua],
    [js.extension, js],
  ]);
  try {
    const extensions = new Set(engines.keys());
    const moduleDirs = (await Promise.all(config.modules.paths.map((dir) => fs.promises.realpath(dir).catch(() => null)))).filter((d) => d !== null);
    const isModule = (file: string): boolean => moduleDirs.some((dir) => file.startsWith(dir + path.sep));
    const found = config.script !== null ? [await fs.promises.realpath(config.script)] : await findScripts(config.root, extensions);
    // The store refuses to run a module as a script: check it as what it is.
    const files = found.filter((file) => !isModule(file));
    const modules = [...new Set((await Promise.all(moduleDirs.map((dir) => findScripts(dir, extensions)))).flat())];
    const failures: ScriptError[] = [];
    const perRequest: Array<{ file: string; reason: string }> = [];
    for (const [list, kind] of [
      [files, 'script'],
      [modules, 'module'],
    ] as const) {
      for (const file of list) {
        const engine = engines.get(path.extname(file));
        if (!engine) {
          failures.push(new ScriptError('compile', 'not a .lua or .js script', file, null));
          continue;
        }
        try {
          const compiled = engine.compile(await readScript(file, config.scriptCache.maxScriptBytes), file, kind);
          if (compiled.perRequestBecause !== undefined) perRequest.push({ file, reason: compiled.perRequestBecause });
          compiled.dispose();
        } catch (err) {
          failures.push(err instanceof ScriptError ? err : new ScriptError('compile', String(err), file, null));
        }
      }
    }
    return { checked: files, modules, failures, perRequest };
  } finally {
    js.close();
  }
}

/**
 * A script's source, read as the server's store reads it: a non-blocking open, a regular file
 * only, and a size checked on the descriptor before reading, so `check` flags a script the
 * server would refuse (and does not compile a huge file either). Throws a compile ScriptError.
 */
async function readScript(file: string, maxBytes: number): Promise<string> {
  const opened = await openRegular(file);
  if (!opened) throw new ScriptError('compile', 'not a regular file', file, null);
  try {
    if (opened.stat.size > maxBytes) {
      throw new ScriptError('compile', `LS_SCRIPT_TOO_LARGE: ${tooLargeMessage(opened.stat.size, maxBytes)}`, file, null);
    }
    return (await readUpTo(opened.handle, opened.stat.size)).toString('utf8');
  } finally {
    await opened.handle.close();
  }
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/**
 * The `check` command on a loaded configuration: one `path:line: message` line on `err` per
 * script that does not compile; on `out`, a note per JS module that runs per request (and why),
 * then a summary line. Resolves to the exit code: 0 when
 * every script compiles, 1 otherwise.
 *
 * @example
 *   const code = await runCheck(loadConfig({ root: 'scripts' }), process.stdout, process.stderr);
 */
export async function runCheck(config: Config, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  if (config.diagnostic || config.statAccel) {
    // Neither mode runs scripts: the root holds files to serve, which may well be client-side JS.
    out.write(`lodestone: configuration ok (${config.diagnostic ? 'diagnostic' : 'stat-accel'} mode runs no scripts)\n`);
    return 0;
  }
  const { checked, modules, failures, perRequest } = await checkScripts(config);
  for (const failure of failures) err.write(`${failure.location}: ${failure.message}\n`);
  // Not errors: why a JS module is not shared, so its author can see what each require costs.
  for (const { file, reason } of perRequest) out.write(`${file}: note: runs per request, not shared: ${reason}\n`);
  const what = plural(checked.length, 'script') + (modules.length > 0 ? ` and ${plural(modules.length, 'module')}` : '');
  if (failures.length === 0) {
    out.write(`lodestone: configuration ok, ${what} ${checked.length + modules.length === 1 ? 'compiles' : 'compile'}\n`);
    return 0;
  }
  out.write(`lodestone: ${what} checked, ${plural(failures.length, 'error')}\n`);
  return 1;
}
