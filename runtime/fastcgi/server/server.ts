/**
 * The FastCGI server: accepts connections on a unix socket, TCP port or inherited fd, refuses
 * peers outside FCGI_WEB_SERVER_ADDRS and connections over the limit, and runs one timer that
 * enforces every connection's idle and request timeouts (one timer per process instead of one
 * per request keeps the hot path free of timer allocations).
 */
import fs from 'node:fs';
import net from 'node:net';
import { LodestoneError } from '../../errors.js';
import { removeStaleSocket, type ListenTarget } from '../../listen.js';
import type { Logger } from '../../log.js';
import { FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS } from '../constants.js';
import { Connection, ConnectionList, type ServerContext, type Handler, type Stats } from './connection.js';
import type { Limits } from './limits.js';

/** What a {@link FastcgiServer} needs. */
export interface ServerOptions {
  readonly limits: Limits;
  readonly handler: Handler;
  readonly log: Logger;
  /** TCP peers allowed to connect (FCGI_WEB_SERVER_ADDRS); null or empty allows all. */
  readonly webServerAddrs?: readonly string[] | null;
}

/**
 * A FastCGI application server process.
 *
 * @example
 *   const server = new FastcgiServer({ limits: defaultLimits, handler: diagnostic, log: new Logger() });
 *   await server.listen({ kind: 'tcp', host: '127.0.0.1', port: 9000 });
 */
export class FastcgiServer {
  readonly stats: Stats = {
    connectionsAccepted: 0,
    connectionsRefused: 0,
    requestsAccepted: 0,
    requestsCompleted: 0,
    requestsRefused: 0,
    requestsAborted: 0,
    protocolErrors: 0,
  };
  private readonly server: net.Server;
  private readonly connections = new ConnectionList();
  private readonly ctx: ServerContext;
  private readonly allowed: ReadonlySet<string> | null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private nextId = 1;
  private unixPath: string | null = null;

  constructor(private readonly options: ServerOptions) {
    const { limits } = options;
    const addrs = options.webServerAddrs;
    this.allowed = addrs && addrs.length > 0 ? new Set(addrs.map(normalizeAddress)) : null;
    const connections = this.connections;
    this.ctx = {
      limits,
      handler: options.handler,
      log: options.log,
      stats: this.stats,
      activeRequests: 0,
      values: Object.freeze({
        [FCGI_MAX_CONNS]: String(limits.maxConnections),
        [FCGI_MAX_REQS]: String(limits.maxRequests),
        [FCGI_MPXS_CONNS]: limits.maxRequestsPerConnection > 1 ? '1' : '0',
      }),
      onClose(conn) {
        connections.delete(conn);
      },
    };
    this.server = net.createServer({ noDelay: true }, this.onConnection);
  }

  /** Requests in flight now. */
  get activeRequests(): number {
    return this.ctx.activeRequests;
  }

  /** Connections open now. */
  get openConnections(): number {
    return this.connections.size;
  }

  /** The bound address: the TCP port is in it when listening on port 0. */
  address(): net.AddressInfo | string | null {
    return this.server.address();
  }

  /** Starts listening; rejects with a {@link LodestoneError} naming what went wrong. */
  async listen(target: ListenTarget): Promise<void> {
    if (target.kind === 'unix') await removeStaleSocket(target.path);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new LodestoneError('LS_LISTEN_FAILED', listenErrorMessage(target, err)));
      };
      this.server.once('error', onError);
      const done = (): void => {
        this.server.off('error', onError);
        resolve();
      };
      if (target.kind === 'tcp') this.server.listen({ host: target.host, port: target.port, backlog: 1024 }, done);
      else if (target.kind === 'unix') this.server.listen({ path: target.path, backlog: 1024 }, done);
      // exclusive: in a managed worker the fd is the primary's shared socket, accepted on here;
      // without it Node's cluster would ask the primary to listen on its own fd of that number.
      else this.server.listen({ fd: target.fd, backlog: 1024, exclusive: true }, done);
    });
    if (target.kind === 'unix') this.unixPath = target.path;
    this.server.on('error', (err) => this.options.log.error('LS_LISTEN_FAILED', err.message));
    this.startSweep();
  }

  /**
   * Stops accepting, lets requests in flight finish for up to `graceMs`, then closes what is
   * left. Kept-alive idle connections are closed at once.
   */
  async close(graceMs = 5000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const conn of this.connections) conn.closeWhenIdle();
    const deadline = Date.now() + graceMs;
    while (this.connections.size > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    for (const conn of this.connections) conn.destroy();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    await closed;
    if (this.unixPath) {
      try {
        fs.rmSync(this.unixPath, { force: true });
      } catch (err) {
        // A process that gave up root (--workers 0 with a user) may not unlink in a root-owned
        // directory; the next start removes the stale socket.
        this.options.log.warn('LS_SOCKET_NOT_REMOVED', 'cannot remove the socket file', { path: this.unixPath, error: (err as NodeJS.ErrnoException).code ?? String(err) });
      }
    }
  }

  private readonly onConnection = (socket: net.Socket): void => {
    const log = this.options.log;
    if (this.allowed && socket.remoteFamily !== undefined) {
      const peer = normalizeAddress(socket.remoteAddress ?? '');
      if (!this.allowed.has(peer)) {
        this.stats.connectionsRefused++;
        log.warn('LS_PEER_REFUSED', 'peer not in FCGI_WEB_SERVER_ADDRS', { peer });
        socket.destroy();
        return;
      }
    }
    if (this.connections.size >= this.options.limits.maxConnections) {
      this.stats.connectionsRefused++;
      log.warn('LS_CONNECTION_LIMIT', 'too many connections', { limit: this.options.limits.maxConnections });
      socket.destroy();
      return;
    }
    this.stats.connectionsAccepted++;
    this.connections.add(new Connection(socket, this.nextId++, this.ctx));
  };

  private startSweep(): void {
    const { idleTimeoutMs, requestTimeoutMs } = this.options.limits;
    // A quarter of the shortest timeout, so a timeout fires at most 25% late, within 25 ms..1 s.
    const every = Math.min(1000, Math.max(25, Math.floor(Math.min(idleTimeoutMs, requestTimeoutMs) / 4)));
    this.sweepTimer = setInterval(() => {
      const now = Date.now();
      for (const conn of this.connections) conn.sweep(now);
    }, every);
    this.sweepTimer.unref();
  }
}

/** IPv4-mapped IPv6 (`::ffff:127.0.0.1`) compares equal to the plain IPv4 address. */
function normalizeAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function listenErrorMessage(target: ListenTarget, err: NodeJS.ErrnoException): string {
  if (target.kind === 'fd') {
    if (err.code === 'EINVAL' || err.code === 'ENOTSOCK' || err.code === 'ENOTSUP') {
      return `fd ${target.fd} is not a listening socket (${err.code})`;
    }
    return `cannot listen on fd ${target.fd}: ${err.message}`;
  }
  const where = target.kind === 'tcp' ? `${target.host}:${target.port}` : target.path;
  return `cannot listen on ${where}: ${err.code ?? err.message}`;
}
