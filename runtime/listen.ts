/**
 * Where to listen: `unix:/path.sock`, `tcp:HOST:PORT`, `fd:N` (a listening socket inherited from
 * spawn-fcgi or lighttpd's `bin-path`) or `systemd` (socket activation). Parsing is separate from
 * opening so the CLI can reject a bad `--listen` before anything starts.
 */
import fs from 'node:fs';
import net from 'node:net';

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
 * activation, or a listening socket on fd 0 as spawn-fcgi and lighttpd hand it. Null when
 * neither applies (fd 0 a tty, /dev/null, a pipe, or a connected socket as libuv gives a child
 * for its stdio).
 */
export function inheritedTarget(env: NodeJS.ProcessEnv = process.env): ListenTarget | null {
  if (env.LISTEN_PID === String(process.pid) && Number(env.LISTEN_FDS) >= 1) {
    return { kind: 'fd', fd: SD_LISTEN_FDS_START };
  }
  return isListeningSocket(0) ? { kind: 'fd', fd: 0 } : null;
}

/**
 * True when `fd` is a listening socket. libfcgi asks getpeername(fd) for ENOTCONN, which Node
 * cannot call on a raw fd; on Linux the socket's inode has its state in /proc/net: TCP state
 * 0A is LISTEN, and a unix socket in listen(2) has __SO_ACCEPTCON (0x10000) in its flags.
 * Elsewhere any socket counts, and listen(2) itself rejects a connected one with EINVAL.
 */
export function isListeningSocket(fd: number): boolean {
  try {
    if (!fs.fstatSync(fd).isSocket()) return false;
  } catch {
    return false;
  }
  let inode: string;
  try {
    const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/self/fd/${fd}`));
    if (!m) return true;
    inode = m[1]!;
  } catch {
    return true;
  }
  const state = socketState(inode);
  return state === null ? true : state;
}

// Listening state of the socket with this inode, from /proc/net; null when not found there.
function socketState(inode: string): boolean | null {
  for (const table of ['tcp', 'tcp6']) {
    for (const fields of procNet(table)) {
      if (fields[9] === inode) return fields[3] === '0A';
    }
  }
  for (const fields of procNet('unix')) {
    if (fields[6] === inode) return (parseInt(fields[3] ?? '0', 16) & 0x10000) !== 0;
  }
  return null;
}

/** The rows of /proc/net/TABLE (tcp, tcp6, unix), split into fields, header dropped; [] if unreadable. */
export function procNet(table: string): string[][] {
  try {
    return fs
      .readFileSync(`/proc/net/${table}`, 'utf8')
      .split('\n')
      .slice(1)
      .map((line) => line.trim().split(/\s+/));
  } catch {
    return [];
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

/**
 * A socket file left by a crashed run would make listen fail with EADDRINUSE; removes it, but
 * only when nobody answers on it (another live server keeps its socket).
 */
export async function removeStaleSocket(path: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) return;
  if (!(await accepts(path))) fs.rmSync(path, { force: true });
}

/**
 * Whether a server accepts a connection at `target` (a unix socket path, or net.connect's
 * options): connects and closes at once. Also what the tests and the benchmark wait on.
 *
 * @example
 *   await accepts('/run/lodestone.sock'); // false: refused, or no such socket
 *   await accepts({ host: '127.0.0.1', port: 9000 });
 */
export function accepts(target: string | net.NetConnectOpts): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = typeof target === 'string' ? net.connect(target) : net.connect(target);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => {
      probe.destroy();
      resolve(false);
    });
  });
}
