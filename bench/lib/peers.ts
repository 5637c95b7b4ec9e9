/** How the benchmark starts its peers: commands only, started through procs.ts by the scenarios. */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from '../../test/shared/repo.js';

/**
 * `lodestone serve` on `listen` ("tcp:127.0.0.1:PORT" or "unix:PATH") as one process
 * (`--workers 0`): the benchmark gives every server one core, and a primary beside the worker
 * would only add its memory to the report.
 */
export function lodestoneCommand(listen: string, ...args: string[]): [string, string[]] {
  return [
    process.execPath,
    [path.join(repoRoot, 'bin/lodestone.js'), 'serve', '--listen', listen, '--workers', '0', '--log-level', 'warn', ...args],
  ];
}

/** Builds bench/peers/hello-libfcgi.c into `dir` (fresh, so it matches this machine's libfcgi). */
export function buildLibfcgi(gcc: string, dir: string): string {
  const bin = path.join(dir, 'hello-libfcgi');
  const build = spawnSync(gcc, ['-O2', '-o', bin, path.join(repoRoot, 'bench/peers/hello-libfcgi.c'), '-lfcgi'], { encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`building the libfcgi peer failed:\n${build.stderr}${build.error?.message ?? ''}`);
  return bin;
}

/** The libfcgi peer: `processes` pre-forked processes on 127.0.0.1:`port`. */
export function libfcgiCommand(bin: string, port: number, processes: number): [string, string[]] {
  return [bin, [String(port), String(processes)]];
}

/** The node-fastcgi hello world (bench/peers/node-fastcgi.mjs) on 127.0.0.1:`port`. */
export function nodeFastcgiCommand(port: number): [string, string[]] {
  return [process.execPath, [path.join(repoRoot, 'bench/peers/node-fastcgi.mjs'), String(port)]];
}

/** The Node relay floor (bench/peers/node-relay.mjs) on 127.0.0.1:`port`, relaying to 127.0.0.1:`backendPort` on `pool` kept connections. */
export function nodeRelayCommand(port: number, backendPort: number, pool: number): [string, string[]] {
  return [process.execPath, [path.join(repoRoot, 'bench/peers/node-relay.mjs'), String(port), String(backendPort), String(pool)]];
}

/** The Node floor (bench/peers/node-floor.mjs) on 127.0.0.1:`port`. */
export function nodeFloorCommand(port: number): [string, string[]] {
  return [process.execPath, [path.join(repoRoot, 'bench/peers/node-floor.mjs'), String(port)]];
}

/** The first line of `program args`' output (its version), or "?". */
export function programVersion(program: string, args: string[]): string {
  const r = spawnSync(program, args, { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`.trim().split('\n')[0] ?? '?';
}
