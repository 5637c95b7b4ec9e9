/**
 * The command line's flags, in one table: parseArgs's options, the Options part of `--help` and
 * the {@link CliValues} that `loadConfig` reads are all made from it, so a flag is named once.
 * Apart from cli.ts so that the commands read as commands, not as a list of flags.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { CliValues } from './config.js';

interface FlagSpec {
  /** The {@link CliValues} field it sets; null for the flags cli.ts answers itself. */
  readonly key: keyof CliValues | null;
  readonly type: 'string' | 'boolean';
  readonly multiple?: true;
  readonly short?: string;
  /** The value's name in `--help`, e.g. SPEC. */
  readonly arg?: string;
  /** Its lines in `--help`. */
  readonly help: readonly string[];
}

/** Every flag, in `--help`'s order; `serve`, `check` and `config` take them all, so they load the very configuration serve would. */
export const FLAGS = {
  listen: {
    key: 'listen',
    type: 'string',
    arg: 'SPEC',
    help: ['unix:/path.sock | tcp:HOST:PORT | fd:0 | systemd', '(default: an inherited socket on fd 0 or from systemd,', 'else tcp:127.0.0.1:9000)'],
  },
  root: { key: 'root', type: 'string', arg: 'DIR', help: ['directory scripts are served from (default: .)'] },
  script: { key: 'script', type: 'string', arg: 'FILE', help: ['one front-controller script for every request'] },
  'cache-dir': { key: 'cacheDir', type: 'string', arg: 'DIR', help: ['keep compiled Lua bytecode here across restarts'] },
  config: { key: 'config', type: 'string', arg: 'FILE', help: ['TOML config file (JSON if it ends in .json; see README, "Configuration")'] },
  'log-level': { key: 'logLevel', type: 'string', arg: 'LEVEL', help: ['error | warn | info | debug (default: info)'] },
  'log-file': { key: 'logFile', type: 'string', arg: 'PATH', help: ['write log lines to PATH instead of stderr (reopened on SIGUSR2)'] },
  'access-log': {
    key: 'accessLog',
    type: 'string',
    arg: 'PATH',
    help: ["one line per request (nginx's combined format + time and script) to", 'PATH or stderr; default off'],
  },
  diagnostic: { key: 'diagnostic', type: 'boolean', help: ['answer every request with the built-in diagnostic responder'] },
  'stat-accel': {
    key: 'statAccel',
    type: 'boolean',
    help: ['answer every request as fcgi-stat-accel: stat SCRIPT_FILENAME,', 'then let the web server send it (X-Sendfile / X-Accel-Redirect)'],
  },
  'stat-threads': { key: 'statThreads', type: 'string', arg: 'N', help: ["threads that stat files (libuv's pool, UV_THREADPOOL_SIZE; default 4)"] },
  'file-root': {
    key: 'fileRoots',
    type: 'string',
    multiple: true,
    arg: 'DIR',
    help: ['a directory stat()/sendfile() may reach (repeatable; default: --root)'],
  },
  sendfile: { key: 'sendfile', type: 'string', arg: 'MODE', help: ['auto | x-sendfile | x-sendfile2 | x-lighttpd-send-file | x-accel-redirect'] },
  cache: {
    key: 'cache',
    type: 'string',
    arg: 'SPEC',
    help: ["the scripts' content cache: memory (default, per worker),", 'redis://HOST:PORT[/DB] or unix:/path/to/redis.sock (shared)'],
  },
  backend: {
    key: 'backends',
    type: 'string',
    multiple: true,
    arg: 'NAME=SERVER[,SERVER...]',
    help: ['a FastCGI pool for pass(NAME), e.g. php=unix:/run/php/php-fpm.sock', '(repeatable; servers are unix:/path or HOST:PORT)'],
  },
  workers: {
    key: 'workers',
    type: 'string',
    arg: 'N',
    help: ['worker processes under the process manager, sharing the socket', '(default: one per core, or PHP_FCGI_CHILDREN); 0: one process, no manager'],
  },
  'max-requests': { key: 'maxRequests', type: 'string', arg: 'N', help: ['a worker retires after N requests and is replaced (PHP_FCGI_MAX_REQUESTS)'] },
  user: {
    key: 'user',
    type: 'string',
    arg: 'USER',
    help: ["started as root: bind the socket, then run scripts as USER (php-fpm's", 'pool user); without it a root start logs LS_RUNNING_AS_ROOT'],
  },
  group: { key: 'group', type: 'string', arg: 'GROUP', help: ["the group for --user (default: USER's primary group)"] },
  http: {
    key: 'http',
    type: 'string',
    arg: 'HOST:PORT',
    help: ['development HTTP front end (like php -S): serves --root over HTTP,', 'scripts through FastCGI on a private socket, X-Sendfile done itself'],
  },
  help: { key: null, type: 'boolean', short: 'h', help: ['show this help'] },
  version: { key: null, type: 'boolean', short: 'v', help: ['print the version'] },
} as const satisfies Record<string, FlagSpec>;

type FlagName = keyof typeof FLAGS;

/** What parseArgs gives for each flag: a list for a repeatable one, text or true otherwise. */
export type FlagValues = {
  [N in FlagName]?: (typeof FLAGS)[N] extends { multiple: true } ? string[] : (typeof FLAGS)[N]['type'] extends 'string' ? string : boolean;
};

/** The column `--help` starts a flag's text at. */
const HELP_COLUMN = 21;

const options: ParseArgsConfig['options'] = Object.fromEntries(
  Object.entries(FLAGS as Record<FlagName, FlagSpec>).map(([name, f]) => [
    name,
    { type: f.type, ...(f.multiple ? { multiple: true } : {}), ...(f.short !== undefined ? { short: f.short } : {}) },
  ]),
);

/** `--help`'s Options part: a flag and its value on the left, its text from {@link HELP_COLUMN}. */
export function optionsHelp(): string {
  const indent = ' '.repeat(HELP_COLUMN);
  let out = '';
  for (const [name, f] of Object.entries(FLAGS as Record<FlagName, FlagSpec>)) {
    const left = `  ${f.short !== undefined ? `-${f.short}, ` : ''}--${name}${f.arg !== undefined ? ` ${f.arg}` : ''}`;
    // Two spaces at least between the flag and its text; a longer flag has its text below it.
    out += left.length + 2 <= HELP_COLUMN ? left.padEnd(HELP_COLUMN) : `${left}\n${indent}`;
    out += f.help.join(`\n${indent}`) + '\n';
  }
  return out;
}

/**
 * Parses `argv` (without node and script) by the table; the error is one line naming the flag.
 *
 * @example
 *   parseCommandLine(['serve', '--workers', '2']); // { values: { workers: '2' }, positionals: ['serve'] }
 */
export function parseCommandLine(argv: readonly string[]): { values: FlagValues; positionals: string[] } | { error: string } {
  try {
    const { values, positionals } = parseArgs({ args: withNegativeValues(argv), allowPositionals: true, options });
    return { values, positionals };
  } catch (err) {
    return { error: parseArgsMessage(err) };
  }
}

/** The values `loadConfig` reads, each under its {@link CliValues} name; undefined where not given. */
export function cliValues(values: FlagValues): CliValues {
  const cli: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(FLAGS as Record<FlagName, FlagSpec>)) if (f.key !== null) cli[f.key] = values[name as FlagName];
  return cli;
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
    const option = name !== null ? (FLAGS as Record<string, FlagSpec>)[name] : undefined;
    if (option?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
    } else out.push(arg);
  }
  return out;
}
