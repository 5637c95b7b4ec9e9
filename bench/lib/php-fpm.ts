/** PHP-FPM as a benchmark peer: a one-pool config written for the run. */
import fs from 'node:fs';
import path from 'node:path';

/**
 * `php-fpm -F` (foreground, so it stays in the process group the benchmark stops) with a config
 * written to `dir`: one pool on 127.0.0.1:`listen` (or the Unix socket `listen`), `children` children from the start. The
 * system's php.ini applies (OPcache as installed); expose_php off, so the response carries no
 * X-Powered-By header the other backends do not send.
 *
 * Give it at least as many children as kept connections can reach it: a child serves one kept
 * FastCGI connection until the client closes it, so connections beyond the children wait in the
 * listen queue and the benchmark would time the few that are served.
 */
export function phpFpmCommand(program: string, dir: string, listen: number | string, children: number): [string, string[]] {
  const conf = path.join(dir, 'php-fpm.conf');
  const root = process.getuid?.() === 0;
  fs.writeFileSync(
    conf,
    [
      '; Written by the benchmark for one run.',
      '[global]',
      `pid = ${path.join(dir, 'php-fpm.pid')}`,
      `error_log = ${path.join(dir, 'php-fpm-error.log')}`,
      'daemonize = no',
      '[bench]',
      // As root, php-fpm wants a user for its children and -R to accept root itself.
      ...(root ? ['user = root'] : []),
      // A port on 127.0.0.1, or a Unix socket path (as Debian's own pool listens).
      `listen = ${typeof listen === 'number' ? `127.0.0.1:${listen}` : listen}`,
      'pm = static',
      `pm.max_children = ${children}`,
      '',
    ].join('\n'),
  );
  return [program, ['-F', ...(root ? ['-R'] : []), '-y', conf, '-d', 'expose_php=0']];
}
