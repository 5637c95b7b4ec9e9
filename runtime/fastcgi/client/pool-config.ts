/**
 * The config's `[backends.NAME]`: the FastCGI pools scripts pass() requests to, from the file
 * and from `--backend NAME=SERVER[,SERVER...]`, how a server is written, and what makes a pool's
 * options valid (which the pool checks for pools made in code too).
 */
import path from 'node:path';
import { boolean, defaults, field, integer, invalid, isObject, section, type Context, type Field, type Given, type ValueOf } from '../../config-schema.js';

/**
 * Parses a server spec; returns an error string for a bad one (config validation uses it).
 * `tcp:` in front of a host is accepted too, as in `--listen`.
 *
 * @example
 *   parseServer('unix:/run/php/php8.2-fpm.sock'); // { kind: 'unix', path: '/run/php/php8.2-fpm.sock' }
 *   parseServer('[::1]:9001');                     // { kind: 'tcp', host: '::1', port: 9001 }
 */
export function parseServer(
  spec: string,
): { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number } | string {
  if (spec.startsWith('unix:')) {
    const path = spec.slice(5);
    if (!path.startsWith('/')) return `unix: needs an absolute socket path, e.g. unix:/run/php/fpm.sock (got ${JSON.stringify(spec)})`;
    // sun_path is 108 bytes with its terminating NUL on Linux.
    if (Buffer.byteLength(path) > 107) return `unix socket path over 107 bytes: ${JSON.stringify(spec)}`;
    return { kind: 'unix', path };
  }
  const rest = spec.startsWith('tcp:') ? spec.slice(4) : spec;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(rest);
  if (!m) return `bad server ${JSON.stringify(spec)}: use unix:/path.sock, HOST:PORT or [IPv6]:PORT`;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return `bad server ${JSON.stringify(spec)}: port must be 1-65535`;
  return { kind: 'tcp', host: m[1] ?? m[2]!, port };
}

const SERVERS = 'must be a non-empty array of "unix:/path" or "host:port"';

/** One pool's settings; nginx's and lighttpd's defaults, with php-fpm's default pm.max_children 5 in mind. */
export const poolSection = section(
  {
    /** `unix:/run/php/fpm.sock`, `127.0.0.1:9001`, `[::1]:9001` or `localhost:9001` ({@link parseServer}). */
    servers: field<readonly string[]>({
      doc: 'FastCGI servers of the pool: `unix:/path` (relative to the config file) or `host:port`',
      shown: 'required',
      default: (_ctx, name) => {
        throw invalid(name, SERVERS);
      },
      parse: servers,
    }),
    /**
     * Concurrent requests per server; more wait in a FIFO queue here. It must not exceed
     * php-fpm's pm.max_children (divided among the Lodestone workers, which each have their own
     * pool): php-fpm binds a child to a kept connection until the client closes it, so with more
     * connections than children the extra ones are accepted by the kernel but sit in the listen
     * backlog, unserved, while every child waits on an idle kept connection of ours: those
     * requests time out (504) instead of queueing here, where they would be served.
     */
    maxConnections: integer({
      doc: "connections per server; keep it at most PHP-FPM's `pm.max_children`",
      min: 1,
      max: 100_000,
      default: 8,
    }),
    /** false: a connection per request. */
    keepAlive: boolean({ doc: '`FCGI_KEEP_CONN`: reuse connections', default: true }),
    /** Idle kept connections are closed after this, freeing their php-fpm children. */
    idleTimeoutMs: integer({
      doc: 'an idle kept connection is closed after this (it holds a PHP-FPM child)',
      min: 1,
      max: 86_400_000,
      default: 10_000,
    }),
    /** A server that does not accept in time is disabled like one that refuses. */
    connectTimeoutMs: integer({ doc: 'connecting to a server', min: 1, max: 600_000, default: 1000 }),
    /**
     * Max wait for the first response byte and between reads (nginx fastcgi_read_timeout); the
     * time a request waited in the queue counts against it. A timeout is a 504 and a server failure.
     */
    responseTimeoutMs: integer({
      doc: "waiting for the response (also between reads, and a queued request's wait); over: 504",
      min: 1,
      max: 86_400_000,
      default: 60_000,
    }),
    /** lighttpd's disable-time. */
    disableTimeMs: integer({ doc: "a failed server is left out this long (lighttpd's `disable-time`)", min: 0, max: 86_400_000, default: 1000 }),
  },
  { what: 'an object with "servers"' },
);

/** A backend pool's configuration; see {@link defaultPoolOptions}. */
export type PoolOptions = {
  /** Pool name, in log lines and errors. */
  readonly name: string;
} & ValueOf<typeof poolSection>;

/** Every setting but the servers. */
export const defaultPoolOptions: Omit<PoolOptions, 'name' | 'servers'> = defaults(poolSection, 'servers');

/**
 * `[backends.NAME]` in the file, then `--backend NAME=SERVER[,SERVER...]` (repeatable): a flag
 * replaces a pool's servers and keeps its other settings.
 */
export const backendsField: Field<ReadonlyMap<string, PoolOptions>> = {
  entries: poolSection.fields,
  parse(value, at, ctx) {
    if (!isObject(value)) throw invalid(at.name, 'must be an object of pool name -> { servers: [...] }');
    const pools = new Map<string, PoolOptions>();
    for (const [name, spec] of Object.entries(value)) {
      pools.set(name, Object.freeze({ name, ...poolSection.parse(spec, { ...at, name: `${at.name}.${name}` }, ctx) }));
    }
    return withFlags(pools, ctx);
  },
  fallback: (ctx) => withFlags(new Map(), ctx),
};

function withFlags(pools: Map<string, PoolOptions>, ctx: Context): ReadonlyMap<string, PoolOptions> {
  const flags = (ctx.cli.backends ?? []) as readonly string[];
  for (const arg of flags) {
    const eq = arg.indexOf('=');
    if (eq <= 0) throw invalid('--backend', `expected NAME=SERVER[,SERVER...] (got ${JSON.stringify(arg)})`);
    const name = arg.slice(0, eq);
    const list = servers(arg.slice(eq + 1).split(','), { name: '--backend', dir: process.cwd(), text: true });
    pools.set(name, Object.freeze({ ...(pools.get(name) ?? defaultPoolOptions), name, servers: list }));
  }
  return pools;
}

// "unix:relative/path" resolves against the config file's directory, as other paths do.
function servers(value: unknown, at: Given): readonly string[] {
  if (!Array.isArray(value) || value.length === 0 || !value.every((v) => typeof v === 'string')) throw invalid(at.name, SERVERS);
  return Object.freeze(
    value.map((given: string) => {
      const spec = given.startsWith('unix:') && given.length > 5 ? `unix:${path.resolve(at.dir, given.slice(5))}` : given;
      const parsed = parseServer(spec);
      if (typeof parsed === 'string') throw invalid(at.name, `${JSON.stringify(given)}: ${parsed}`);
      return spec;
    }),
  );
}

/** What is wrong with a pool's options, or null; the constructor throws it as LS_CONFIG_INVALID. */
export function poolOptionsError(options: PoolOptions): string | null {
  if (options.name === '') return 'a backend pool needs a name';
  if (options.servers.length === 0) return `backend pool ${options.name}: servers is empty`;
  for (const spec of options.servers) {
    const target = parseServer(spec);
    if (typeof target === 'string') return `backend pool ${options.name}: ${target}`;
  }
  if (new Set(options.servers).size !== options.servers.length) return `backend pool ${options.name}: a server is listed twice`;
  const positive = ['connectTimeoutMs', 'responseTimeoutMs', 'maxConnections', 'idleTimeoutMs'] as const;
  for (const key of positive) {
    const value = options[key];
    if (!Number.isInteger(value) || value < 1) return `backend pool ${options.name}: ${key} must be a positive integer`;
  }
  if (!Number.isInteger(options.disableTimeMs) || options.disableTimeMs < 0) {
    return `backend pool ${options.name}: disableTimeMs must be an integer >= 0`;
  }
  return null;
}
