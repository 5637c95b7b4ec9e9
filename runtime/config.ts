/**
 * Configuration: defaults, then the config file (JSON), then the environment (libfcgi's
 * FCGI_WEB_SERVER_ADDRS), then CLI flags. Validated once at start, field by field, and frozen;
 * an error names the field in one line (`LS_CONFIG_INVALID`), never a stack trace.
 */
import fs from 'node:fs';
import path from 'node:path';
import { LodestoneError } from './errors.js';
import { defaultLimits, type Limits } from './fastcgi/limits.js';
import { parseListen, type ListenTarget } from './listen.js';
import { levels, type Level } from './log.js';

/** The validated, frozen configuration of a `serve` run. */
export interface Config {
  /** Where to listen; null means "inherited fd or systemd, else tcp:127.0.0.1:9000". */
  readonly listen: ListenTarget | null;
  /** Directory scripts are served from (absolute). */
  readonly root: string;
  readonly logLevel: Level;
  /** File mode for a unix socket (like php-fpm's listen.mode); null keeps the umask's. */
  readonly socketMode: number | null;
  /** TCP peers allowed to connect; null allows all. */
  readonly webServerAddrs: readonly string[] | null;
  /** Serve every request with the built-in diagnostic responder. */
  readonly diagnostic: boolean;
  readonly limits: Limits;
}

/** Values given on the command line; undefined means "not given". */
export interface CliValues {
  listen?: string | undefined;
  root?: string | undefined;
  config?: string | undefined;
  logLevel?: string | undefined;
  diagnostic?: boolean | undefined;
}

const topFields = new Set(['listen', 'root', 'logLevel', 'socketMode', 'webServerAddrs', 'diagnostic', 'limits']);

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
  if (listenSpec !== undefined) {
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

  const config: Config = {
    listen,
    root,
    logLevel: logLevel as Level,
    socketMode: socketMode(file.socketMode),
    webServerAddrs: webServerAddrs(file.webServerAddrs, env.FCGI_WEB_SERVER_ADDRS),
    diagnostic: cli.diagnostic ?? optionalBoolean(file, 'diagnostic') ?? false,
    limits: limits(file.limits),
  };
  return Object.freeze(config);
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw invalid('--config', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw invalid('--config', `${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(value)) throw invalid('--config', `${file} must hold a JSON object`);
  return value;
}

function limits(value: unknown): Limits {
  if (value === undefined) return defaultLimits;
  if (!isObject(value)) throw invalid('limits', 'must be an object');
  const out: Record<string, number> = { ...defaultLimits };
  for (const [key, v] of Object.entries(value)) {
    if (!(key in defaultLimits)) throw invalid(`limits.${key}`, 'unknown field');
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
      throw invalid(`limits.${key}`, `must be a positive integer (got ${JSON.stringify(v)})`);
    }
    out[key] = v;
  }
  return Object.freeze(out) as unknown as Limits;
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

function optionalBoolean(obj: Record<string, unknown>, key: string): boolean | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw invalid(key, 'must be true or false');
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
