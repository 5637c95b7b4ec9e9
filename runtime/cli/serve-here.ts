/**
 * The process that serves requests: a worker under the process manager, or the one process of
 * `--workers 0`. It builds the handler (scripts, stat-accel or the diagnostic responder, the
 * status page and the access log), listens, and stops gracefully on a signal. Apart from
 * serve.ts, and imported by it only when this process serves, so the primary (which forks and
 * supervises) never loads the request path: engines, handlers, files, caches.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ScriptStore } from '../engines/script-store.js';
import { createLuaEngine } from '../engines/lua-engines.js';
import type { Config } from './config.js';
import { fatal } from './exit.js';
import { diagnostic } from '../handlers/diagnostic.js';
import type { ScriptEngine } from '../engines/engine.js';
import { LodestoneError } from '../errors.js';
import type { Handler } from '../fastcgi/server/connection.js';
import { FastcgiServer } from '../fastcgi/server/server.js';
import { describeTarget, inheritedTarget, type ListenTarget } from '../listen.js';
import type { Logger } from '../log.js';
import { createContentCache } from '../content-cache/content-cache.js';
import type { HostServices } from '../engines/host.js';
import { BackendPool } from '../fastcgi/client/pool.js';
import { FetchClient } from '../fetch/fetch-client.js';
import { Files, type ScriptSources } from '../files/files.js';
import { createStatusHandler, type RunCounters } from '../handlers/status.js';
import { SlowLog } from '../engines/slow-log.js';
import { createScriptHandler } from '../handlers/pipeline.js';
import { createStatAccelHandler } from '../handlers/stat-accel.js';
import { startHeartbeat, startWatchdog } from '../process/watchdog.js';
import { accessLogged, reopenLogFiles } from '../process/log-files.js';
import { setSocketAccess, type SocketOwner } from '../process/shared-socket.js';
import { gatherStatus, isManagedWorker, onPrimary, provideStatus, reportListening, reportRetiring, WATCHDOG_BOARD_ENV } from '../process/worker.js';
import { dropPrivileges, type RunAs } from '../process/privileges.js';

/**
 * Serves requests in this process until a signal stops it; resolves with the exit status.
 * `runAs`: the user to switch to after listening (one process started as root); `warnIfRoot`
 * says LS_RUNNING_AS_ROOT once the socket is had.
 */
export async function serveHere(config: Config, log: Logger, runAs: RunAs | null, socketOwner: SocketOwner, warnIfRoot: () => void): Promise<number> {
  checkThreadPool(config, log);
  // Under the manager the primary watches (heartbeats and a scoreboard it opened for us); alone, a thread does.
  const board = isManagedWorker() ? process.env[WATCHDOG_BOARD_ENV] : undefined;
  const stopWatchdog =
    config.watchdogMs <= 0
      ? null
      : board !== undefined
        ? startHeartbeat(config.watchdogMs, Number(board))
        : startWatchdog(config.watchdogMs, log, config.logFile === 'stderr' ? null : config.logFile);
  const scripts = !config.diagnostic && !config.statAccel;
  const files = new Files(config.files, scripts ? scriptSources(config) : null);
  // Created only where scripts run: a Redis client reconnects in the background forever.
  const cache = scripts ? createContentCache(config.cache, log) : null;
  const backends = new Map<string, BackendPool>();
  if (scripts) for (const [name, options] of config.backends) backends.set(name, new BackendPool(options, log));
  // One per worker: its keep-alive pools and its concurrency bound are the worker's, not a request's.
  const fetchClient = scripts ? new FetchClient(config.fetch, log) : null;
  const counters: RunCounters = { limitHits: 0, scriptErrors: 0 };
  const slowLog = config.slowRequestMs > 0 ? new SlowLog(config.slowRequestMs, log) : null;
  const inner = config.diagnostic
    ? diagnostic
    : config.statAccel
      ? createStatAccelHandler(files, log)
      : scriptHandler(config, log, { files, cache, backends, cacheFiles: config.cacheFiles, slowLog, fetch: fetchClient }, counters);
  let server: FastcgiServer | null = null;
  const measured =
    config.statusPath === null && config.slowRequestMs === 0
      ? inner
      : createStatusHandler({
          path: config.statusPath,
          slowMs: config.slowRequestMs,
          log,
          inner,
          server: () => server!,
          counters,
          ...(isManagedWorker() ? { gather: gatherStatus, provide: provideStatus } : {}),
        })
  // Outermost, so status page requests count too.
  let logged: Handler;
  try {
    logged = config.accessLog === null ? measured : accessLogged(measured, config.accessLog);
  } catch (err) {
    return fatal(new LodestoneError('LS_CONFIG_INVALID', `accessLog: cannot open ${config.accessLog}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`));
  }
  const handler = config.workerMaxRequests > 0 && isManagedWorker() ? retireAfter(logged, config.workerMaxRequests) : logged;
  server = new FastcgiServer({ limits: config.limits, handler, log, webServerAddrs: config.webServerAddrs });
  const target: ListenTarget = config.listen ?? inheritedTarget() ?? { kind: 'tcp', host: '127.0.0.1', port: 9000 };
  try {
    await server.listen(target);
  } catch (err) {
    return fatal(err);
  }
  try {
    if (target.kind === 'unix' && !isManagedWorker()) setSocketAccess(target.path, config.socketMode, socketOwner);
    // One process, no manager: bound as root, it gives up root before the first request.
    if (runAs && !isManagedWorker()) dropPrivileges(runAs);
    warnIfRoot();
  } catch (err) {
    await server.close();
    return fatal(err);
  }
  // systemd's convention: the fds are ours; do not pass the variables on to children.
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_PID;
  const bound = server.address();
  const listening: ListenTarget =
    target.kind === 'tcp' && bound !== null && typeof bound === 'object' ? { ...target, port: bound.port } : target;
  if (isManagedWorker()) {
    log.info('-', 'worker listening', { listen: describeTarget(listening), pid: process.pid });
    reportListening(listening);
  } else {
    log.info('-', 'lodestone listening', { listen: describeTarget(listening), root: config.root, pid: process.pid });
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        log.warn('LS_FORCED_STOP', 'second signal: stopping now', { signal });
        resolve(1);
        return;
      }
      stopping = true;
      log.info('-', 'stopping gracefully', { signal, inFlight: server.activeRequests });
      void server
        .close()
        .then(() => Promise.allSettled([cache?.close(), fetchClient?.close(), ...[...backends.values()].map((pool) => pool.close())]))
        .then(() => stopWatchdog?.())
        .then(() => resolve(0));
    };
    // SIGUSR1 is libfcgi's graceful stop, which lighttpd's kill-signal docs rely on.
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGUSR1', 'SIGQUIT'] as const) process.on(signal, stop);
    // Reload is the manager's (a HUP sent to the whole process group must not kill a worker);
    // without a manager there is nothing to reload, so HUP reopens the log files as USR2 does.
    process.on('SIGHUP', isManagedWorker() ? () => {} : reopenLogFiles);
    process.on('SIGUSR2', reopenLogFiles);
    if (isManagedWorker()) {
      onPrimary({
        stop: () => {
          if (!stopping) stop('SIGTERM');
        },
        reopenLogs: () => {
          reopenLogFiles();
          // Said by each worker, so a rotation can be seen (and waited for) to have reached all.
          log.info('-', 'worker reopened its log files', { pid: process.pid });
        },
      });
    }
  });
}

/**
 * Counts requests as they start; at `max` tells the primary, which forks the replacement and,
 * once that listens, asks this worker to stop (so a few requests past `max` may still arrive).
 */
function retireAfter(inner: Handler, max: number): Handler {
  let served = 0;
  return (req, res) => {
    if (++served === max) reportRetiring(served);
    return inner(req, res);
  };
}

/** Extensions the script store runs (the engines' `extension`). */
const SCRIPT_EXTENSIONS = ['.lua', '.js'];

/**
 * What the script store would run or require, by real path: the front controller alone with
 * --script (a PHP docroot's browser .js is not ours), else every .lua/.js under the root; and
 * every .lua/.js in modules.paths.
 */
function scriptSources(config: Config): ScriptSources {
  // Module sources are never sent either, whatever the front controller: they are code. Each
  // directory as configured and, when it exists now, as its real path (a directory made later
  // is matched by the first).
  const moduleDirs = config.modules.paths.flatMap((dir) => {
    try {
      return [dir + path.sep, fs.realpathSync(dir) + path.sep];
    } catch {
      return [dir + path.sep];
    }
  });
  const isModule = (file: string): boolean => SCRIPT_EXTENSIONS.includes(path.extname(file)) && moduleDirs.some((dir) => file.startsWith(dir));
  if (config.script !== null) {
    const front = fs.realpathSync(config.script);
    return (file) => file === front || isModule(file);
  }
  const root = fs.realpathSync(config.root) + path.sep;
  return (file) => (file.startsWith(root) && SCRIPT_EXTENSIONS.includes(path.extname(file))) || isModule(file);
}

/**
 * The script pipeline: both engines over one script store. Each engine is made (and its module
 * imported) when the first script of its language is compiled: a Lua-only site never loads
 * QuickJS, and the primary, which runs no script, loads neither.
 */
function scriptHandler(config: Config, log: Logger, services: HostServices, counters: RunCounters): Handler {
  const engines = new Map<string, () => Promise<ScriptEngine>>([
    ['.lua', () => createLuaEngine(config.luaEngine)],
    ['.js', async () => (await import('../engines/js.js')).createJsEngine()],
  ]);
  const store = new ScriptStore({
    root: config.root,
    engines,
    statIntervalMs: config.statIntervalMs,
    maxEntries: config.scriptCache.maxEntries,
    maxBytes: config.scriptCache.maxBytes,
    maxScriptBytes: config.scriptCache.maxScriptBytes,
    cacheDir: config.cacheDir,
    log,
    modulePaths: config.modules.paths,
  });
  const raw = config.rawOutput;
  return createScriptHandler({
    store,
    root: config.root,
    limits: config.scriptLimits,
    log,
    script: config.script,
    raw: raw === true ? () => true : (file) => raw.has(file),
    ...services,
    counters,
    // Only the development server shows errors on the page (see PipelineOptions.dev).
    dev: config.http !== null,
  });
}

/**
 * libuv sizes its thread pool once, from UV_THREADPOOL_SIZE, when the pool first starts; in
 * an ES module entry Node's loader has started it before any of our code runs, so
 * bin/lodestone.js (CommonJS) sets the variable from --stat-threads / files.statThreads first.
 * Started some other way, the setting cannot take effect: say so rather than pretend.
 */
function checkThreadPool(config: Config, log: Logger): void {
  const actual = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  if (actual !== config.files.statThreads) {
    log.warn('LS_CONFIG_INVALID', 'files.statThreads cannot take effect: the thread pool already started; run bin/lodestone.js', {
      statThreads: config.files.statThreads,
      threads: actual,
    });
  }
}
