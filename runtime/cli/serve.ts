/**
 * `lodestone serve` once the configuration is loaded: the development HTTP front end, the
 * process manager's primary, or one process serving FastCGI (`--workers 0`, and each worker:
 * serve-here.ts, imported only then). Apart from cli.ts, which only reads the command line,
 * because this is what starts: users, sockets and the processes.
 */
import v8 from 'node:v8';
import type { Config } from './config.js';
import { fatal } from './exit.js';
import { LodestoneError } from '../errors.js';
import { inheritedTarget } from '../listen.js';
import { Logger } from '../log.js';
import { logSink, reopenLogFiles } from '../process/log-files.js';
import { runPrimary } from '../process/manager.js';
import { isManagedWorker } from '../process/worker.js';
import { dropPrivileges, handOver, isRoot, type RunAs } from '../process/privileges.js';

/**
 * Turns V8's compilers back on in a process that will answer requests: the launcher
 * (bin/lodestone.js) starts every `serve` without them, for the process manager's primary,
 * and leaves here the ones that were on by default.
 */
function resumeCompilers(): void {
  const key = Symbol.for('lodestone.compilersDeferred');
  const deferred = (globalThis as Record<symbol, unknown>)[key];
  if (!Array.isArray(deferred)) return;
  delete (globalThis as Record<symbol, unknown>)[key];
  for (const compiler of deferred) v8.setFlagsFromString(`--${String(compiler)}`);
}

/** Starts serving; resolves to the exit code once stopped (or at once when the start fails). */
export async function serve(config: Config): Promise<number> {
  // Only the FastCGI process manager's primary serves no requests.
  if (config.http !== null || config.workers === 0 || isManagedWorker()) resumeCompilers();
  let log: Logger;
  try {
    log = new Logger(config.logLevel, logSink(config.logFile));
  } catch (err) {
    return fatal(new LodestoneError('LS_CONFIG_INVALID', `logFile: cannot open ${config.logFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`));
  }
  if (config.http !== null && !isManagedWorker()) {
    // The HTTP side here, the scripts in a worker the manager replaces when it dies.
    try {
      const { runDevServer } = await import('./dev-server.js');
      return await runDevServer(config, log, reopenLogFiles, () => warnIfRoot(config, log));
    } catch (err) {
      return fatal(err);
    }
  }
  const runAs = switchTo(config, log);
  const socketOwner = config.socketOwner ?? (runAs && { uid: runAs.uid, gid: runAs.gid });
  // As root, the files the script-running processes write are made theirs first (the primary
  // does it again on SIGUSR2, so they can reopen what logrotate recreated).
  const handOverFiles = (): void => {
    if (runAs) handOver(runAs, workerPaths(config));
  };
  if (config.workers > 0 && !isManagedWorker()) {
    const target = config.listen ?? inheritedTarget() ?? { kind: 'tcp', host: '127.0.0.1', port: 9000 };
    try {
      handOverFiles();
      return await runPrimary({
        workers: config.workers,
        target,
        socketMode: config.socketMode,
        socketOwner,
        log,
        watchdogMs: config.watchdogMs,
        onBound: () => warnIfRoot(config, log),
        reopenLogs: () => {
          reopenLogFiles();
          try {
            handOverFiles();
          } catch (err) {
            log.error('LS_CONFIG_INVALID', 'cannot hand the reopened log files to the user', { error: (err as Error).message });
          }
        },
      });
    } catch (err) {
      return fatal(err);
    }
  }
  if (runAs && isManagedWorker()) {
    // A worker: its socket came from the primary, so root is not needed for anything more.
    try {
      dropPrivileges(runAs);
    } catch (err) {
      return fatal(err);
    }
  } else if (runAs) {
    try {
      handOverFiles();
    } catch (err) {
      return fatal(err);
    }
  }
  // Everything of the request path is loaded only here: the primary, which forks and
  // supervises, never imports the engines, the handlers or the files layer.
  const { serveHere } = await import('./serve-here.js');
  return serveHere(config, log, runAs, socketOwner, () => warnIfRoot(config, log));
}

/**
 * Who the script-running processes will be: `config.runAs` when started as root. Logs, once
 * (the primary, or the one process), that `user` is ignored when not started as root (as
 * php-fpm and nginx say).
 */
function switchTo(config: Config, log: Logger): RunAs | null {
  const worker = isManagedWorker();
  if (!isRoot()) {
    const r = config.runAs;
    if (r && !worker && (r.uid !== process.getuid?.() || r.gid !== process.getgid?.())) {
      log.warn('LS_CONFIG_INVALID', 'user/group ignored: switching users needs a start as root', { user: r.user, group: r.group });
    }
    return null;
  }
  return config.runAs;
}

/**
 * LS_RUNNING_AS_ROOT, once, from the primary or the one process, after the socket is had (a
 * start that fails stays one clear line).
 */
function warnIfRoot(config: Config, log: Logger): void {
  if (isRoot() && config.runAs === null && !isManagedWorker()) {
    log.warn('LS_RUNNING_AS_ROOT', 'running as root: scripts run as root; set user (and group) to run them unprivileged', { pid: process.pid });
  }
}

/** What the script-running processes write: log files, the bytecode and cached-body directories. */
function workerPaths(config: Config): { files: string[]; dirs: string[] } {
  const files = [config.logFile, config.accessLog].filter((f): f is string => f !== null && f !== 'stderr');
  const dirs = [config.cacheDir, config.cacheFiles?.dir ?? null].filter((d): d is string => d !== null);
  return { files, dirs };
}

