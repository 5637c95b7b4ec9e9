/**
 * What both Lua engines do the same way to a script's text and to Lua's error messages: the
 * chunk each compiles, and `file:line` read back out of an error.
 */
import type { SourceKind } from './engine.js';

/**
 * Prepended to every chunk, on its first line (so line numbers stay right): the request's
 * globals come in as the chunk's argument. Changing it changes compiled output: bump each
 * engine's SANDBOX_REVISION with it so cached bytecode is not reused.
 */
const PREFIX = 'local _ENV = ...; ';

/**
 * A module's chunk returns its top level as a function of the request's globals (a parameter
 * named _ENV is its globals in Lua 5.2+) and the module's name (`...`, as Lua's require gives
 * it), so that require can run the top level afresh in each request that asks for it.
 */
const MODULE_PREFIX = 'return function(_ENV, ...) ';
const MODULE_SUFFIX = '\nend';

/** Source -> chunk bytes: the env prefix, a BOM dropped, a `#!` line turned into a comment. */
export function luaChunk(source: string, kind: SourceKind = 'script'): Buffer {
  let src = source.charCodeAt(0) === 0xfeff ? source.slice(1) : source;
  if (src.startsWith('#')) src = '--' + src;
  return Buffer.from(kind === 'script' ? PREFIX + src : MODULE_PREFIX + src + MODULE_SUFFIX, 'utf8');
}

/**
 * `path:LINE: message` as Lua writes it (the chunk name is `@path`; Lua shortens a long one
 * to `...` and its tail) -> the message and the line; other chunks' positions are kept whole.
 */
export function locate(raw: string, path: string): { message: string; line: number | null } {
  const m = /^(.*?):(\d+): ([\s\S]*)$/.exec(raw);
  if (m) {
    const src = m[1]!;
    if (src === path || (src.startsWith('...') && path.endsWith(src.slice(3)))) {
      return { message: m[3]!, line: Number(m[2]) };
    }
  }
  return { message: raw, line: null };
}
