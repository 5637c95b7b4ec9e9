/** Checks for the programs the benchmark needs and names the Debian packages that provide them. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** PATH, then the sbin directories (nginx and php-fpm live in /usr/sbin). */
const searchDirs = (): string[] => [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/local/sbin'];

/** Path of `program` on PATH or in the sbin directories, or null. */
export function findProgram(program: string): string | null {
  for (const dir of searchDirs()) {
    if (dir === '') continue;
    const candidate = path.join(dir, program);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
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
    if (dir === '') continue;
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
      try {
        fs.accessSync(file, fs.constants.X_OK);
      } catch {
        continue;
      }
      found.push({ file, version: m[1]!.split('.').map(Number) });
    }
  }
  const newer = (a: number[], b: number[]): number => {
    for (let i = 0; i < Math.max(a.length, b.length); i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
    return 0;
  };
  found.sort((a, b) => newer(b.version, a.version));
  return found[0]?.file ?? null;
}

/** The resolved programs. */
export interface Programs {
  nginx: string;
  wrk: string;
  gcc: string;
  taskset: string;
  /** Only looked for when the php-fpm backend runs. */
  phpFpm: string | null;
}

/**
 * Returns the programs, or null after printing what is missing and the `apt-get install` line
 * that fixes it.
 */
export function checkPrerequisites(needPhpFpm = false): Programs | null {
  const missing: Array<{ what: string; pkg: string }> = [];
  const need = (program: string, pkg: string): string => {
    const found = findProgram(program);
    if (found === null) missing.push({ what: program, pkg });
    return found ?? program;
  };
  const programs: Programs = {
    nginx: need('nginx', 'nginx'),
    wrk: need('wrk', 'wrk'),
    gcc: need('gcc', 'gcc'),
    taskset: need('taskset', 'util-linux'),
    phpFpm: needPhpFpm ? findPhpFpm() : null,
  };
  if (needPhpFpm && programs.phpFpm === null) missing.push({ what: 'php-fpm', pkg: 'php-fpm' });
  // The headers are what the build needs; ask the compiler, which knows its include path.
  const headers =
    findProgram('gcc') !== null
      ? spawnSync('gcc', ['-E', '-x', 'c', '-', '-o', '/dev/null'], { input: '#include <fcgi_stdio.h>\n#include <fcgiapp.h>\n' })
          .status === 0
      : fs.existsSync('/usr/include/fcgi_stdio.h');
  if (!headers) missing.push({ what: 'libfcgi headers (fcgi_stdio.h)', pkg: 'libfcgi-dev' });
  if (missing.length === 0) return programs;
  process.stderr.write(
    `bench: missing ${missing.map((m) => `${m.what} (Debian package ${m.pkg})`).join(', ')}\n` +
      `Install with: apt-get install -y ${[...new Set(missing.map((m) => m.pkg))].join(' ')}\n`,
  );
  return null;
}
