/**
 * Where to listen: `unix:/path.sock`, `tcp:HOST:PORT`, `fd:N` (a listening socket inherited from
 * spawn-fcgi or lighttpd's `bin-path`) or `systemd` (socket activation). Parsing is separate from
 * opening so the CLI can reject a bad `--listen` before anything starts.
 */
import fs from 'node:fs';

export type ListenTarget =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'fd'; readonly fd: number };

/** The first fd systemd passes with socket activation (SD_LISTEN_FDS_START). */
const SD_LISTEN_FDS_START = 3;

/**
 * Parses a listen spec; returns the target or a message saying what is wrong with it.
 *
 * @example
 *   parseListen('tcp:127.0.0.1:9000'); // { kind: 'tcp', host: '127.0.0.1', port: 9000 }
 *   parseListen('unix:/run/lodestone.sock');
 *   parseListen('tcp:[::1]:9000');
 */
export function parseListen(spec: string, env: NodeJS.ProcessEnv = process.env): ListenTarget | string {
  if (spec.startsWith('unix:')) {
    const path = spec.slice(5);
    if (path === '') return 'unix: needs a socket path, e.g. unix:/run/lodestone.sock';
    return { kind: 'unix', path };
  }
  if (spec.startsWith('tcp:')) {
    const rest = spec.slice(4);
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(rest);
    if (!m) return 'tcp: needs HOST:PORT, e.g. tcp:127.0.0.1:9000 or tcp:[::1]:9000';
    const port = Number(m[3]);
    if (port > 65535) return `tcp: port ${port} is over 65535`;
    return { kind: 'tcp', host: m[1] ?? m[2]!, port };
  }
  if (spec.startsWith('fd:')) {
    const fd = Number(spec.slice(3));
    if (!Number.isInteger(fd) || fd < 0 || spec.length === 3) return 'fd: needs a file descriptor number, e.g. fd:0';
    return { kind: 'fd', fd };
  }
  if (spec === 'systemd') {
    const fds = Number(env.LISTEN_FDS);
    if (env.LISTEN_PID !== String(process.pid) || !(fds >= 1)) {
      return 'systemd: no socket passed (LISTEN_PID/LISTEN_FDS not set for this process)';
    }
    return { kind: 'fd', fd: SD_LISTEN_FDS_START };
  }
  return `unknown listen spec ${JSON.stringify(spec)}: use unix:PATH, tcp:HOST:PORT, fd:0 or systemd`;
}

/**
 * The listen target implied by how we were started, when `--listen` is absent: systemd socket
 * activation, or a socket on fd 0 as spawn-fcgi and lighttpd hand it. libfcgi tells a listening
 * socket from a connected one with getpeername (ENOTCONN); Node cannot call getpeername on a raw
 * fd, but listen(2) on a connected socket fails with EINVAL, so opening the server is the same
 * test, and its error names the problem. Null when neither applies.
 */
export function inheritedTarget(env: NodeJS.ProcessEnv = process.env): ListenTarget | null {
  if (env.LISTEN_PID === String(process.pid) && Number(env.LISTEN_FDS) >= 1) {
    return { kind: 'fd', fd: SD_LISTEN_FDS_START };
  }
  try {
    return fs.fstatSync(0).isSocket() ? { kind: 'fd', fd: 0 } : null;
  } catch {
    return null;
  }
}

/** Human-readable form of a target for logs and the start-up banner. */
export function describeTarget(target: ListenTarget): string {
  switch (target.kind) {
    case 'tcp':
      return target.host.includes(':') ? `tcp:[${target.host}]:${target.port}` : `tcp:${target.host}:${target.port}`;
    case 'unix':
      return `unix:${target.path}`;
    case 'fd':
      return `fd:${target.fd}`;
  }
}
