/** Finding installed programs (nginx, php-fpm, wrk ...), for the tests and the benchmark alike. */
import fs from 'node:fs';
import path from 'node:path';

/** PATH, then the sbin directories (nginx and php-fpm live in /usr/sbin). */
const searchDirs = (): string[] => [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/local/sbin'].filter((dir) => dir !== '');

function executable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Path of `program` on PATH or in the sbin directories, or null. */
export function findProgram(program: string): string | null {
  for (const dir of searchDirs()) {
    const candidate = path.join(dir, program);
    if (executable(candidate)) return candidate;
  }
  return null;
}

/**
 * The PHP-FPM binary: `php-fpm` on PATH or in the sbin directories, else the highest versioned
 * one (Debian installs `/usr/sbin/php-fpm8.2`); null when there is none.
 */
export function findPhpFpm(): string | null {
  const plain = findProgram('php-fpm');
  if (plain !== null) return plain;
  const found: Array<{ file: string; version: number[] }> = [];
  for (const dir of searchDirs()) {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      const m = /^php-fpm(\d+(?:\.\d+)*)$/.exec(name);
      if (m === null) continue;
      const file = path.join(dir, name);
      if (executable(file)) found.push({ file, version: m[1]!.split('.').map(Number) });
    }
  }
  const newer = (a: number[], b: number[]): number => {
    for (let i = 0; i < Math.max(a.length, b.length); i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
    return 0;
  };
  found.sort((a, b) => newer(b.version, a.version));
  return found[0]?.file ?? null;
}
