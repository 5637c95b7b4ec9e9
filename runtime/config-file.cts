/**
 * Reads the config file: TOML, or JSON when its name ends in `.json`. CommonJS (a .cts file)
 * because bin/lodestone.js requires it to find files.statThreads before anything starts libuv's
 * thread pool (see there); cli/config.ts reads the file through it too, so both read it alike.
 * It imports nothing that could start the pool: node:fs's sync calls and smol-toml's CJS build.
 */
import fs from 'node:fs';
import { parse as parseToml } from 'smol-toml';

/** The file's top-level table, or why there is none: one line, naming the file. */
export type ConfigFile = { readonly value: Record<string, unknown> } | { readonly error: string };

export function readConfigFile(file: string): ConfigFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    return { error: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
  }
  let value: unknown;
  if (file.endsWith('.json')) {
    try {
      value = JSON.parse(text);
    } catch (err) {
      return { error: `${file} is not valid JSON: ${(err as Error).message}` };
    }
  } else {
    try {
      value = parseToml(text);
    } catch (err) {
      // smol-toml's message carries a code frame over several lines: keep the first and say where.
      const e = err as Error & { line?: number; column?: number };
      const what = e.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
      return { error: `${file}:${e.line ?? '?'}:${e.column ?? '?'}: ${what}` };
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { error: `${file} must hold a JSON object` };
  return { value: value as Record<string, unknown> };
}
