/**
 * Lodestone's version, from package.json: one place, so that `lodestone --version` and the
 * development server's SERVER_SOFTWARE never disagree with the package that was installed.
 */
import fs from 'node:fs';

let cached: string | null = null;

/** The package version, read once (this module runs from dist/runtime); "0" if unreadable. */
export function version(): string {
  if (cached !== null) return cached;
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    cached = typeof pkg.version === 'string' ? pkg.version : '0';
  } catch {
    cached = '0';
  }
  return cached;
}
