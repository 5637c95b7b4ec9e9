/**
 * The development server (`lodestone serve --http`, `npm start`): the HTTP front end
 * (dev-http.ts) runs in this process, the scripts in one FastCGI worker that the process manager
 * forks and replaces, over a unix socket this process holds. A worker that dies (the watchdog's
 * kill of a stuck script, a crash) costs the requests it had a 502, and the next one is served
 * by its replacement, while the URL, the socket and this process stay, as `php -S` keeps running
 * after a fatal error. Run in one process, the watchdog's kill ended the whole server.
 *
 * The socket lives in a private temp dir (unless `--listen unix:PATH` names one), removed on
 * every way out that runs code: a stop, a second signal, a port in use, a crash.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Config } from './config.js';
import { startDevHttp, type DevHttp } from './dev-http.js';
import { LodestoneError } from '../errors.js';
import type { ListenTarget } from '../listen.js';
import type { Logger } from '../log.js';
import { runPrimary } from '../process/manager.js';

/**
 * Runs the development server until a stop signal; resolves to the exit code, rejects with
 * LS_LISTEN_FAILED when the `--http` port or the socket cannot be had (nothing is left behind).
 * `config.http` must be set; the forked worker runs `serve`'s FastCGI path with the same
 * command line, and cli.ts gives its pipeline the `dev` option there. `onBound` runs once the
 * socket is had (cli.ts's LS_RUNNING_AS_ROOT warning).
 */
export async function runDevServer(config: Config, log: Logger, reopenLogs: () => void, onBound: () => void): Promise<number> {
  const http = config.http!;
  const devDir = config.listen === null ? fs.mkdtempSync(path.join(os.tmpdir(), 'lodestone-dev-')) : null;
  const removeDevDir = (): void => {
    if (devDir !== null) fs.rmSync(devDir, { recursive: true, force: true });
  };
  // An uncaught error here would skip the finally below; 'exit' still runs, synchronously.
  process.once('exit', removeDevDir);
  // (config.ts has made sure --listen, if given, is a unix socket.)
  const target: ListenTarget = devDir !== null ? { kind: 'unix', path: path.join(devDir, 'fastcgi.sock') } : config.listen!;
  const socket = target.kind === 'unix' ? target.path : '';
  let dev: DevHttp | null = null;
  try {
    let workerListens = (): void => {};
    const ready = new Promise<void>((resolve) => (workerListens = resolve));
    // The port first: one in use stops the start before any worker is forked.
    try {
      dev = await startDevHttp({ ...http, socket, root: config.root, fileRoots: config.files.roots, log, ready });
    } catch (err) {
      throw new LodestoneError('LS_LISTEN_FAILED', `--http ${http.host}:${http.port}: ${(err as Error).message}`);
    }
    const front = dev;
    return await runPrimary({
      workers: 1,
      target,
      socketMode: config.socketMode,
      // The development server does not switch users (config.ts refuses user with http).
      socketOwner: config.socketOwner,
      log,
      watchdogMs: config.watchdogMs,
      onBound,
      reopenLogs,
      // The URL once requests can be answered: script requests wait for `ready` till then.
      onListening: () => {
        workerListens();
        process.stdout.write(`Lodestone development server: ${front.url}/ (scripts from ${config.root}); Ctrl-C stops it\n`);
      },
      onStop: () => void front.close(),
    });
  } finally {
    await dev?.close();
    removeDevDir();
    process.off('exit', removeDevDir);
  }
}
