/** Checks for the programs the benchmark needs and names the Debian packages that provide them. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** Path of `program` on PATH or in the sbin directories (nginx lives in /usr/sbin), or null. */
export function findProgram(program: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/local/sbin'];
  for (const dir of dirs) {
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

/** The resolved programs. */
export interface Programs {
  nginx: string;
  wrk: string;
  gcc: string;
  taskset: string;
}

/**
 * Returns the programs, or null after printing what is missing and the `apt-get install` line
 * that fixes it.
 */
export function checkPrerequisites(): Programs | null {
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
  };
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
