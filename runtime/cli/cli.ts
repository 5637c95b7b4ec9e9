/**
 * The `lodestone` command line: `serve`, `check` and `config SERVER`, which take the same options
 * and load the same configuration. USAGE below is the contract (README's "Command line" section
 * is kept in step with it by test/unit/readme-cli.test.ts). `serve` starts the development HTTP
 * front end (`--http`), the process manager's primary (`--workers N`), or one process that
 * serves FastCGI with the handler the options ask for (`--workers 0`, and each worker).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ScriptStore } from '../engines/script-store.js';
import { runCheck } from './check.js';
import { loadConfig, type Config } from './config.js';
import { diagnostic } from '../handlers/diagnostic.js';
import type { ScriptEngine } from '../engines/engine.js';
import { createJsEngine } from '../engines/js.js';
import { LuaEngine } from '../engines/lua.js';
import { LodestoneError } from '../errors.js';
import type { Handler } from '../fastcgi/server/connection.js';
import { FastcgiServer } from '../fastcgi/server/server.js';
import { describeTarget, inheritedTarget, type ListenTarget } from '../listen.js';
import { Logger } from '../log.js';
import { createContentCache } from '../content-cache/content-cache.js';
import type { HostServices } from '../engines/host.js';
import { BackendPool } from '../fastcgi/client/pool.js';
import { runDevServer } from './dev-server.js';
import { Files, type ScriptSources } from '../files/files.js';
import { createStatusHandler, type RunCounters } from '../handlers/status.js';
import { SlowLog } from '../engines/slow-log.js';
import { createScriptHandler } from '../handlers/pipeline.js';
import { createStatAccelHandler } from '../handlers/stat-accel.js';
import { frontEnds, frontendConfig, isFrontEnd } from './frontend-config.js';
import { startWatchdog } from '../process/watchdog.js';
import { accessLogged, logSink, reopenLogFiles } from '../process/log-files.js';
import { runPrimary } from '../process/manager.js';
import { setSocketAccess } from '../process/shared-socket.js';
import { gatherStatus, isManagedWorker, onPrimary, provideStatus, reportListening, reportRetiring } from '../process/worker.js';
import { dropPrivileges, handOver, isRoot, type RunAs } from '../process/privileges.js';
import { version } from '../version.js';

const USAGE = `Usage: lodestone serve [options]
       lodestone check [options]      load the configuration and compile every script under
                                      --root (or only --script); exit 0 when all compile, 1 if not
       lodestone config nginx|lighttpd|apache|caddy [options]
                                      print a front-end config snippet for these options

Options:
  --listen SPEC      unix:/path.sock | tcp:HOST:PORT | fd:0 | systemd
                     (default: an inherited socket on fd 0 or from systemd,
                     else tcp:127.0.0.1:9000)
  --root DIR         directory scripts are served from (default: .)
  --script FILE      one front-controller script for every request
  --cache-dir DIR    keep compiled Lua bytecode here across restarts
  --config FILE      TOML config file (JSON if it ends in .json; see README, "Configuration")
  --log-level LEVEL  error | warn | info | debug (default: info)
  --log-file PATH    write log lines to PATH instead of stderr (reopened on SIGUSR2)
  --access-log PATH  one line per request (nginx's combined format + time and script) to
                     PATH or stderr; default off
  --diagnostic       answer every request with the built-in diagnostic responder
  --stat-accel       answer every request as fcgi-stat-accel: stat SCRIPT_FILENAME,
                     then let the web server send it (X-Sendfile / X-Accel-Redirect)
  --stat-threads N   threads that stat files (libuv's pool, UV_THREADPOOL_SIZE; default 4)
  --file-root DIR    a directory stat()/sendfile() may reach (repeatable; default: --root)
  --sendfile MODE    auto | x-sendfile | x-sendfile2 | x-lighttpd-send-file | x-accel-redirect
  --cache SPEC       the scripts' content cache: memory (default, per worker),
                     redis://HOST:PORT[/DB] or unix:/path/to/redis.sock (shared)
  --backend NAME=SERVER[,SERVER...]
                     a FastCGI pool for pass(NAME), e.g. php=unix:/run/php/php-fpm.sock
                     (repeatable; servers are unix:/path or HOST:PORT)
  --workers N        worker processes under the process manager, sharing the socket
                     (default: one per core, or PHP_FCGI_CHILDREN); 0: one process, no manager
  --max-requests N   a worker retires after N requests and is replaced (PHP_FCGI_MAX_REQUESTS)
  --user USER        started as root: bind the socket, then run scripts as USER (php-fpm's
                     pool user); without it a root start logs LS_RUNNING_AS_ROOT
  --group GROUP      the group for --user (default: USER's primary group)
  --http HOST:PORT   development HTTP front end (like php -S): serves --root over HTTP,
                     scripts through FastCGI on a private socket, X-Sendfile done itself
  -h, --help         show this help
  -v, --version      print the version
`;

/**
 * The options of `serve`, shared by `check` and `config` so they load the very configuration
 * serve would.
 */
const serveOptions = {
  listen: { type: 'string' },
  root: { type: 'string' },
  config: { type: 'string' },
  'log-level': { type: 'string' },
  diagnostic: { type: 'boolean' },
  script: { type: 'string' },
  'cache-dir': { type: 'string' },
  'stat-accel': { type: 'boolean' },
  'stat-threads': { type: 'string' },
  'file-root': { type: 'string', multiple: true },
  sendfile: { type: 'string' },
  cache: { type: 'string' },
  backend: { type: 'string', multiple: true },
  http: { type: 'string' },
  workers: { type: 'string' },
  'log-file': { type: 'string' },
  'access-log': { type: 'string' },
  'max-requests': { type: 'string' },
  user: { type: 'string' },
  group: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
} as const satisfies ParseArgsConfig['options'];

type Values = ReturnType<typeof parseArgs<{ options: typeof serveOptions; allowPositionals: true }>>['values'];

/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: withNegativeValues(argv), allowPositionals: true, options: serveOptions });
  } catch (err) {
    return usageError(parseArgsMessage(err));
  }
  const { values, positionals } = parsed;
  if (values.version) {
    process.stdout.write(`lodestone ${version()}\n`);
    return 0;
  }
  if (values.help || positionals.length === 0) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  const [command, ...rest] = positionals;
  const known = (command === 'serve' || command === 'check') ? rest.length === 0 : command === 'config' && rest.length === 1;
  if (!known) return usageError(`unknown command ${JSON.stringify(positionals.join(' '))}`);
  const frontEnd = rest[0];
  if (frontEnd !== undefined && !isFrontEnd(frontEnd)) {
    return usageError(`config: unknown web server ${JSON.stringify(frontEnd)}; use ${frontEnds.join(', ')}`);
  }
  let config: Config;
  try {
    config = configFrom(values);
  } catch (err) {
    return fatal(err);
  }
  if (command === 'check') return runCheck(config, process.stdout, process.stderr);
  if (frontEnd !== undefined) {
    process.stdout.write(frontendConfig(frontEnd, config));
    return 0;
  }
  return serve(config);
}

function configFrom(values: Values): Config {
  return loadConfig({
    listen: values.listen,
    root: values.root,
    config: values.config,
    logLevel: values['log-level'],
    diagnostic: values.diagnostic,
    script: values.script,
    cacheDir: values['cache-dir'],
    statAccel: values['stat-accel'],
    statThreads: values['stat-threads'],
    fileRoots: values['file-root'],
    sendfile: values.sendfile,
    cache: values.cache,
    backends: values.backend,
    http: values.http,
    workers: values.workers,
    logFile: values['log-file'],
    accessLog: values['access-log'],
    maxRequests: values['max-requests'],
    user: values.user,
    group: values.group,
  });
}

async function serve(config: Config): Promise<number> {
  let log: Logger;
  try {
    log = new Logger(config.logLevel, logSink(config.logFile));
  } catch (err) {
    return fatal(new LodestoneError('LS_CONFIG_INVALID', `logFile: cannot open ${config.logFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`));
  }
  if (config.http !== null && !isManagedWorker()) {
    // The HTTP side here, the scripts in a worker the manager replaces when it dies.
    try {
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
  checkThreadPool(config, log);
  const stopWatchdog = config.watchdogMs > 0 ? startWatchdog(config.watchdogMs, log, config.logFile === 'stderr' ? null : config.logFile) : null;
  const scripts = !config.diagnostic && !config.statAccel;
  const files = new Files(config.files, scripts ? scriptSources(config) : null);
  // Created only where scripts run: a Redis client reconnects in the background forever.
  const cache = scripts ? createContentCache(config.cache, log) : null;
  const backends = new Map<string, BackendPool>();
  if (scripts) for (const [name, options] of config.backends) backends.set(name, new BackendPool(options, log));
  const counters: RunCounters = { limitHits: 0, scriptErrors: 0 };
  const slowLog = config.slowRequestMs > 0 ? new SlowLog(config.slowRequestMs, log) : null;
  const inner = config.diagnostic
    ? diagnostic
    : config.statAccel
      ? createStatAccelHandler(files, log)
      : await scriptHandler(config, log, { files, cache, backends, cacheFiles: config.cacheFiles, slowLog }, counters);
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
    warnIfRoot(config, log);
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
        .then(() => Promise.allSettled([cache?.close(), ...[...backends.values()].map((pool) => pool.close())]))
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
 * What the script store would run, by real path: the front controller alone with --script
 * (a PHP docroot's browser .js is not ours), else every .lua/.js under the root.
 */
function scriptSources(config: Config): ScriptSources {
  if (config.script !== null) {
    const front = fs.realpathSync(config.script);
    return (file) => file === front;
  }
  const root = fs.realpathSync(config.root) + path.sep;
  return (file) => file.startsWith(root) && SCRIPT_EXTENSIONS.includes(path.extname(file));
}

/** The script pipeline: both engines over one script store. */
async function scriptHandler(config: Config, log: Logger, services: HostServices, counters: RunCounters): Promise<Handler> {
  const engines = new Map<string, ScriptEngine>();
  for (const engine of [new LuaEngine(), await createJsEngine()]) engines.set(engine.extension, engine);
  const store = new ScriptStore({
    root: config.root,
    engines,
    statIntervalMs: config.statIntervalMs,
    maxEntries: config.scriptCache.maxEntries,
    maxBytes: config.scriptCache.maxBytes,
    maxScriptBytes: config.scriptCache.maxScriptBytes,
    cacheDir: config.cacheDir,
    log,
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

/**
 * A command line that cannot be run: one line naming the flag or command, then where to look.
 * Exit 2, as for a bad configuration.
 */
function usageError(message: string): number {
  process.stderr.write(`lodestone: LS_CONFIG_INVALID: ${message}\ntry 'lodestone --help'\n`);
  return 2;
}

/** parseArgs's multi-line texts as one line naming the flag. */
function parseArgsMessage(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const flag = /'(-{1,2}[^' ]+)/.exec(e.message ?? '')?.[1];
  if (flag !== undefined && e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `${flag}: unknown option`;
  if (flag !== undefined && e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') return `${flag}: needs a value`;
  return (e.message ?? String(err)).split('\n')[0]!;
}

/**
 * `--workers -1` as `--workers=-1`: parseArgs takes a value that starts with "-" for the next
 * flag and reports "ambiguous"; a number there is meant as the value, which validation then
 * judges with the field's own message.
 */
function withNegativeValues(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const next = argv[i + 1];
    const name = arg.startsWith('--') ? arg.slice(2) : null;
    const option = name !== null ? (serveOptions as Record<string, { type: string }>)[name] : undefined;
    if (option?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
    } else out.push(arg);
  }
  return out;
}

/**
 * Reports a start-up failure. Exit codes as the README says: 2 for a bad command line or
 * configuration (LS_CONFIG_INVALID, with the help hint when a flag is at fault), 1 for the rest
 * (a socket that cannot be opened, a crash).
 */
function fatal(err: unknown): number {
  if (err instanceof LodestoneError) {
    // A flag at fault gets the help hint; a config file's content (--config: file:line) does not.
    if (err.code === 'LS_CONFIG_INVALID' && err.message.startsWith('--') && !err.message.startsWith('--config:')) {
      return usageError(err.message);
    }
    process.stderr.write(`lodestone: ${err.code}: ${err.message}\n`);
    return err.code === 'LS_CONFIG_INVALID' ? 2 : 1;
  }
  process.stderr.write(`lodestone: ${(err as Error).stack ?? String(err)}\n`);
  return 1;
}
