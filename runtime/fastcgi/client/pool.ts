/**
 * A pool of FastCGI backend servers (PHP-FPM) that scripts forward requests to with `pass()`.
 * Policy is lighttpd's gw_backend.c and nginx's upstream module in small: least-load balancing
 * with round-robin ties, a server that fails is left out for `disableTimeMs`, kept connections
 * are reused (nginx `keepalive`), and a kept connection the server closed while idle is retried
 * once on a fresh one. The wire protocol is in `client.ts`.
 */
import { LodestoneError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { BackendError, type BackendExchangeEnd, type BackendRequest, type BackendResponse, type Cancel, type ServerTarget } from './backend.js';
import { BodySource } from './body-source.js';
import { BackendConnection } from './client.js';
import { connectSocket } from './connect.js';
import { encodePairs } from '../pairs.js';
import { parseServer, poolOptionsError, type PoolOptions } from './pool-config.js';

export { BackendError, cancelOf, readBody } from './backend.js';
export { defaultPoolOptions, parseServer, poolOptionsError, type PoolOptions } from './pool-config.js';
export type { BackendErrorKind, BackendRequest, BackendResponse, Cancel, ServerTarget } from './backend.js';

/** Counters of one server of a pool, read by tests. */
export interface ServerStats {
  readonly server: string;
  /** Requests holding a connection slot (connecting or in flight). */
  readonly active: number;
  /** Idle kept connections. */
  readonly idle: number;
  /** Connections opened. */
  readonly connects: number;
  /** Requests sent. */
  readonly requests: number;
  /** Connect failures, timeouts, protocol errors, connections closed before answering. */
  readonly failures: number;
  /** Until when the server is left out (ms since epoch); 0 when enabled. */
  readonly disabledUntil: number;
}

/** An idle kept connection and when it was parked (Date.now() ms): the sweep closes it after idleTimeoutMs. */
interface Idle {
  readonly conn: BackendConnection;
  readonly since: number;
}

class Server {
  active = 0;
  /** Most recently used last: reused first (LIFO), so the others age out and free children. */
  readonly idle: Idle[] = [];
  readonly open = new Set<BackendConnection>();
  connects = 0;
  requests = 0;
  failures = 0;
  disabledUntil = 0;

  constructor(
    readonly spec: string,
    readonly target: ServerTarget,
    readonly index: number,
  ) {}
}

/** One request's way through the pool: servers tried, why they failed, time spent queued. */
interface Attempt {
  readonly req: BackendRequest;
  /** The PARAMS block, encoded once: a caller's iterable may be one-shot. */
  readonly params: Buffer;
  readonly body: Buffer | BodySource | null;
  readonly tried: Set<Server>;
  readonly reasons: string[];
  queuedMs: number;
  /** Next attempt must open a new connection (a reused one turned out closed). */
  fresh: boolean;
  retried: boolean;
}

/** A request waiting for a free slot on any server it may still use. */
interface Waiter {
  readonly attempt: Attempt;
  readonly since: number;
  resolve(server: Server): void;
  reject(err: BackendError): void;
}

/**
 * Forwards requests to a set of FastCGI servers. Every failure is logged here or in the
 * connection, once per request, with its pool and server: callers only map the BackendError's
 * `status` to a response.
 *
 * @example
 *   const pool = new BackendPool({ ...defaultPoolOptions, name: 'php', servers: ['unix:/run/php/fpm.sock'] }, log);
 *   const res = await pool.request({ params: [['SCRIPT_FILENAME', '/srv/index.php'], ['REQUEST_METHOD', 'GET']], body: null });
 *   const html = await readBody(res, 1 << 20);
 */
export class BackendPool {
  readonly name: string;
  private readonly options: PoolOptions;
  private readonly servers: Server[];
  private readonly queue: Waiter[] = [];
  /** Where the next round-robin tie-break starts. */
  private next = 0;
  private closed = false;
  /** After close()'s grace: new connections are refused and open ones destroyed. */
  private forced = false;
  /** Closes idle connections past idleTimeoutMs; runs while any connection is idle (park). */
  private sweeper: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;
  private onDrained: (() => void) | null = null;

  constructor(
    options: PoolOptions,
    private readonly log: Logger,
  ) {
    const invalid = poolOptionsError(options);
    if (invalid !== null) throw new LodestoneError('LS_CONFIG_INVALID', invalid);
    this.options = Object.freeze({ ...options, servers: Object.freeze([...options.servers]) });
    this.name = options.name;
    this.servers = options.servers.map((spec, i) => new Server(spec, parseServer(spec) as ServerTarget, i));
  }

  /** Resolves at the backend's header block; rejects with BackendError (never throws). */
  async request(req: BackendRequest): Promise<BackendResponse> {
    if (this.closed) throw new BackendError('unavailable', `backend pool ${this.name} is closed`, this.name);
    if (req.cancel?.aborted) throw new BackendError('aborted', 'request aborted', this.name);
    let params: Buffer;
    let body: Buffer | BodySource | null;
    try {
      params = Buffer.isBuffer(req.params) ? req.params : encodePairs(req.params);
      body = req.body === null || Buffer.isBuffer(req.body) ? req.body : new BodySource(req.body);
    } catch (err) {
      throw new BackendError('protocol', `request cannot be encoded: ${(err as Error).message}`, this.name, undefined, {
        cause: err,
      });
    }
    const attempt: Attempt = { req, params, body, tried: new Set(), reasons: [], queuedMs: 0, fresh: false, retried: false };
    try {
      for (;;) {
        // Usually a slot is free at once: no await (a microtask turn) for a value at hand.
        const acquired = this.acquire(attempt);
        const server = acquired instanceof Server ? acquired : await acquired;
        const res = await this.attempt(server, attempt);
        if (res !== null) return res;
      }
    } catch (err) {
      if (body instanceof BodySource) body.close();
      throw err;
    }
  }

  /** Counters per server, in configuration order. */
  stats(): ServerStats[] {
    const now = Date.now();
    return this.servers.map((s) => ({
      server: s.spec,
      active: s.active,
      idle: s.idle.length,
      connects: s.connects,
      requests: s.requests,
      failures: s.failures,
      disabledUntil: s.disabledUntil > now ? s.disabledUntil : 0,
    }));
  }

  /**
   * Closes idle connections, fails queued requests, lets active ones finish; after `graceMs`
   * destroys what is left (their bodies error). Resolves when every socket is closed.
   */
  close(graceMs = 5000): Promise<void> {
    this.closing ??= this.shutdown(graceMs);
    return this.closing;
  }

  private async shutdown(graceMs: number): Promise<void> {
    this.closed = true;
    for (const waiter of this.queue.splice(0)) {
      waiter.reject(new BackendError('unavailable', `backend pool ${this.name} is closed`, this.name));
    }
    for (const server of this.servers) {
      for (const idle of server.idle.splice(0)) idle.conn.destroy();
    }
    if (this.sweeper !== null) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
    if (await this.drained(graceMs)) return;
    this.forced = true;
    for (const server of this.servers) for (const conn of server.open) conn.destroy();
    // Connects in progress end within connectTimeoutMs and are then refused (see open()).
    await this.drained(null);
  }

  // Resolves true once no request is active and no socket open; false after `ms`.
  private drained(ms: number | null): Promise<boolean> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (result: boolean): void => {
        clearTimeout(timer);
        this.onDrained = null;
        resolve(result);
      };
      if (this.isDrained()) {
        done(true);
        return;
      }
      this.onDrained = () => done(true);
      if (ms !== null) timer = setTimeout(() => done(false), ms);
    });
  }

  private isDrained(): boolean {
    return this.servers.every((s) => s.active === 0 && s.open.size === 0);
  }

  private checkDrained(): void {
    if (this.onDrained !== null && this.isDrained()) this.onDrained();
  }

  // ------------------------------------------------------------------------------------------
  // Choosing a server

  /**
   * The enabled server, not yet tried for this request, with the fewest active requests and a
   * free slot; ties go round-robin (lighttpd's least-connection balancer).
   */
  private pick(tried: ReadonlySet<Server>): Server | null {
    const now = Date.now();
    const n = this.servers.length;
    let best: Server | null = null;
    for (let i = 0; i < n; i++) {
      const s = this.servers[(this.next + i) % n]!;
      if (tried.has(s) || !this.enabled(s, now) || s.active >= this.options.maxConnections) continue;
      if (best === null || s.active < best.active) best = s;
    }
    if (best !== null) this.next = (best.index + 1) % n;
    return best;
  }

  private enabled(s: Server, now: number): boolean {
    if (s.disabledUntil === 0) return true;
    if (s.disabledUntil > now) return false;
    s.disabledUntil = 0;
    return true;
  }

  /** True when some server this request may still use is enabled (so a slot can free up). */
  private waitable(tried: ReadonlySet<Server>): boolean {
    const now = Date.now();
    return this.servers.some((s) => !tried.has(s) && this.enabled(s, now));
  }

  /** A slot on a server, now or when one frees up (FIFO); the wait counts against responseTimeoutMs. */
  private acquire(a: Attempt): Server | Promise<Server> {
    if (this.closed) throw new BackendError('unavailable', `backend pool ${this.name} is closed`, this.name);
    const server = this.pick(a.tried);
    if (server !== null) {
      server.active++;
      return server;
    }
    if (!this.waitable(a.tried)) throw this.giveUp(a);
    const budget = this.options.responseTimeoutMs - a.queuedMs;
    return new Promise<Server>((resolve, reject) => {
      const settle = (): void => {
        clearTimeout(timer);
        offAbort?.();
        const i = this.queue.indexOf(waiter);
        if (i >= 0) this.queue.splice(i, 1);
        a.queuedMs += Date.now() - waiter.since;
      };
      const waiter: Waiter = {
        attempt: a,
        since: Date.now(),
        resolve: (s) => {
          settle();
          resolve(s);
        },
        reject: (err) => {
          settle();
          reject(err);
        },
      };
      const onAbort = (): void => waiter.reject(new BackendError('aborted', 'request aborted while queued', this.name));
      const timer = setTimeout(() => {
        const message = `no free connection within ${budget} ms (maxConnections ${this.options.maxConnections} per server)`;
        this.log.warn('LS_BACKEND_TIMEOUT', message, { pool: this.name });
        waiter.reject(new BackendError('timeout', message, this.name));
      }, Math.max(budget, 1));
      // settle runs later (the waiter's turn, the timer, an abort), when offAbort is set.
      const offAbort = a.req.cancel?.onAbort(onAbort);
      this.queue.push(waiter);
    });
  }

  /** Hands freed slots to queued requests, first come first served; fails those left without a server. */
  private drainQueue(): void {
    for (let i = 0; i < this.queue.length; ) {
      const waiter = this.queue[i]!;
      const server = this.pick(waiter.attempt.tried);
      if (server !== null) {
        server.active++;
        waiter.resolve(server);
      } else if (!this.waitable(waiter.attempt.tried)) {
        waiter.reject(this.giveUp(waiter.attempt));
      } else {
        i++;
      }
    }
  }

  private giveUp(a: Attempt): BackendError {
    const why = a.reasons.length > 0 ? a.reasons.join('; ') : 'every server is disabled';
    this.log.warn('LS_BACKEND_UNAVAILABLE', 'no server could take the request', { pool: this.name, why });
    return new BackendError('unavailable', `backend pool ${this.name}: no server available (${why})`, this.name);
  }

  // ------------------------------------------------------------------------------------------
  // One try on one server

  /** The response, or null to try again (another server, or a fresh connection). */
  private async attempt(server: Server, a: Attempt): Promise<BackendResponse | null> {
    let conn = a.fresh ? undefined : this.takeIdle(server);
    const reused = conn !== undefined;
    a.fresh = false;
    if (conn === undefined) {
      try {
        conn = await this.open(server, a.req.cancel);
      } catch (err) {
        if (this.forced) {
          this.release(server);
          throw new BackendError('unavailable', `backend pool ${this.name} is closed`, this.name);
        }
        if (a.req.cancel?.aborted) {
          this.release(server);
          throw new BackendError('aborted', 'request aborted while connecting', this.name, server.spec);
        }
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        // Disabled before its slot is released, so no queued request picks it up meanwhile.
        this.serverFailed(server, `connect failed: ${code}`);
        this.release(server);
        a.tried.add(server);
        a.reasons.push(`${server.spec}: ${code}`);
        return null;
      }
    }
    server.requests++;
    const source = a.body instanceof BodySource ? a.body : null;
    // Only a request on a reused connection is ever sent again; others need no copy of the body.
    if (!reused || a.retried) source?.stopKeeping();
    let retry = false;
    const c = conn;
    try {
      return await c.exchange(a.params, a.body, a.req.cancel, {
        keepConn: this.options.keepAlive,
        firstByteTimeoutMs: Math.max(this.options.responseTimeoutMs - a.queuedMs, 1),
        responseTimeoutMs: this.options.responseTimeoutMs,
        onEnd: (e) => {
          // php-fpm closed the kept connection while it was idle (pm.max_requests, a restart).
          retry = e.closedEarly && reused && !a.retried && (source === null || source.replayable);
          this.finished(server, c, e, reused);
          if (!retry) source?.close();
        },
      });
    } catch (err) {
      if (retry) {
        a.retried = true;
        a.fresh = true;
        this.log.debug('-', 'kept connection was closed by the backend; retrying on a new one', {
          pool: this.name,
          server: server.spec,
        });
        return null;
      }
      if (err instanceof BackendError && err.kind === 'unavailable') {
        this.log.warn('LS_BACKEND_UNAVAILABLE', err.message, { pool: this.name, server: server.spec });
      }
      throw err;
    }
  }

  private takeIdle(server: Server): BackendConnection | undefined {
    for (;;) {
      const idle = server.idle.pop();
      if (idle === undefined) return undefined;
      if (!idle.conn.closed) return idle.conn;
    }
  }

  private async open(server: Server, cancel: Cancel | undefined): Promise<BackendConnection> {
    const socket = await connectSocket(server.target, this.options.connectTimeoutMs, cancel);
    if (this.forced) {
      socket.destroy();
      throw new Error('pool closed');
    }
    const conn = new BackendConnection(socket, { pool: this.name, server: server.spec, log: this.log });
    server.connects++;
    server.open.add(conn);
    conn.onClose = () => this.connectionClosed(server, conn);
    return conn;
  }

  private finished(server: Server, conn: BackendConnection, e: BackendExchangeEnd, reused: boolean): void {
    server.active--;
    const kind = e.error?.kind;
    if (kind === 'timeout') this.serverFailed(server, 'response timed out');
    else if (kind === 'protocol' || (kind === 'unavailable' && !(e.closedEarly && reused))) server.failures++;
    if (e.reusable && !this.closed && !conn.closed) this.park(server, conn);
    else conn.retire(this.options.idleTimeoutMs);
    this.drainQueue();
    this.checkDrained();
  }

  private release(server: Server): void {
    server.active--;
    this.drainQueue();
    this.checkDrained();
  }

  /**
   * Puts `conn` on its server's idle stack. A timer per parked connection was a setTimeout and a
   * clearTimeout per relayed request; one sweep per pool, running while anything is idle, closes
   * those idle past idleTimeoutMs (the oldest are at the bottom: takeIdle pops the newest).
   */
  private park(server: Server, conn: BackendConnection): void {
    server.idle.push({ conn, since: Date.now() });
    if (this.sweeper === null) {
      const every = Math.max(25, Math.min(1000, Math.floor(this.options.idleTimeoutMs / 4)));
      this.sweeper = setInterval(() => this.sweep(), every);
      this.sweeper.unref();
    }
  }

  private sweep(): void {
    const oldest = Date.now() - this.options.idleTimeoutMs;
    let left = 0;
    for (const server of this.servers) {
      while (server.idle.length > 0 && server.idle[0]!.since <= oldest) server.idle.shift()!.conn.destroy();
      left += server.idle.length;
    }
    if (left === 0 && this.sweeper !== null) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }

  private connectionClosed(server: Server, conn: BackendConnection): void {
    server.open.delete(conn);
    const i = server.idle.findIndex((idle) => idle.conn === conn);
    if (i >= 0) server.idle.splice(i, 1);
    this.checkDrained();
  }

  /**
   * Counts a failure and leaves the server out for disableTimeMs, logged once per disable. The
   * only server of a pool is never left out (as nginx does): there is nothing to fail over to,
   * and one slow script would otherwise turn into disableTimeMs of 502s for every request.
   */
  private serverFailed(server: Server, reason: string): void {
    server.failures++;
    if (this.servers.length < 2 || this.options.disableTimeMs === 0) return;
    const now = Date.now();
    if (server.disabledUntil > now) return;
    server.disabledUntil = now + this.options.disableTimeMs;
    this.log.warn('LS_BACKEND_DISABLED', `server left out for ${this.options.disableTimeMs} ms: ${reason}`, {
      pool: this.name,
      server: server.spec,
    });
    this.drainQueue();
  }
}
