/**
 * Configuration: defaults, then the config file (TOML, or JSON for a .json file), then the
 * environment (libfcgi's FCGI_WEB_SERVER_ADDRS, PHP_FCGI_CHILDREN, ...), then CLI flags.
 * Validated once at start, field by field, and frozen; an error names the field in one line
 * (`LS_CONFIG_INVALID`), never a stack trace.
 *
 * The schema is {@link configFields}: every top-level field once, with its validator, default,
 * flag and README row; the sections are declared beside their modules. `Config`, the
 * unknown-field checks and README's table (checked by a test) all follow from it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readConfigFile } from '../config-file.cjs';
import {
  boolean,
  field,
  integer,
  invalid,
  isDirectory,
  oneOf,
  pathValue,
  readTop,
  realDirectory,
  section,
  stringValue,
  type Context,
  type Flag,
  type Given,
  type Values,
} from '../config-schema.js';
import { contentCacheFields, withCacheFlag, type ContentCacheConfig } from '../content-cache/types.js';
import type { CacheFiles } from '../engines/host.js';
import { LUA_ENGINES } from '../engines/lua-engines.js';
import { scriptLimitsSection } from '../engines/script-error.js';
import { scriptCacheSection } from '../engines/script-cache-config.js';
import { modulesPathsField } from '../engines/modules.js';
import { backendsField } from '../fastcgi/client/pool-config.js';
import { fetchSection } from '../fetch/fetch-config.js';
import { limitsSection } from '../fastcgi/server/limits.js';
import { insideRoots } from '../files/confine.js';
import { filesSection, type FilesConfig } from '../files/files-config.js';
import { parseListen, type ListenTarget } from '../listen.js';
import { levels } from '../log.js';
import { WORKER_LISTEN_ENV } from '../process/worker.js';
import { resolveRunAs, resolveSocketOwner, type RunAs } from '../process/privileges.js';

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

const flag = (key: keyof CliValues, name: string): Flag => ({ key, name });

type HttpListen = { readonly host: string; readonly port: number };

const MAX_WORKERS = 1024;
/** Ten times the default CPU limit: only a run no hook can stop gets this far. */
const DEFAULT_WATCHDOG_MS = 10_000;

/**
 * Every top-level field of the config file, in the order they are read: a field may use one
 * read before it (`ctx.done`): files.roots and rawOutput the root, cache.fileDir files.roots,
 * workers http.
 */
export const configFields = {
  /** Null: "inherited fd or systemd, else tcp:127.0.0.1:9000". */
  listen: field<ListenTarget | null>({
    doc: 'where to listen, same syntax as `--listen`',
    shown: 'see `--listen`',
    flag: flag('listen', '--listen'),
    default: (ctx) => inherited(ctx) ?? null,
    parse: (value, at, ctx) => inherited(ctx) ?? listenTarget(value, at, ctx.env),
  }),
  /** Absolute. */
  root: field({
    doc: "script root; relative to the config file's directory",
    shown: 'current directory',
    flag: flag('root', '--root'),
    default: () => process.cwd(),
    parse(value, at) {
      const dir = pathValue(value, at);
      if (!isDirectory(dir)) throw invalid(at.name, `${dir} is not a directory`);
      return dir;
    },
  }),
  logLevel: oneOf(levels, { doc: '`error`, `warn`, `info`, `debug`', flag: flag('logLevel', '--log-level'), default: 'info' }),
  /** File access: roots, stat threads and cache, escalation header, prefetch. */
  files: filesSection,
  /** With group, becomes `runAs`. */
  user: field<string | null>({
    doc: 'started as root, the processes that run scripts switch to this user (a name, or a number as a string); see [Running as a user](#running-as-a-user)',
    flag: flag('user', '--user'),
    default: null,
    parse: (value, at) => stringValue(value, at.name),
  }),
  group: field<string | null>({
    doc: 'the group for `user`',
    shown: "`user`'s primary group",
    flag: flag('group', '--group'),
    default: null,
    parse: (value, at) => stringValue(value, at.name),
  }),
  /** -1 keeps that id; null: the run-as user and group when Lodestone switches users, else as created. */
  socketOwner: field<{ readonly uid: number; readonly gid: number } | null>({
    doc: 'owner of the unix socket, `"USER"`, `"USER:GROUP"` or `":GROUP"`, like php-fpm\'s `listen.owner` and `listen.group`',
    shown: '`user:group` with `user`, else unchanged',
    default: null,
    parse: (value, at) => resolveSocketOwner(stringValue(value, at.name), at.name),
  }),
  /** Null keeps the umask's. */
  socketMode: field<number | null>({
    doc: "octal mode of the unix socket, like php-fpm's `listen.mode`",
    shown: 'umask',
    default: null,
    parse(value, at) {
      if (typeof value !== 'string' || !/^0?[0-7]{3}$/.test(value)) throw invalid(at.name, 'must be an octal string such as "0660"');
      return parseInt(value, 8);
    },
  }),
  /** Null allows all. */
  webServerAddrs: field<readonly string[] | null>({
    doc: 'TCP peers allowed to connect',
    shown: 'all',
    env: 'FCGI_WEB_SERVER_ADDRS',
    default: null,
    parse: webServerAddrs,
  }),
  diagnostic: boolean({ doc: 'answer with the diagnostic responder', flag: flag('diagnostic', '--diagnostic'), default: false }),
  limits: limitsSection,
  /** Absolute; null follows SCRIPT_FILENAME. */
  script: field<string | null>({
    doc: 'front-controller script for every request (relative to the config file)',
    flag: flag('script', '--script'),
    default: null,
    parse(value, at) {
      const file = pathValue(value, at);
      if (!isFile(file)) throw invalid(at.name, `${file} is not a file`);
      return file;
    },
  }),
  statIntervalMs: integer({
    doc: "a cached script's file is rechecked (realpath, mtime, size, inode) at most this often; 0: every request",
    min: 0,
    default: 1000,
  }),
  /** Null disables it. */
  cacheDir: field<string | null>({
    doc: 'directory for Lua bytecode that survives restarts (keyed by engine version and source hash)',
    flag: flag('cacheDir', '--cache-dir'),
    default: null,
    parse: pathValue,
  }),
  luaEngine: oneOf(LUA_ENGINES, {
    doc: '`lua54` (the reference Lua 5.4 in WebAssembly) or `fengari` (Lua 5.3 in JavaScript, several times slower on script work); see [Lua engines](#lua-engines)',
    default: 'lua54',
  }),
  scriptCache: scriptCacheSection,
  /** Where require() finds modules. */
  modules: section({ paths: modulesPathsField }),
  scriptLimits: scriptLimitsSection,
  /** True for every script under the root, else the real paths of the scripts that use it. */
  rawOutput: field<true | ReadonlySet<string>>({
    doc: '`true`, or a list of scripts (relative to root): they print their own CGI header block, as lua-fastcgi-magnet scripts did',
    shown: '`false`',
    default: () => new Set(),
    parse: (value, at, ctx) => rawOutput(value, at, ctx.done.root as string),
  }),
  statAccel: boolean({ doc: 'as `--stat-accel`', flag: flag('statAccel', '--stat-accel'), default: false }),
  /** The content cache behind the script API's `cache`, and the files that hold large cached bodies. */
  cache: section(
    {
      ...contentCacheFields,
      fileDir: field<string | null>({
        doc: 'response bodies of at least `fileMinBytes` are cached as files here and sent with sendfile on a hit; must be inside `files.roots`',
        default: null,
        parse: cacheFileDir,
      }),
      fileMinBytes: integer({ doc: 'the size from which a body goes to `fileDir`', min: 1, max: Number.MAX_SAFE_INTEGER, default: 256 * 1024 }),
    },
    {
      finish(cache, given, name, ctx) {
        if (cache.fileDir === null && given.fileMinBytes !== undefined) throw invalid(`${name}.fileMinBytes`, `needs ${name}.fileDir`);
        return withCacheFlag(cache, name, ctx);
      },
    },
  ),
  /** Matched against SCRIPT_NAME (php-fpm's pm.status_path). */
  statusPath: field<string | null>({
    doc: 'a request whose `SCRIPT_NAME` is this path gets the [status page](#status-page)',
    default: null,
    parse(value, at) {
      if (value === null) return null;
      if (typeof value !== 'string' || !value.startsWith('/')) throw invalid(at.name, 'must be a path starting with / (matched against SCRIPT_NAME)');
      return value;
    },
  }),
  slowRequestMs: integer({
    doc: "the [slow log](#slow-log), like php-fpm's `request_slowlog_timeout`: a script run still going after this many ms logs one `LS_SLOW_REQUEST` line saying where the script is at that moment (its stack, or the host call it waits in); the request is counted and logged again with its total time when it ends",
    shown: '0 (off)',
    min: 0,
    max: 86_400_000,
    default: 0,
  }),
  /** The development HTTP front end (like `php -S`); null: FastCGI only. */
  http: field<HttpListen | null>({
    doc: 'as `--http`',
    flag: flag('http', '--http'),
    default: null,
    parse: (value, at, ctx) => httpListen(value, at, ctx.env),
  }),
  /** By name, for pass(). */
  backends: backendsField,
  /** What scripts' fetch() may reach (deny by default) and how much it may take. */
  fetch: fetchSection,
  // The flag, then the variable (spawn-fcgi -C and lighttpd's bin-environment set
  // PHP_FCGI_CHILDREN for the child they start), then the file, then one worker per core
  // (php-fpm's static pool sized to the machine). 0 is one process without a manager: php-cgi's
  // meaning of PHP_FCGI_CHILDREN=0, Puma's single mode; the development server defaults to it.
  workers: integer({
    doc: 'worker processes under the manager (`PHP_FCGI_CHILDREN` wins); 0: one process, no manager',
    shown: 'one per core',
    flag: flag('workers', '--workers'),
    env: 'PHP_FCGI_CHILDREN',
    min: 0,
    max: MAX_WORKERS,
    default: (ctx) => (ctx.done.http !== null ? 0 : os.availableParallelism()),
  }),
  workerMaxRequests: integer({
    doc: 'requests after which a worker is replaced (`PHP_FCGI_MAX_REQUESTS` wins)',
    shown: '0 (no limit)',
    flag: flag('maxRequests', '--max-requests'),
    env: 'PHP_FCGI_MAX_REQUESTS',
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    default: 0,
  }),
  /**
   * Killed by the primary (by a watchdog thread without a manager) and, under the manager, replaced. Must exceed
   * scriptLimits.cpuMs, which stops ordinary runaway scripts from inside.
   */
  watchdogMs: integer({
    doc: 'a worker whose event loop is stuck this long is killed and replaced; 0: off; must exceed `scriptLimits.cpuMs`',
    min: 0,
    max: 86_400_000,
    default: DEFAULT_WATCHDOG_MS,
  }),
  /** A file path, or "stderr". */
  logFile: field<string>({
    doc: 'log lines go to this file (relative to the config file), reopened on `SIGUSR2`',
    flag: flag('logFile', '--log-file'),
    default: 'stderr',
    parse: (value, at) => logPath(value, at) ?? 'stderr',
  }),
  /** A file path, "stderr", or null (off). */
  accessLog: field<string | null>({
    doc: 'a file (or `stderr`) for one line per request, see [Logs](#logs-and-error-codes)',
    shown: 'off',
    flag: flag('accessLog', '--access-log'),
    default: null,
    parse: logPath,
  }),
};

type FileValues = Values<typeof configFields>;

/** The validated, frozen configuration of a `serve` run. */
export type Config = Omit<FileValues, 'user' | 'group' | 'cache'> & {
  /** The content cache behind the script API's `cache` (embedded per worker, or Redis). */
  readonly cache: ContentCacheConfig;
  /** Large cached response bodies go to files here (inside files.roots), sent with sendfile. */
  readonly cacheFiles: CacheFiles | null;
  /**
   * The user and group the script-running processes switch to when started as root (`user`,
   * `group`, `--user`, `--group`, like php-fpm's pool user); null: no switch.
   */
  readonly runAs: RunAs | null;
};

/**
 * Builds the configuration from the CLI values, the config file they name and the environment.
 * Throws a {@link LodestoneError} (LS_CONFIG_INVALID) whose message starts with the field name.
 */
export function loadConfig(cli: CliValues, env: NodeJS.ProcessEnv = process.env): Config {
  let file: Record<string, unknown> = {};
  if (cli.config !== undefined) {
    const read = readConfigFile(cli.config);
    if ('error' in read) throw invalid('--config', read.error);
    file = read.value;
  }
  const baseDir = cli.config !== undefined ? path.dirname(path.resolve(cli.config)) : process.cwd();
  const { user, group, cache, ...values } = readTop(configFields, file, { baseDir, cli: cli as Record<string, unknown>, env });
  const { fileDir, fileMinBytes, ...contentCache } = cache;
  const config: Config = {
    ...values,
    cache: Object.freeze(contentCache),
    cacheFiles: fileDir === null ? null : Object.freeze({ dir: fileDir, minBytes: fileMinBytes }),
    runAs: runAs(user, group, cli, file),
  };
  checkTogether(config, cli, env);
  return Object.freeze(config);
}

// The rules between fields, each error naming the one the user gave last.
function checkTogether(config: Config, cli: CliValues, env: NodeJS.ProcessEnv): void {
  const http = cli.http !== undefined ? '--http' : 'http';
  if (config.watchdogMs !== 0 && config.watchdogMs <= config.scriptLimits.cpuMs) {
    throw invalid('watchdogMs', `must be 0 (off) or more than scriptLimits.cpuMs (${config.scriptLimits.cpuMs})`);
  }
  if (config.http !== null && config.workers > 0) {
    throw invalid(http, 'the development server runs its scripts in one worker of its own; drop --workers / PHP_FCGI_CHILDREN');
  }
  if (config.http !== null && config.runAs !== null) {
    throw invalid(cli.user !== undefined ? '--user' : 'user', 'the development server does not switch users; start it as the user it should run as');
  }
  if (config.workers === 0 && config.workerMaxRequests > 0) {
    throw invalid(cli.maxRequests !== undefined ? '--max-requests' : 'workerMaxRequests', 'retiring workers needs the process manager: workers must be at least 1');
  }
  if (config.http !== null && config.files.sendfile === 'x-accel-redirect') {
    throw invalid(http, 'the development server sends X-Sendfile files itself; files.sendfile x-accel-redirect is nginx only');
  }
  // The development server's worker gets its primary's unix socket as an fd.
  if (config.http !== null && env[WORKER_LISTEN_ENV] === undefined && config.listen !== null && config.listen.kind !== 'unix') {
    throw invalid(http, 'needs FastCGI on a unix socket (omit --listen, or give --listen unix:PATH)');
  }
}

// user and group: the group alone is not switched to. An error names the flag when the value
// came from one, and --group when a --user from the command line meets no group in the file.
function runAs(user: string | null, group: string | null, cli: CliValues, file: Record<string, unknown>): RunAs | null {
  const userField = cli.user !== undefined ? '--user' : 'user';
  const groupField = cli.group !== undefined || (cli.user !== undefined && file.group === undefined) ? '--group' : 'group';
  if (user === null && group !== null) throw invalid(groupField, `needs ${cli.group !== undefined ? '--user' : 'user'} (the group alone is not switched to)`);
  return user === null ? null : resolveRunAs(user, group, { user: userField, group: groupField });
}

// A managed worker accepts on the socket its primary passed it, whatever --listen said (the
// primary has checked that; `systemd` could not even be parsed again here, as LISTEN_PID names
// the primary).
function inherited(ctx: Context): ListenTarget | undefined {
  const shared = ctx.env[WORKER_LISTEN_ENV];
  return shared === undefined ? undefined : (JSON.parse(shared) as ListenTarget);
}

function listenTarget(value: unknown, at: Given, env: NodeJS.ProcessEnv): ListenTarget {
  const parsed = parseListen(stringValue(value, at.name), env);
  if (typeof parsed === 'string') throw invalid(at.name, parsed);
  return parsed;
}

// HOST:PORT as for --listen tcp:, so [::1]:8080 and port 0 work the same way.
function httpListen(value: unknown, at: Given, env: NodeJS.ProcessEnv): HttpListen {
  const spec = stringValue(value, at.name);
  const parsed = parseListen(`tcp:${spec}`, env);
  if (typeof parsed === 'string' || parsed.kind !== 'tcp') {
    throw invalid(at.name, `expected HOST:PORT, e.g. 127.0.0.1:8080 (got ${JSON.stringify(spec)})`);
  }
  return Object.freeze({ host: parsed.host, port: parsed.port });
}

// libfcgi's convention: the environment variable is a comma-separated list.
function webServerAddrs(value: unknown, at: Given): readonly string[] {
  const list = at.text && typeof value === 'string' ? value.split(',').map((s) => s.trim()).filter((s) => s !== '') : value;
  if (!Array.isArray(list) || !list.every((v) => typeof v === 'string')) throw invalid(at.name, 'must be an array of IP address strings');
  for (const addr of list) {
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(addr) && !/^[0-9a-fA-F:]+$/.test(addr)) throw invalid(at.name, `${JSON.stringify(addr)} is not an IP address`);
  }
  return Object.freeze(list);
}

function rawOutput(value: unknown, at: Given, root: string): true | ReadonlySet<string> {
  if (value === true) return true;
  if (value === false) return new Set();
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
    throw invalid(at.name, 'must be true, false, or an array of script paths relative to root');
  }
  // Scripts are matched by real path, as the store resolves them.
  return new Set(
    value.map((rel) => {
      const file = path.resolve(root, rel);
      try {
        return fs.realpathSync(file);
      } catch {
        throw invalid(at.name, `${file} does not exist`);
      }
    }),
  );
}

// cache.fileDir must be a directory the web server may send from: inside files.roots.
function cacheFileDir(value: unknown, at: Given, ctx: Context): string | null {
  if (value === null) return null;
  if (typeof value !== 'string') throw invalid(at.name, 'must be a directory path');
  const dir = realDirectory(at.name, path.resolve(at.dir, value));
  const { roots } = ctx.done.files as FilesConfig;
  if (!insideRoots(dir, roots)) {
    throw invalid(at.name, `${dir} is not inside files.roots (${roots.join(', ')}): the web server could not be asked to send its files`);
  }
  return dir;
}

// A log path: "stderr", or a file (relative to the config file) whose directory exists; the
// file itself is opened (created) by each process at start.
function logPath(value: unknown, at: Given): string | null {
  const given = stringValue(value, at.name);
  if (given === '') return null;
  if (given === 'stderr') return given;
  const file = path.resolve(at.dir, given);
  if (!isDirectory(path.dirname(file))) throw invalid(at.name, `directory ${path.dirname(file)} does not exist`);
  if (isDirectory(file)) throw invalid(at.name, `${file} is a directory`);
  return file;
}

function isFile(file: string): boolean {
  try {
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}
