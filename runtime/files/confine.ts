/**
 * Confinement of a script-supplied filesystem path to the configured file roots, the rule of
 * lighttpd's x-sendfile-docroot check (`http_response_xsendfile_path_check`) applied to a plain
 * path: the script API takes filesystem paths, so nothing here is URL-decoded.
 *
 * The path is checked twice: lexically after normalising (so `..` cannot climb out), and again
 * after `realpath` (so a symlink inside a root cannot point out of it). Everything that touches
 * the disk goes through `fs.promises` (libuv's thread pool), never a sync call.
 */
import fs from 'node:fs';
import path from 'node:path';

/** Where a path lands after confinement. */
export type Confined =
  /** The real path (symlinks resolved), inside a root. */
  | { kind: 'ok'; path: string }
  /** Inside the roots lexically, but it does not exist (ENOENT, ENOTDIR). */
  | { kind: 'missing'; path: string }
  /** Outside the roots, a NUL byte, empty, or a path the filesystem would not resolve. */
  | { kind: 'refused'; reason: string };

/**
 * Confines `input` to `roots`.
 *
 * `roots` are absolute, already realpath'ed directories; a root itself counts as inside it.
 * Relative input resolves against `base` (the first root, by convention). The `missing` path is
 * the normalised (lexical) one, since there is no real path to give.
 *
 * @example
 *   const where = await confine('reports/q1.pdf', ['/srv/files'], '/srv/files');
 *   // { kind: 'ok', path: '/srv/files/reports/q1.pdf' }
 *   await confine('../etc/passwd', ['/srv/files'], '/srv/files');
 *   // { kind: 'refused', reason: '/srv/etc/passwd is outside the file roots' }
 */
export async function confine(input: string, roots: readonly string[], base: string): Promise<Confined> {
  if (input === '') return { kind: 'refused', reason: 'empty path' };
  // The kernel would stop at the NUL and open a different (shorter) path than the one checked.
  if (input.includes('\0')) return { kind: 'refused', reason: 'path contains a NUL byte' };
  if (!path.isAbsolute(input) && !path.isAbsolute(base)) {
    return { kind: 'refused', reason: `relative path ${input} and no absolute base to resolve it against` };
  }
  const lexical = path.resolve(base, input);
  if (!insideRoots(lexical, roots)) return { kind: 'refused', reason: `${lexical} is outside the file roots` };

  let real: string;
  try {
    // The normalised path is resolved, not the input: what was checked above is what is opened.
    real = await fs.promises.realpath(lexical);
  } catch (err) {
    const code = errorCode(err);
    if (code !== 'ENOENT' && code !== 'ENOTDIR') return { kind: 'refused', reason: `${lexical}: ${code ?? String(err)}` };
    return missingOrRefused(lexical, roots);
  }
  // realpath resolved every symlink, so this prefix check cannot be fooled by one.
  if (!insideRoots(real, roots)) return { kind: 'refused', reason: `${lexical} resolves to ${real}, outside the file roots` };
  return { kind: 'ok', path: real };
}

/**
 * A missing path behind a symlink that points out of the roots is refused, not missing: else
 * `missing` versus `refused` would tell a script whether a file exists outside the roots. The
 * nearest existing ancestor decides; the walk stops at the root, which is known to be inside.
 */
async function missingOrRefused(lexical: string, roots: readonly string[]): Promise<Confined> {
  let dir = lexical;
  for (;;) {
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
    if (!insideRoots(dir, roots)) break;
    let real: string;
    try {
      real = await fs.promises.realpath(dir);
    } catch (err) {
      const code = errorCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      return { kind: 'refused', reason: `${dir}: ${code ?? String(err)}` };
    }
    if (!insideRoots(real, roots)) return { kind: 'refused', reason: `${lexical} lies under ${real}, outside the file roots` };
    break;
  }
  return { kind: 'missing', path: lexical };
}

/** True when `p` is one of `roots` or below one, on a segment boundary (`/srv/files2` is not in `/srv/files`). */
export function insideRoots(p: string, roots: readonly string[]): boolean {
  for (const root of roots) {
    if (p === root) return true;
    // '/' as a root already ends in the separator; every other root gets one appended.
    const prefix = root.endsWith(path.sep) ? root : root + path.sep;
    if (p.startsWith(prefix)) return true;
  }
  return false;
}

function errorCode(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}
