/** Finds the programs the benchmark needs and names the Debian packages that provide them. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { findPhpFpm, findProgram } from '../../test/shared/programs.js';

/** What a scenario can need; each maps to the Debian package (or npm step) that provides it. */
export type Requirement =
  | 'nginx'
  | 'wrk'
  | 'taskset'
  | 'gcc'
  | 'libfcgi-dev'
  | 'php-fpm'
  | 'lighttpd'
  | 'mod_magnet'
  | 'nginx-lua'
  | 'strace'
  | 'node-fastcgi';

const PACKAGE: Record<Requirement, string> = {
  nginx: 'nginx',
  wrk: 'wrk',
  taskset: 'util-linux',
  gcc: 'gcc',
  'libfcgi-dev': 'libfcgi-dev',
  'php-fpm': 'php-fpm',
  lighttpd: 'lighttpd',
  mod_magnet: 'lighttpd-modules-lua',
  // lua-nginx-module with LuaJIT; it pulls in the NDK module and lua-resty-core it needs.
  'nginx-lua': 'libnginx-mod-http-lua',
  strace: 'strace',
  'node-fastcgi': '',
};

/** The resolved programs (paths), null where missing. */
export interface Programs {
  nginx: string | null;
  wrk: string | null;
  gcc: string | null;
  taskset: string | null;
  phpFpm: string | null;
  lighttpd: string | null;
  strace: string | null;
}

/** Looks every program up once. */
export function findPrograms(): Programs {
  return {
    nginx: findProgram('nginx'),
    wrk: findProgram('wrk'),
    gcc: findProgram('gcc'),
    taskset: findProgram('taskset'),
    phpFpm: findPhpFpm(),
    lighttpd: findProgram('lighttpd'),
    strace: findProgram('strace'),
  };
}

/** lighttpd's module directory holds mod_magnet (Debian ships it apart, in lighttpd-modules-lua). */
function haveMagnet(): boolean {
  return ['/usr/lib/lighttpd', '/usr/lib64/lighttpd', '/usr/local/lib/lighttpd', '/usr/lib/x86_64-linux-gnu/lighttpd'].some((d) =>
    fs.existsSync(path.join(d, 'mod_magnet.so')),
  );
}

/** Where nginx's dynamic modules live on Debian (and in nginx's own default prefix). */
const NGINX_MODULE_DIRS = ['/usr/lib/nginx/modules', '/usr/share/nginx/modules', '/usr/local/nginx/modules'];

/**
 * The `load_module` paths of lua-nginx-module, in load order (the NDK first: the Lua module is
 * built against it), or null when they are not installed. The benchmark's nginx reads none of
 * /etc/nginx, so it loads them itself rather than through modules-enabled.
 */
export function nginxLuaModules(): string[] | null {
  for (const dir of NGINX_MODULE_DIRS) {
    const mods = ['ndk_http_module.so', 'ngx_http_lua_module.so'].map((m) => path.join(dir, m));
    if (mods.every((m) => fs.existsSync(m))) return mods;
  }
  return null;
}

/** The libfcgi headers the C peer is built with; the compiler knows its include path. */
function haveLibfcgiHeaders(gcc: string | null): boolean {
  if (gcc === null) return fs.existsSync('/usr/include/fcgiapp.h');
  return spawnSync(gcc, ['-E', '-x', 'c', '-', '-o', '/dev/null'], { input: '#include <fcgi_stdio.h>\n#include <fcgiapp.h>\n' }).status === 0;
}

/** The bench package's own dependencies (`npm ci --prefix bench`), resolved from `benchDir`. */
export function haveNodeFastcgi(benchDir: string): boolean {
  return fs.existsSync(path.join(benchDir, 'node_modules/node-fastcgi/package.json'));
}

/** What is missing of `needs`, each as "what (how to get it)". */
export function missingOf(needs: readonly Requirement[], programs: Programs, benchDir: string): Array<{ what: Requirement; pkg: string }> {
  const have: Record<Requirement, () => boolean> = {
    nginx: () => programs.nginx !== null,
    wrk: () => programs.wrk !== null,
    taskset: () => programs.taskset !== null,
    gcc: () => programs.gcc !== null,
    'libfcgi-dev': () => haveLibfcgiHeaders(programs.gcc),
    'php-fpm': () => programs.phpFpm !== null,
    lighttpd: () => programs.lighttpd !== null,
    mod_magnet: haveMagnet,
    'nginx-lua': () => nginxLuaModules() !== null,
    strace: () => programs.strace !== null,
    'node-fastcgi': () => haveNodeFastcgi(benchDir),
  };
  return needs.filter((n) => !have[n]()).map((what) => ({ what, pkg: PACKAGE[what] }));
}

/** One line telling the user how to install what is missing (Debian packages, npm). */
export function installHint(missing: ReadonlyArray<{ what: Requirement; pkg: string }>): string {
  const pkgs = [...new Set(missing.map((m) => m.pkg).filter((p) => p !== ''))];
  const parts: string[] = [];
  if (pkgs.length > 0) parts.push(`apt-get install -y ${pkgs.join(' ')}`);
  if (missing.some((m) => m.what === 'node-fastcgi')) parts.push('npm ci --prefix bench');
  return parts.join(' && ');
}
