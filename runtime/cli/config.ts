/**
 * Configuration: defaults, then the config file (TOML, or JSON for a .json file), then the environment (libfcgi's
 * FCGI_WEB_SERVER_ADDRS), then CLI flags. Validated once at start, field by field, and frozen;
 * an error names the field in one line (`LS_CONFIG_INVALID`), never a stack trace.
 */
import fs from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import path from 'node:path';
import os from 'node:os';
import { LodestoneError } from '../errors.js';
import { defaultScriptLimits, type ScriptLimits } from '../engines/engine.js';
import { defaultLimits, type Limits } from '../fastcgi/server/limits.js';
import { defaultContentCacheConfig, type ContentCacheConfig } from '../content-cache/content-cache.js';
import { DEFAULT_MAX_SCRIPT_BYTES } from '../engines/script-store.js';
import type { CacheFiles } from '../engines/host.js';
import { defaultPoolOptions, parseServer, type PoolOptions } from '../fastcgi/client/pool.js';
import { insideRoots } from '../files/confine.js';
import { defaultFiles, type FilesConfig, type SendfileMode } from '../files/files.js';
import { parseListen, type ListenTarget } from '../listen.js';
import { levels, type Level } from '../log.js';
import { WORKER_LISTEN_ENV } from '../process/manager.js';
import { resolveRunAs, resolveSocketOwner, type RunAs } from '../process/privileges.js';

/** The validated, frozen configuration of a `serve` run. */
export interface Config {
  /** Where to listen; null means "inherited fd or systemd, else tcp:127.0.0.1:9000". */
  readonly listen: ListenTarget | null;
  /** Directory scripts are served from (absolute). */
  readonly root: string;
  readonly logLevel: Level;
  /** File mode for a unix socket (like php-fpm's listen.mode); null keeps the umask's. */
  readonly socketMode: number | null;
  /**
   * Owner of a unix socket (php-fpm's listen.owner / listen.group; -1 keeps that id); null:
   * the run-as user and group when Lodestone switches users, else as created.
   */
  readonly socketOwner: { readonly uid: number; readonly gid: number } | null;
  /**
   * The user and group the script-running processes switch to when started as root (`user`,
   * `group`, `--user`, `--group`, like php-fpm's pool user); null: no switch.
   */
  readonly runAs: RunAs | null;
  /** TCP peers allowed to connect; null allows all. */
  readonly webServerAddrs: readonly string[] | null;
  /** Serve every request with the built-in diagnostic responder. */
  readonly diagnostic: boolean;
  readonly limits: Limits;
  /** A front-controller script for every request (absolute), or null to follow SCRIPT_FILENAME. */
  readonly script: string | null;
  /** Recheck a cached script's file at most this often (ms); 0 checks every request. */
  readonly statIntervalMs: number;
  /** Directory for compiled Lua bytecode that survives restarts; null disables it. */
  readonly cacheDir: string | null;
  /** Bounds of the compiled-script cache, and the largest script file read at all. */
  readonly scriptCache: { readonly maxEntries: number; readonly maxBytes: number; readonly maxScriptBytes: number };
  /** Per-request script limits. */
  readonly scriptLimits: ScriptLimits;
  /**
   * Raw-output mode (scripts print their own CGI header block, as lua-fastcgi-magnet's did):
   * true for every script under the root, else the real paths of the scripts that use it.
   */
  readonly rawOutput: true | ReadonlySet<string>;
  /** File access: roots, stat threads and cache, escalation header, prefetch. */
  readonly files: FilesConfig;
  /** Answer every request as fcgi-stat-accel did: stat SCRIPT_FILENAME, then escalate. */
  readonly statAccel: boolean;
  /** The content cache behind the script API's `cache` (embedded per worker, or Redis). */
  readonly cache: ContentCacheConfig;
  /** Large cached response bodies go to files here (inside files.roots), sent with sendfile. */
  readonly cacheFiles: CacheFiles | null;
  /** FastCGI backend pools scripts can pass() requests to, by name. */
  readonly backends: ReadonlyMap<string, PoolOptions>;
  /** SCRIPT_NAME answered with the status page (php-fpm's pm.status_path); null: none. */
  readonly statusPath: string | null;
  /** Requests slower than this (ms) are counted and logged (LS_SLOW_REQUEST); 0: off. */
  readonly slowRequestMs: number;
  /** The development HTTP front end (`--http`, like `php -S`); null: FastCGI only. */
  readonly http: { readonly host: string; readonly port: number } | null;
  /**
   * Worker processes under the process manager (`--workers`, PHP_FCGI_CHILDREN; default: one per
   * core); 0 serves in this one process without a manager.
   */
  readonly workers: number;
  /** Requests a worker serves before it retires and is replaced (PHP_FCGI_MAX_REQUESTS); 0: no limit. */
  readonly workerMaxRequests: number;
  /**
   * A process whose event loop is stuck this long (ms) is killed by its watchdog thread and,
   * under the manager, replaced; 0: off. Must exceed scriptLimits.cpuMs, which stops ordinary
   * runaway scripts from inside.
   */
  readonly watchdogMs: number;
  /** Where log lines go: a file path, or "stderr". */
  readonly logFile: string;
  /** The access log: a file path, "stderr", or null (off). */
  readonly accessLog: string | null;
}

/** Defaults of the script cache: enough for a large site, bounded in memory. */
export const defaultScriptCache = Object.freeze({ maxEntries: 1000, maxBytes: 64 * 1024 * 1024, maxScriptBytes: DEFAULT_MAX_SCRIPT_BYTES });

/** Values given on the command line; undefined means "not given". */
export interface CliValues {
  listen?: string | undefined;
  root?: string | undefined;
  config?: string | undefined;
  logLevel?: string | undefined;
  diagnostic?: boolean | undefined;
  script?: string | undefined;
  cacheDir?: string | undefined;
  statAccel?: boolean | undefined;
  statThreads?: string | undefined;
  fileRoots?: string[] | undefined;
  sendfile?: string | undefined;
  /** `--cache`: "memory", a redis:// URL, or unix:/path to a Redis socket. */
  cache?: string | undefined;
  /** `--backend NAME=SERVER[,SERVER...]`, repeatable. */
  backends?: string[] | undefined;
  /** `--http HOST:PORT`: the development HTTP front end. */
  http?: string | undefined;
  /** `--workers N`. */
  workers?: string | undefined;
  /** `--max-requests N`. */
  maxRequests?: string | undefined;
  /** `--log-file PATH|stderr`. */
  logFile?: string | undefined;
  /** `--access-log PATH|stderr`. */
  accessLog?: string | undefined;
  /** `--user NAME|UID`. */
  user?: string | undefined;
  /** `--group NAME|GID`. */
  group?: string | undefined;
}

const topFields = new Set([
  'listen',
  'root',
  'logLevel',
  'socketMode',
  'socketOwner',
  'user',
  'group',
  'webServerAddrs',
  'diagnostic',
  'limits',
  'script',
  'statIntervalMs',
  'cacheDir',
  'scriptCache',
  'scriptLimits',
  'rawOutput',
  'files',
  'statAccel',
  'cache',
  'backends',
  'statusPath',
  'slowRequestMs',
  'http',
  'workers',
  'workerMaxRequests',
  'watchdogMs',
  'logFile',
  'accessLog',
]);

const sendfileModes: readonly SendfileMode[] = ['auto', 'x-sendfile', 'x-sendfile2', 'x-lighttpd-send-file', 'x-accel-redirect'];
const filesFields = new Set(['roots', 'statThreads', 'statCacheMs', 'statCacheEntries', 'sendfile', 'accel', 'prefetch', 'allowScripts']);

function invalid(field: string, message: string): LodestoneError {
  return new LodestoneError('LS_CONFIG_INVALID', `${field}: ${message}`);
}

/**
 * Builds the configuration from the CLI values, the config file they name and the environment.
 * Throws a {@link LodestoneError} (LS_CONFIG_INVALID) whose message starts with the field name.
 */
export function loadConfig(cli: CliValues, env: NodeJS.ProcessEnv = process.env): Config {
  const file = cli.config !== undefined ? readConfigFile(cli.config) : {};
  for (const key of Object.keys(file)) {
    if (!topFields.has(key)) throw invalid(key, 'unknown field');
  }
  const baseDir = cli.config !== undefined ? path.dirname(path.resolve(cli.config)) : process.cwd();

  const listenSpec = cli.listen ?? optionalString(file, 'listen');
  let listen: ListenTarget | null = null;
  const shared = env[WORKER_LISTEN_ENV];
  if (shared !== undefined) {
    // A managed worker: it accepts on the socket its primary passed it, whatever --listen said
    // (the primary has checked that; `systemd` could not even be parsed again here, as
    // LISTEN_PID names the primary).
    listen = JSON.parse(shared) as ListenTarget;
  } else if (listenSpec !== undefined) {
    const parsed = parseListen(listenSpec, env);
    if (typeof parsed === 'string') throw invalid(cli.listen !== undefined ? '--listen' : 'listen', parsed);
    listen = parsed;
  }

  const rootField = cli.root !== undefined ? '--root' : 'root';
  const rootValue = cli.root ?? optionalString(file, 'root');
  const root = rootValue === undefined ? process.cwd() : path.resolve(cli.root !== undefined ? process.cwd() : baseDir, rootValue);
  if (!isDirectory(root)) throw invalid(rootField, `${root} is not a directory`);

  const logLevel = cli.logLevel ?? optionalString(file, 'logLevel') ?? 'info';
  if (!(levels as readonly string[]).includes(logLevel)) {
    throw invalid(cli.logLevel !== undefined ? '--log-level' : 'logLevel', `must be one of ${levels.join(', ')}`);
  }

  const filesConfig = files(file.files, cli, root, baseDir, env);
  const userField = cli.user !== undefined ? '--user' : 'user';
  const groupField = cli.group !== undefined || (cli.user !== undefined && file.group === undefined) ? '--group' : 'group';
  const user = cli.user ?? optionalString(file, 'user') ?? null;
  const group = cli.group ?? optionalString(file, 'group') ?? null;
  if (user === null && group !== null) throw invalid(groupField, `needs ${cli.group !== undefined ? '--user' : 'user'} (the group alone is not switched to)`);
  const runAs = user === null ? null : resolveRunAs(user, group, { user: userField, group: groupField });
  const ownerSpec = optionalString(file, 'socketOwner');
  const config: Config = {
    listen,
    root,
    logLevel: logLevel as Level,
    socketMode: socketMode(file.socketMode),
    socketOwner: ownerSpec !== undefined ? resolveSocketOwner(ownerSpec, 'socketOwner') : null,
    runAs,
    webServerAddrs: webServerAddrs(file.webServerAddrs, env.FCGI_WEB_SERVER_ADDRS),
    diagnostic: cli.diagnostic ?? optionalBoolean(file, 'diagnostic') ?? false,
    limits: integers('limits', file.limits, defaultLimits, 1),
    script: scriptPath(cli.script, optionalString(file, 'script'), baseDir),
    statIntervalMs: statInterval(file.statIntervalMs),
    cacheDir: resolveOptional(cli.cacheDir, optionalString(file, 'cacheDir'), baseDir),
    scriptCache: integers('scriptCache', file.scriptCache, defaultScriptCache, 1),
    scriptLimits: integers('scriptLimits', file.scriptLimits, defaultScriptLimits, 1),
    rawOutput: rawOutput(file.rawOutput, root),
    files: filesConfig,
    statAccel: cli.statAccel ?? optionalBoolean(file, 'statAccel') ?? false,
    cache: contentCache(file.cache, cli.cache, baseDir),
    cacheFiles: cacheFiles(file.cache, filesConfig, baseDir),
    statusPath: statusPath(file.statusPath),
    slowRequestMs: bounded('slowRequestMs', file.slowRequestMs, 0, 0, 86_400_000),
    http: httpListen(cli.http, optionalString(file, 'http'), env),
    backends: backends(file.backends, cli.backends, baseDir),
    workers: workerCount(cli.workers, file.workers, env.PHP_FCGI_CHILDREN, cli.http !== undefined || file.http !== undefined),
    workerMaxRequests: maxRequestsPerWorker(cli.maxRequests, file.workerMaxRequests, env.PHP_FCGI_MAX_REQUESTS),
    watchdogMs: bounded('watchdogMs', file.watchdogMs, DEFAULT_WATCHDOG_MS, 0, 86_400_000),
    logFile: logPath(cli.logFile !== undefined ? '--log-file' : 'logFile', cli.logFile ?? optionalString(file, 'logFile'), cli.logFile !== undefined ? process.cwd() : baseDir) ?? 'stderr',
    accessLog: logPath(cli.accessLog !== undefined ? '--access-log' : 'accessLog', cli.accessLog ?? optionalString(file, 'accessLog'), cli.accessLog !== undefined ? process.cwd() : baseDir),
  };
  if (config.watchdogMs !== 0 && config.watchdogMs <= config.scriptLimits.cpuMs) {
    throw invalid('watchdogMs', `must be 0 (off) or more than scriptLimits.cpuMs (${config.scriptLimits.cpuMs})`);
  }
  if (config.http !== null && config.workers > 0) {
    throw invalid(cli.http !== undefined ? '--http' : 'http', 'the development server runs its scripts in one worker of its own; drop --workers / PHP_FCGI_CHILDREN');
  }
  if (config.http !== null && config.runAs !== null) {
    throw invalid(userField, 'the development server does not switch users; start it as the user it should run as');
  }
  if (config.workers === 0 && config.workerMaxRequests > 0) {
    throw invalid(cli.maxRequests !== undefined ? '--max-requests' : 'workerMaxRequests', 'retiring workers needs the process manager: workers must be at least 1');
  }
  if (config.http !== null && config.files.sendfile === 'x-accel-redirect') {
    throw invalid(cli.http !== undefined ? '--http' : 'http', 'the development server sends X-Sendfile files itself; files.sendfile x-accel-redirect is nginx only');
  }
  // The development server's worker gets its primary's unix socket as an fd.
  if (config.http !== null && shared === undefined && config.listen !== null && config.listen.kind !== 'unix') {
    throw invalid(cli.http !== undefined ? '--http' : 'http', 'needs FastCGI on a unix socket (omit --listen, or give --listen unix:PATH)');
  }
  return Object.freeze(config);
}

const cacheFields = new Set(['backend', 'maxBytes', 'maxValueBytes', 'redis', 'fileDir', 'fileMinBytes']);
const redisFields = new Set(['url', 'socket', 'prefix', 'timeoutMs']);

function contentCache(value: unknown, fromCli: string | undefined, baseDir: string): ContentCacheConfig {
  if (value !== undefined && !isObject(value)) throw invalid('cache', 'must be an object');
  const c: Record<string, unknown> = value ?? {};
  for (const key of Object.keys(c)) {
    if (!cacheFields.has(key)) throw invalid(`cache.${key}`, 'unknown field');
  }
  const d = defaultContentCacheConfig;
  if (c.redis !== undefined && !isObject(c.redis)) throw invalid('cache.redis', 'must be an object');
  const r: Record<string, unknown> = c.redis ?? {};
  for (const key of Object.keys(r)) {
    if (!redisFields.has(key)) throw invalid(`cache.redis.${key}`, 'unknown field');
  }
  let backend: unknown = c.backend ?? d.backend;
  let url = r.url ?? null;
  let socket = r.socket ?? null;
  if (backend !== 'memory' && backend !== 'redis') throw invalid('cache.backend', 'must be "memory" or "redis"');
  if (url !== null && (typeof url !== 'string' || !/^rediss?:\/\//.test(url))) throw invalid('cache.redis.url', 'must be a redis:// or rediss:// URL');
  if (socket !== null && (typeof socket !== 'string' || socket === '')) throw invalid('cache.redis.socket', 'must be a unix socket path');
  if (fromCli !== undefined) {
    if (fromCli === 'memory') backend = 'memory';
    else if (/^rediss?:\/\//.test(fromCli)) [backend, url, socket] = ['redis', fromCli, null];
    else if (fromCli.startsWith('unix:') && fromCli.length > 5) [backend, url, socket] = ['redis', null, fromCli.slice(5)];
    else throw invalid('--cache', 'must be "memory", a redis:// URL or unix:/path/to/redis.sock');
  }
  if (backend === 'redis' && (url === null) === (socket === null)) {
    throw invalid('cache.redis', 'give exactly one of url and socket for the redis backend');
  }
  const prefix = r.prefix ?? d.redis.prefix;
  if (typeof prefix !== 'string') throw invalid('cache.redis.prefix', 'must be a string');
  return Object.freeze({
    backend: backend as ContentCacheConfig['backend'],
    maxBytes: bounded('cache.maxBytes', c.maxBytes, d.maxBytes, 1024, Number.MAX_SAFE_INTEGER),
    maxValueBytes: bounded('cache.maxValueBytes', c.maxValueBytes, d.maxValueBytes, 1, 512 * 1024 * 1024),
    redis: Object.freeze({
      url: url as string | null,
      socket: socket === null ? null : path.resolve(baseDir, socket as string),
      prefix,
      timeoutMs: bounded('cache.redis.timeoutMs', r.timeoutMs, d.redis.timeoutMs, 1, 60_000),
    }),
  });
}

const MAX_WORKERS = 1024;
/** Ten times the default CPU limit: only a run no hook can stop gets this far. */
const DEFAULT_WATCHDOG_MS = 10_000;

// CLI, then the environment (spawn-fcgi -C and lighttpd's bin-environment set PHP_FCGI_CHILDREN
// for the child they start; as with FCGI_WEB_SERVER_ADDRS the variable wins over the file), then
// the file, then one worker per core (php-fpm's static pool sized to the machine). 0 is one
// process without a manager: php-cgi's meaning of PHP_FCGI_CHILDREN=0, Puma's single mode; the
// development server (--http) defaults to it.
function workerCount(fromCli: string | undefined, fromFile: unknown, fromEnv: string | undefined, dev: boolean): number {
  if (fromCli !== undefined) return bounded('--workers', cliInteger('--workers', fromCli), 0, 0, MAX_WORKERS);
  if (fromEnv !== undefined && fromEnv !== '') {
    return bounded('PHP_FCGI_CHILDREN', cliInteger('PHP_FCGI_CHILDREN', fromEnv), 0, 0, MAX_WORKERS);
  }
  return bounded('workers', fromFile, dev ? 0 : os.availableParallelism(), 0, MAX_WORKERS);
}

// A log path: "stderr", or a file (relative to the config file) whose directory exists; the
// file itself is opened (created) by each process at start.
function logPath(field: string, value: string | undefined, baseDir: string): string | null {
  if (value === undefined || value === '') return null;
  if (value === 'stderr') return value;
  const file = path.resolve(baseDir, value);
  if (!isDirectory(path.dirname(file))) throw invalid(field, `directory ${path.dirname(file)} does not exist`);
  if (isDirectory(file)) throw invalid(field, `${file} is a directory`);
  return file;
}

function maxRequestsPerWorker(fromCli: string | undefined, fromFile: unknown, fromEnv: string | undefined): number {
  const max = Number.MAX_SAFE_INTEGER;
  if (fromCli !== undefined) return bounded('--max-requests', cliInteger('--max-requests', fromCli), 0, 0, max);
  if (fromEnv !== undefined && fromEnv !== '') {
    return bounded('PHP_FCGI_MAX_REQUESTS', cliInteger('PHP_FCGI_MAX_REQUESTS', fromEnv), 0, 0, max);
  }
  return bounded('workerMaxRequests', fromFile, 0, 0, max);
}

// HOST:PORT as for --listen tcp:, so [::1]:8080 and port 0 work the same way.
function httpListen(fromCli: string | undefined, fromFile: string | undefined, env: NodeJS.ProcessEnv): Config['http'] {
  const spec = fromCli ?? fromFile;
  if (spec === undefined) return null;
  const parsed = parseListen(`tcp:${spec}`, env);
  if (typeof parsed === 'string' || parsed.kind !== 'tcp') {
    throw invalid(fromCli !== undefined ? '--http' : 'http', `expected HOST:PORT, e.g. 127.0.0.1:8080 (got ${JSON.stringify(spec)})`);
  }
  return Object.freeze({ host: parsed.host, port: parsed.port });
}

function statusPath(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string' || !value.startsWith('/')) throw invalid('statusPath', 'must be a path starting with / (matched against SCRIPT_NAME)');
  return value;
}

// cache.fileDir must be a directory the web server may send from: inside files.roots.
function cacheFiles(value: unknown, filesConfig: FilesConfig, baseDir: string): CacheFiles | null {
  if (!isObject(value) || value.fileDir === undefined || value.fileDir === null) {
    if (isObject(value) && value.fileMinBytes !== undefined) throw invalid('cache.fileMinBytes', 'needs cache.fileDir');
    return null;
  }
  if (typeof value.fileDir !== 'string') throw invalid('cache.fileDir', 'must be a directory path');
  const dir = realDirectory('cache.fileDir', path.resolve(baseDir, value.fileDir));
  if (!insideRoots(dir, filesConfig.roots)) {
    throw invalid('cache.fileDir', `${dir} is not inside files.roots (${filesConfig.roots.join(', ')}): the web server could not be asked to send its files`);
  }
  return Object.freeze({ dir, minBytes: bounded('cache.fileMinBytes', value.fileMinBytes, 256 * 1024, 1, Number.MAX_SAFE_INTEGER) });
}

const poolFields = new Set(['servers', 'connectTimeoutMs', 'responseTimeoutMs', 'disableTimeMs', 'maxConnections', 'keepAlive', 'idleTimeoutMs']);

function backends(value: unknown, fromCli: string[] | undefined, baseDir: string): ReadonlyMap<string, PoolOptions> {
  const out = new Map<string, PoolOptions>();
  if (value !== undefined && !isObject(value)) throw invalid('backends', 'must be an object of pool name -> { servers: [...] }');
  for (const [name, spec] of Object.entries(value ?? {})) {
    const field = `backends.${name}`;
    if (!isObject(spec)) throw invalid(field, 'must be an object with "servers"');
    for (const key of Object.keys(spec)) {
      if (!poolFields.has(key)) throw invalid(`${field}.${key}`, 'unknown field');
    }
    const d = defaultPoolOptions;
    const keepAlive = spec.keepAlive ?? d.keepAlive;
    if (typeof keepAlive !== 'boolean') throw invalid(`${field}.keepAlive`, 'must be true or false');
    out.set(
      name,
      Object.freeze({
        name,
        servers: servers(`${field}.servers`, spec.servers, baseDir),
        connectTimeoutMs: bounded(`${field}.connectTimeoutMs`, spec.connectTimeoutMs, d.connectTimeoutMs, 1, 600_000),
        responseTimeoutMs: bounded(`${field}.responseTimeoutMs`, spec.responseTimeoutMs, d.responseTimeoutMs, 1, 86_400_000),
        disableTimeMs: bounded(`${field}.disableTimeMs`, spec.disableTimeMs, d.disableTimeMs, 0, 86_400_000),
        maxConnections: bounded(`${field}.maxConnections`, spec.maxConnections, d.maxConnections, 1, 100_000),
        keepAlive,
        idleTimeoutMs: bounded(`${field}.idleTimeoutMs`, spec.idleTimeoutMs, d.idleTimeoutMs, 1, 86_400_000),
      }),
    );
  }
  for (const arg of fromCli ?? []) {
    const eq = arg.indexOf('=');
    if (eq <= 0) throw invalid('--backend', `expected NAME=SERVER[,SERVER...] (got ${JSON.stringify(arg)})`);
    const name = arg.slice(0, eq);
    const list = servers('--backend', arg.slice(eq + 1).split(','), process.cwd());
    out.set(name, Object.freeze({ ...(out.get(name) ?? defaultPoolOptions), name, servers: list }));
  }
  return out;
}

// "unix:relative/path" resolves against the config file's directory, as other paths do.
function servers(field: string, value: unknown, baseDir: string): readonly string[] {
  if (!Array.isArray(value) || value.length === 0 || !value.every((v) => typeof v === 'string')) {
    throw invalid(field, 'must be a non-empty array of "unix:/path" or "host:port"');
  }
  return Object.freeze(
    value.map((given: string) => {
      const spec = given.startsWith('unix:') && given.length > 5 ? `unix:${path.resolve(baseDir, given.slice(5))}` : given;
      const parsed = parseServer(spec);
      if (typeof parsed === 'string') throw invalid(field, `${JSON.stringify(given)}: ${parsed}`);
      return spec;
    }),
  );
}

function files(value: unknown, cli: CliValues, root: string, baseDir: string, env: NodeJS.ProcessEnv): FilesConfig {
  if (value !== undefined && !isObject(value)) throw invalid('files', 'must be an object');
  const f: Record<string, unknown> = value ?? {};
  for (const key of Object.keys(f)) {
    if (!filesFields.has(key)) throw invalid(`files.${key}`, 'unknown field');
  }
  let roots: string[];
  if (cli.fileRoots !== undefined && cli.fileRoots.length > 0) {
    roots = cli.fileRoots.map((dir) => realDirectory('--file-root', path.resolve(dir)));
  } else if (f.roots !== undefined) {
    if (!Array.isArray(f.roots) || f.roots.length === 0 || !f.roots.every((r) => typeof r === 'string')) {
      throw invalid('files.roots', 'must be a non-empty array of directories');
    }
    roots = f.roots.map((dir: string) => realDirectory('files.roots', path.resolve(baseDir, dir)));
  } else {
    roots = [realDirectory('--root', root)];
  }
  const threads = cli.statThreads !== undefined ? cliInteger('--stat-threads', cli.statThreads) : f.statThreads;
  const sendfile = cli.sendfile ?? f.sendfile ?? defaultFiles.sendfile;
  if (typeof sendfile !== 'string' || !(sendfileModes as readonly string[]).includes(sendfile)) {
    throw invalid(cli.sendfile !== undefined ? '--sendfile' : 'files.sendfile', `must be one of ${sendfileModes.join(', ')}`);
  }
  return Object.freeze({
    roots: Object.freeze(roots),
    statThreads: bounded(cli.statThreads !== undefined ? '--stat-threads' : 'files.statThreads', threads, poolSize(env), 1, 1024),
    statCacheMs: bounded('files.statCacheMs', f.statCacheMs, defaultFiles.statCacheMs, 0, 86_400_000),
    statCacheEntries: bounded('files.statCacheEntries', f.statCacheEntries, defaultFiles.statCacheEntries, 1, 10_000_000),
    sendfile: sendfile as SendfileMode,
    accel: accelMap(f.accel, baseDir),
    prefetch: prefetch(f.prefetch),
    allowScripts: optionalBoolean(f, 'allowScripts', 'files.allowScripts') ?? defaultFiles.allowScripts,
  });
}

// The pool libuv starts with when nothing sets statThreads: its own default, or the variable.
function poolSize(env: NodeJS.ProcessEnv): number {
  const n = Number(env.UV_THREADPOOL_SIZE);
  return Number.isSafeInteger(n) && n >= 1 && n <= 1024 ? n : defaultFiles.statThreads;
}

// An integer from the command line or the environment; a negative one is left to the range
// check of the caller, whose message names the range.
function cliInteger(field: string, text: string): number {
  if (!/^-?\d+$/.test(text)) throw invalid(field, `must be an integer (got ${JSON.stringify(text)})`);
  return Number(text);
}

function bounded(field: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw invalid(field, `must be an integer from ${min} to ${max} (got ${JSON.stringify(value)})`);
  }
  return value;
}

function realDirectory(field: string, dir: string): string {
  try {
    const real = fs.realpathSync(dir);
    if (fs.statSync(real).isDirectory()) return real;
  } catch {
    // reported below
  }
  throw invalid(field, `${dir} is not a directory`);
}

// { "/srv/files": "/protected" }: the filesystem root (resolved like roots) and the internal
// URI prefix nginx maps back to it with `alias`.
function accelMap(value: unknown, baseDir: string): ReadonlyArray<readonly [string, string]> {
  if (value === undefined) return Object.freeze([]);
  if (!isObject(value)) throw invalid('files.accel', 'must be an object of filesystem root -> internal URI prefix');
  const out: Array<readonly [string, string]> = [];
  for (const [dir, prefix] of Object.entries(value)) {
    if (typeof prefix !== 'string' || !prefix.startsWith('/')) {
      throw invalid(`files.accel.${dir}`, 'must be an internal URI prefix starting with /');
    }
    out.push(Object.freeze([realDirectory(`files.accel.${dir}`, path.resolve(baseDir, dir)), prefix] as const));
  }
  return Object.freeze(out);
}

function prefetch(value: unknown): FilesConfig['prefetch'] {
  if (value === undefined || value === null) return null;
  if (!isObject(value)) throw invalid('files.prefetch', 'must be an object { "param": NAME, "read": BOOLEAN } or null');
  for (const key of Object.keys(value)) {
    if (key !== 'param' && key !== 'read') throw invalid(`files.prefetch.${key}`, 'unknown field');
  }
  const param = value.param ?? 'SCRIPT_FILENAME';
  if (typeof param !== 'string' || param === '') throw invalid('files.prefetch.param', 'must be a FastCGI param name');
  const read = value.read ?? false;
  if (typeof read !== 'boolean') throw invalid('files.prefetch.read', 'must be true or false');
  return Object.freeze({ param, read });
}

function resolveOptional(fromCli: string | undefined, fromFile: string | undefined, baseDir: string): string | null {
  if (fromCli !== undefined) return path.resolve(fromCli);
  return fromFile !== undefined ? path.resolve(baseDir, fromFile) : null;
}

function scriptPath(fromCli: string | undefined, fromFile: string | undefined, baseDir: string): string | null {
  const file = resolveOptional(fromCli, fromFile, baseDir);
  if (file === null) return null;
  let isFile = false;
  try {
    isFile = fs.statSync(file).isFile();
  } catch {
    // reported below
  }
  if (!isFile) throw invalid(fromCli !== undefined ? '--script' : 'script', `${file} is not a file`);
  return file;
}

function rawOutput(value: unknown, root: string): true | ReadonlySet<string> {
  if (value === true) return true;
  if (value === undefined || value === false) return new Set();
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
    throw invalid('rawOutput', 'must be true, false, or an array of script paths relative to root');
  }
  // Scripts are matched by real path, as the store resolves them.
  return new Set(
    value.map((rel) => {
      const file = path.resolve(root, rel);
      try {
        return fs.realpathSync(file);
      } catch {
        throw invalid('rawOutput', `${file} does not exist`);
      }
    }),
  );
}

function statInterval(value: unknown): number {
  if (value === undefined) return 1000;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw invalid('statIntervalMs', `must be a non-negative integer (got ${JSON.stringify(value)})`);
  }
  return value;
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw invalid('--config', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let value: unknown;
  if (file.endsWith('.json')) {
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw invalid('--config', `${file} is not valid JSON: ${(err as Error).message}`);
    }
  } else {
    try {
      value = parseToml(text);
    } catch (err) {
      // smol-toml's message carries a code frame over several lines: keep the first and say where.
      const e = err as Error & { line?: number; column?: number };
      const what = e.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
      throw invalid('--config', `${file}:${e.line ?? '?'}:${e.column ?? '?'}: ${what}`);
    }
  }
  if (!isObject(value)) throw invalid('--config', `${file} must hold a JSON object`);
  return value;
}

/** An object of integer fields over `defaults`: unknown keys and values below `min` are errors. */
function integers<T extends object>(field: string, value: unknown, defaults: T, min: number): T {
  if (value === undefined) return defaults;
  if (!isObject(value)) throw invalid(field, 'must be an object');
  const out: Record<string, number> = { ...(defaults as Record<string, number>) };
  for (const [key, v] of Object.entries(value)) {
    if (!(key in defaults)) throw invalid(`${field}.${key}`, 'unknown field');
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
      throw invalid(`${field}.${key}`, `must be a positive integer (got ${JSON.stringify(v)})`);
    }
    out[key] = v;
  }
  return Object.freeze(out) as T;
}

function socketMode(value: unknown): number | null {
  if (value === undefined) return null;
  if (typeof value !== 'string' || !/^0?[0-7]{3}$/.test(value)) {
    throw invalid('socketMode', 'must be an octal string such as "0660"');
  }
  return parseInt(value, 8);
}

function webServerAddrs(value: unknown, fromEnv: string | undefined): readonly string[] | null {
  let list: string[] | null = null;
  if (value !== undefined) {
    if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
      throw invalid('webServerAddrs', 'must be an array of IP address strings');
    }
    list = value;
  }
  // libfcgi's convention: the environment variable, a comma-separated list, wins when set.
  if (fromEnv !== undefined && fromEnv.trim() !== '') {
    list = fromEnv.split(',').map((s) => s.trim()).filter((s) => s !== '');
  }
  if (list === null) return null;
  for (const addr of list) {
    if (!isIp(addr)) throw invalid(fromEnv ? 'FCGI_WEB_SERVER_ADDRS' : 'webServerAddrs', `${JSON.stringify(addr)} is not an IP address`);
  }
  return Object.freeze(list);
}

function isIp(addr: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(addr) || /^[0-9a-fA-F:]+$/.test(addr);
}

function optionalString(obj: Record<string, unknown>, key: string): string | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalid(key, 'must be a string');
  return v;
}

/** `obj[key]` when it is a boolean, undefined when absent; `field` names it in the error. */
function optionalBoolean(obj: Record<string, unknown>, key: string, field = key): boolean | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw invalid(field, 'must be true or false');
  return v;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isDirectory(dir: string): boolean {
  try {
    return fs.statSync(dir).isDirectory();
  } catch {
    return false;
  }
}
