/**
 * The host side of require() (see ../modules.ts): the run's modules by name, as the store
 * found them with the script, and the chain of requires in progress, which names a cycle and
 * goes into every refusal, so the log line says how the script got to the module.
 */
import path from 'node:path';
import type { CompiledScript } from '../compiled.js';
import { MODULE_NAME, type ModuleSlots } from '../modules.js';

/** What the module calls use of a ScriptHost. */
export interface ModulesHost {
  readonly scriptFilename: string;
  /** The script's modules (the store's lease); null: it requires none the store found. */
  modules: ModuleSlots | null;
  /** Names whose top level is running now, outermost first; null before the first require. */
  moduleChain: string[] | null;
}

/**
 * The compiled module `name`, and `name` entered in the chain: the engine runs its top level,
 * then calls {@link closeModule} whether it ended or failed (or passes `depth`, the number of
 * requires still in progress, to the next call). Throws an Error whose message is
 * for the script (it can catch it, as Lua's `pcall(require, "x")` idiom expects): a module
 * that is not there, outside the paths, does not compile, or is already being required.
 */
export function openModule(host: ModulesHost, name: string, depth?: number): CompiledScript {
  const chain = (host.moduleChain ??= []);
  // An engine that counts the requires in progress itself passes that count instead of calling
  // closeModule (the JS prelude: a call out of QuickJS costs microseconds; see api/modules.ts).
  if (depth !== undefined && depth < chain.length) chain.length = depth;
  if (chain.includes(name)) throw new Error(`require cycle: ${chainText(host, chain, name)}`);
  const slot = host.modules?.get(name);
  if (slot === undefined) {
    const why = MODULE_NAME.test(name)
      ? `it was not loaded with the script: require a module by a literal name, as in require("${name}")`
      : 'not a module name (letters, digits, _ and -, parts joined by dots)';
    throw new Error(`module '${name}' not found: ${why} (${chainText(host, chain, name)})`);
  }
  if (slot.script === undefined) throw new Error(`module '${name}' ${slot.problem} (${chainText(host, chain, name)})`);
  chain.push(name);
  return slot.script;
}

/**
 * The compiled module `name`, or null when there is none to run (the caller then goes through
 * {@link openModule} for the error). Keeps no chain: for a module the engine already holds
 * loaded (lua54's shared modules), whose top level does not run again.
 */
export function findModule(host: ModulesHost, name: string): CompiledScript | null {
  return host.modules?.get(name)?.script ?? null;
}

/** Leaves `name` (the innermost module in the chain) once its top level ended or failed. */
export function closeModule(host: ModulesHost, name: string): void {
  const chain = host.moduleChain;
  if (chain !== null && chain[chain.length - 1] === name) chain.pop();
}

// "index.lua -> a -> b": the script, then each require in progress, then `name`.
function chainText(host: ModulesHost, chain: readonly string[], name: string): string {
  return [path.basename(host.scriptFilename), ...chain, name].join(' -> ');
}
