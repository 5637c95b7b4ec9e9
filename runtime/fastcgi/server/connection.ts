/**
 * One FastCGI connection from a web server: request ids, multiplexing, KEEP_CONN, GET_VALUES,
 * ABORT_REQUEST, limits and timeouts. All protocol policy lives here, in one place; the codec
 * below it (`records.ts`) only knows bytes, the handler above it only knows requests.
 *
 * It stays one file over 450 lines: it is one state machine on the hot path, in which every
 * record type, the flow control, the timeouts and each way a request ends change the same
 * exchanges; split, its transitions would be read across files and called across objects on
 * every record.
 */
import type { Socket } from 'node:net';
import { STATUS_CODES } from 'node:http';
import { LodestoneError, httpStatus, type AnswerCode, type Code } from '../../errors.js';
import type { Logger } from '../../log.js';
import { Request, type ConnectionInfo, type FlowControl, type Input, type Role } from './request.js';
import { Response, type ResponseChannel } from './response.js';
import {
  FCGI_ABORT_REQUEST,
  FCGI_BEGIN_REQUEST,
  FCGI_CANT_MPX_CONN,
  FCGI_DATA,
  FCGI_GET_VALUES,
  FCGI_GET_VALUES_RESULT,
  FCGI_KEEP_CONN,
  FCGI_OVERLOADED,
  FCGI_PARAMS,
  FCGI_REQUEST_COMPLETE,
  FCGI_STDIN,
  FCGI_UNKNOWN_ROLE,
  roleNames,
} from '../constants.js';
import type { Limits } from './limits.js';
import { decodePairs, encodePairs, scanPairs } from '../pairs.js';
import { RecordParser, encodeEndRequest, encodeRecord, encodeUnknownType } from '../records.js';

/** How long a graceful shutdown waits for the first request on a just-opened connection. */
const FIRST_REQUEST_GRACE_MS = 1000;

/**
 * Handles one request. The response is ended for the handler when the handler returns (or its
 * promise settles) without ending it; a throw or rejection becomes a 500.
 */
export type Handler = (req: Request, res: Response) => void | Promise<void>;

/** Counters kept per server process; read by tests and the status page (handlers/status.ts). */
export interface Stats {
  connectionsAccepted: number;
  connectionsRefused: number;
  requestsAccepted: number;
  requestsCompleted: number;
  requestsRefused: number;
  requestsAborted: number;
  protocolErrors: number;
}

/** What all connections of one server share. */
export interface ServerContext {
  readonly limits: Limits;
  readonly handler: Handler;
  readonly log: Logger;
  /** Answers to GET_VALUES, computed once from the limits. */
  readonly values: Readonly<Record<string, string>>;
  readonly stats: Stats;
  /** Requests in flight across all connections (FCGI_MAX_REQS is enforced against it). */
  activeRequests: number;
  onClose(conn: Connection): void;
}

/** A request on a connection, with the state of its PARAMS stream. */
class ServerExchange implements ResponseChannel {
  readonly request: Request;
  readonly response: Response;
  readonly startedAt = Date.now();
  paramsBytes = 0;
  private paramsBuf: Buffer | null = null;
  paramsDone = false;
  handlerStarted = false;
  done = false;

  constructor(
    private readonly conn: Connection,
    readonly requestId: number,
    role: Role,
    sequence: number,
    readonly keepConn: boolean,
  ) {
    this.request = new Request(requestId, role, keepConn, conn, sequence, conn);
    this.response = new Response(this);
  }

  get open(): boolean {
    return !this.done;
  }

  /**
   * Collects PARAMS content. Keeping views of the socket's reads would let a peer pin whole
   * reads of padding with one content byte each (memory ~260x the bytes the limit counts), so
   * content is copied into one buffer, except the common case of nginx and lighttpd: a single
   * record that is most of its read, kept as a view (a read is at most 4x what it holds).
   */
  appendParams(src: Buffer, start: number, end: number): void {
    const used = this.paramsBytes - (end - start);
    let buf = this.paramsBuf;
    if (!buf && (end - start) * 4 >= src.buffer.byteLength) {
      this.paramsBuf = src.subarray(start, end);
      return;
    }
    if (!buf || buf.length < this.paramsBytes) {
      const grown = Buffer.allocUnsafe(Math.max(this.paramsBytes, used * 2, 1024));
      if (buf) buf.copy(grown, 0, 0, used);
      buf = this.paramsBuf = grown;
    }
    src.copy(buf, used, start, end);
  }

  /** The whole PARAMS stream received so far. */
  paramsBlock(): Buffer {
    return this.paramsBuf ? this.paramsBuf.subarray(0, this.paramsBytes) : Buffer.alloc(0);
  }

  send(data: Buffer | Buffer[], last: boolean): boolean {
    return this.conn.send(this, data, last);
  }

  drain(): Promise<void> {
    return this.conn.drain();
  }
}

/**
 * The connection an accepted socket serves. Its listeners are the three shared functions below,
 * which find the connection here, rather than closures over it: Node keeps a closed socket alive
 * past a scavenge or two (until its handle is freed), and whatever the socket reaches is
 * promoted with it. Cleared on close, so that a closed socket reaches nothing of ours.
 */
const kConnection = Symbol('lodestone.connection');

interface ServedSocket extends Socket {
  [kConnection]: Connection | null;
}

function onSocketData(this: ServedSocket, chunk: Buffer): void {
  this[kConnection]?.onData(chunk);
}

function onSocketError(this: ServedSocket, err: Error): void {
  this[kConnection]?.onError(err);
}

function onSocketClose(this: ServedSocket): void {
  const conn = this[kConnection];
  if (!conn) return;
  this[kConnection] = null;
  conn.onClose();
}

/**
 * A server's open connections, linked through the connections themselves. Not a Set: a Set whose
 * size swings between none and a few dozen, as under a connection per request, is rehashed into
 * new tables again and again, and the table live at a scavenge is promoted together with the
 * connections it holds (measured with the gc bench scenario: ~550 bytes promoted per connection,
 * as much as the rest of the connection's objects).
 */
export class ConnectionList implements Iterable<Connection> {
  private head: Connection | null = null;
  private count = 0;

  get size(): number {
    return this.count;
  }

  add(conn: Connection): void {
    conn.listNext = this.head;
    if (this.head !== null) this.head.listPrev = conn;
    this.head = conn;
    conn.listed = true;
    this.count++;
  }

  delete(conn: Connection): void {
    if (!conn.listed) return;
    if (conn.listPrev !== null) conn.listPrev.listNext = conn.listNext;
    else this.head = conn.listNext;
    if (conn.listNext !== null) conn.listNext.listPrev = conn.listPrev;
    conn.listPrev = conn.listNext = null;
    conn.listed = false;
    this.count--;
  }

  /** Each connection; one may leave the list while the walk is at it. */
  *[Symbol.iterator](): Generator<Connection> {
    for (let conn = this.head; conn !== null; ) {
      const next = conn.listNext;
      yield conn;
      conn = next;
    }
  }
}

/** Serves the FastCGI protocol on one accepted socket. */
export class Connection implements FlowControl, ConnectionInfo {
  /** Links of the server's {@link ConnectionList}; only it writes them. */
  listPrev: Connection | null = null;
  listNext: Connection | null = null;
  listed = false;
  /** When the connection last became idle (ms); -1 while a request is in flight. */
  private idleSince = Date.now();
  private requestsBegun = 0;
  // The exchange in flight when there is one, as from nginx and lighttpd (one request id at a
  // time); `more` holds the others only when a web server multiplexes, made on first use, as is
  // `pausedBy`: a connection that serves one request allocates neither.
  private last: ServerExchange | null = null;
  private more: Map<number, ServerExchange> | null = null;
  private pausedBy: Set<Input> | null = null;
  private readonly parser: RecordParser;
  private closed = false;
  private draining = false;
  /** While shutting down: when a connection still waiting for its first request is ended (ms). */
  private graceUntil = 0;

  constructor(
    private readonly socket: Socket,
    readonly id: number,
    private readonly ctx: ServerContext,
  ) {
    this.parser = new RecordParser(this.onRecord);
    const served = socket as ServedSocket;
    served[kConnection] = this;
    socket.on('data', onSocketData);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
  }

  /**
   * The web server's address (TCP), read when a log line needs it: Node asks the kernel
   * (getpeername) on first use, a syscall per connection that only error paths want.
   */
  get peer(): string | undefined {
    return this.socket.remoteAddress;
  }

  /** Requests in flight on this connection. */
  get activeRequests(): number {
    return (this.last === null ? 0 : 1) + (this.more === null ? 0 : this.more.size);
  }

  /** Every exchange in flight. */
  private *exchanges(): Generator<ServerExchange> {
    if (this.last !== null) yield this.last;
    if (this.more !== null) yield* this.more.values();
  }

  /** Closes the connection now, aborting its requests. */
  destroy(): void {
    this.socket.destroy();
  }

  /**
   * Ends the connection once no request is in flight; for graceful shutdown (stop, reload,
   * retirement). An idle connection that has served requests is ended now: a web server that
   * reuses it at that instant sees the close on a cached connection and retries (nginx does for
   * idempotent requests). One that has not served a request yet, or holds part of a record, is
   * given {@link FIRST_REQUEST_GRACE_MS} to deliver it: the web server opened it to send a
   * request and would not retry on a fresh connection (Go's http.Server.Shutdown treats new
   * connections the same way).
   */
  closeWhenIdle(): void {
    this.draining = true;
    if (this.activeRequests > 0) return;
    if (this.requestsBegun > 0 && !this.parser.midRecord) this.endConnection();
    else if (this.graceUntil === 0) this.graceUntil = Date.now() + FIRST_REQUEST_GRACE_MS;
  }

  /** Enforces the idle and request timeouts; called by the server's sweep timer. */
  sweep(now: number): void {
    const limits = this.ctx.limits;
    if (this.activeRequests === 0) {
      if (this.graceUntil > 0 && now >= this.graceUntil) {
        this.graceUntil = 0;
        this.endConnection();
        return;
      }
      if (this.idleSince >= 0 && now - this.idleSince >= limits.idleTimeoutMs) {
        this.ctx.log.debug('LS_IDLE_TIMEOUT', 'idle connection closed', { conn: this.id });
        this.socket.destroy();
      }
      return;
    }
    for (const ex of [...this.exchanges()]) {
      if (now - ex.startedAt >= limits.requestTimeoutMs) this.timeout(ex, now);
    }
  }

  /** Writes a request's framed output; see {@link ResponseChannel.send}. */
  send(ex: ServerExchange, data: Buffer | Buffer[], last: boolean): boolean {
    if (ex.done || this.closed) return false;
    if (Buffer.isBuffer(data)) {
      this.socket.write(data);
    } else {
      // Corked writes leave as one writev.
      this.socket.cork();
      for (const buf of data) this.socket.write(buf);
      this.socket.uncork();
    }
    if (last) this.complete(ex);
    return true;
  }

  /** Resolves when the socket's write buffer has drained, or the connection is gone. */
  drain(): Promise<void> {
    const socket = this.socket;
    if (this.closed || !socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        socket.off('drain', done);
        socket.off('close', done);
        resolve();
      };
      socket.on('drain', done);
      socket.on('close', done);
    });
  }

  pauseFor(input: Input): void {
    const paused = (this.pausedBy ??= new Set());
    if (paused.size === 0) this.socket.pause();
    paused.add(input);
  }

  resumeFor(input: Input): void {
    const paused = this.pausedBy;
    if (paused !== null && paused.delete(input) && paused.size === 0 && !this.closed) this.socket.resume();
  }

  /** The socket's data (through onSocketData). */
  onData(chunk: Buffer): void {
    try {
      const err = this.parser.push(chunk);
      if (err) this.fail('LS_PROTOCOL_VERSION', `record with FastCGI version ${err.version}`);
    } catch (err) {
      // A bug must cost one connection, never the process.
      this.ctx.log.error('LS_RECORD_MALFORMED', `internal error on input: ${(err as Error).stack ?? String(err)}`, {
        conn: this.id,
      });
      this.socket.destroy();
    }
  }

  /** The socket's error (through onSocketError); its close follows. */
  onError(err: Error): void {
    this.ctx.log.debug('LS_SOCKET_ERROR', err.message, { conn: this.id });
  }

  /** The socket's close (through onSocketClose), once. */
  onClose(): void {
    this.closed = true;
    this.parser.stop();
    if (this.activeRequests > 0) this.abortAll();
    this.last = null;
    this.more = null;
    this.pausedBy = null;
    this.ctx.onClose(this);
  }

  private abortAll(): void {
    for (const ex of [...this.exchanges()]) {
      ex.done = true;
      this.ctx.activeRequests--;
      this.ctx.stats.requestsAborted++;
      ex.request.abort(new LodestoneError('LS_REQUEST_ABORTED', 'connection closed'));
      if (ex.handlerStarted) {
        this.ctx.log.info('LS_REQUEST_ABORTED', 'connection closed during request', this.fields(ex));
      }
    }
  }

  private readonly onRecord = (type: number, id: number, buf: Buffer, start: number, end: number): void => {
    if (id === 0) {
      this.management(type, buf.subarray(start, end));
      return;
    }
    if (type === FCGI_BEGIN_REQUEST) {
      this.begin(id, buf, start, end);
      return;
    }
    const ex = this.find(id);
    switch (type) {
      case FCGI_PARAMS:
        if (ex) this.params(ex, buf, start, end);
        return;
      case FCGI_STDIN:
        if (ex) this.input(ex, ex.request.stdin, buf, start, end);
        return;
      case FCGI_DATA:
        if (ex) this.input(ex, ex.request.data, buf, start, end);
        return;
      case FCGI_ABORT_REQUEST:
        if (ex) this.abort(ex);
        return;
      default:
        this.fail('LS_RECORD_MALFORMED', `unexpected record type ${type} for request ${id}`);
    }
  };

  private begin(id: number, buf: Buffer, start: number, end: number): void {
    if (end - start !== 8) {
      this.fail('LS_RECORD_MALFORMED', `BEGIN_REQUEST body of ${end - start} bytes, expected 8`);
      return;
    }
    // The spec has the application ignore a BEGIN_REQUEST for an id that is in use.
    if (this.find(id)) return;
    const roleNumber = (buf[start]! << 8) | buf[start + 1]!;
    const keepConn = (buf[start + 2]! & FCGI_KEEP_CONN) !== 0;
    const role = roleNames[roleNumber];
    const limits = this.ctx.limits;
    if (!role) {
      this.ctx.log.warn('LS_UNKNOWN_ROLE', `unknown role ${roleNumber}`, { conn: this.id, request: id });
      this.refuseBegin(id, FCGI_UNKNOWN_ROLE, keepConn);
      return;
    }
    if (this.activeRequests >= limits.maxRequestsPerConnection) {
      const mpx = limits.maxRequestsPerConnection > 1;
      this.ctx.log.warn('LS_OVERLOADED', 'too many requests on one connection', {
        conn: this.id,
        request: id,
        limit: limits.maxRequestsPerConnection,
      });
      this.refuseBegin(id, mpx ? FCGI_OVERLOADED : FCGI_CANT_MPX_CONN, keepConn);
      return;
    }
    if (this.ctx.activeRequests >= limits.maxRequests) {
      this.ctx.log.warn('LS_OVERLOADED', 'too many requests in flight', {
        conn: this.id,
        request: id,
        limit: limits.maxRequests,
      });
      this.refuseBegin(id, FCGI_OVERLOADED, keepConn);
      return;
    }
    this.requestsBegun++;
    this.ctx.activeRequests++;
    this.ctx.stats.requestsAccepted++;
    this.idleSince = -1;
    const ex = new ServerExchange(this, id, role, this.requestsBegun, keepConn);
    if (this.last === null) this.last = ex;
    else (this.more ??= new Map()).set(id, ex);
  }

  private find(id: number): ServerExchange | undefined {
    const last = this.last;
    if (last !== null && last.requestId === id) return last;
    return this.more === null ? undefined : this.more.get(id);
  }

  private refuseBegin(id: number, protocolStatus: number, keepConn: boolean): void {
    this.ctx.stats.requestsRefused++;
    this.socket.write(encodeEndRequest(id, 0, protocolStatus));
    if (!keepConn) this.closeWhenIdle();
  }

  private params(ex: ServerExchange, buf: Buffer, start: number, end: number): void {
    // A second empty PARAMS record (or stray PARAMS after the end) is ignored, not fatal.
    if (ex.paramsDone) return;
    const limits = this.ctx.limits;
    if (end > start) {
      ex.paramsBytes += end - start;
      if (ex.paramsBytes > limits.maxParamsBytes) {
        this.refuse(ex, 'LS_PARAMS_TOO_LARGE', `params over ${limits.maxParamsBytes} bytes`);
        return;
      }
      ex.appendParams(buf, start, end);
      return;
    }
    ex.paramsDone = true;
    const block = ex.paramsBlock();
    const err = scanPairs(block, limits.maxParams);
    if (err === 'malformed') {
      this.fail('LS_PARAMS_MALFORMED', 'a name-value pair runs past the end of PARAMS');
      return;
    }
    if (err === 'too-many') {
      this.refuse(ex, 'LS_TOO_MANY_PARAMS', `more than ${limits.maxParams} params`);
      return;
    }
    ex.request.setParams(block);
    const declared = ex.request.param('CONTENT_LENGTH');
    if (declared !== undefined && Number(declared) > limits.maxBodyBytes) {
      this.refuse(ex, 'LS_BODY_TOO_LARGE', `CONTENT_LENGTH ${declared} over ${limits.maxBodyBytes}`);
      return;
    }
    this.run(ex);
  }

  private input(ex: ServerExchange, input: Input, buf: Buffer, start: number, end: number): void {
    if (input.complete) return;
    if (end === start) {
      input.end();
      return;
    }
    const max = this.ctx.limits.maxBodyBytes;
    if (input.received + (end - start) > max) {
      this.refuse(ex, 'LS_BODY_TOO_LARGE', `body over ${max} bytes`);
      return;
    }
    input.push(buf.subarray(start, end));
  }

  private run(ex: ServerExchange): void {
    ex.handlerStarted = true;
    let result: void | Promise<void>;
    try {
      result = this.ctx.handler(ex.request, ex.response);
    } catch (err) {
      this.handlerFailed(ex, err);
      return;
    }
    if (result !== undefined && typeof result.then === 'function') {
      result.then(
        () => this.endFor(ex),
        (err: unknown) => this.handlerFailed(ex, err),
      );
    } else {
      this.endFor(ex);
    }
  }

  // Ends the response the handler left open; ending can throw on a bad status set by it.
  private endFor(ex: ServerExchange): void {
    if (ex.response.finished) return;
    try {
      ex.response.end();
    } catch (err) {
      this.handlerFailed(ex, err);
    }
  }

  private handlerFailed(ex: ServerExchange, err: unknown): void {
    if (ex.done) return;
    const message = err instanceof Error ? err.message : String(err);
    this.ctx.log.error('LS_HANDLER_FAILED', message, this.fields(ex));
    this.replyError(ex, 'LS_HANDLER_FAILED');
  }

  /** Answers with the code's status if nothing was sent yet, else cuts the response short. */
  private replyError(ex: ServerExchange, code: AnswerCode): void {
    const res = ex.response;
    if (res.headersSent) {
      this.endAbruptly(ex);
      return;
    }
    const status = httpStatus[code];
    res.reset();
    res.status = status;
    res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    res.end(`${status} ${STATUS_CODES[status] ?? ''}\n`);
  }

  private refuse(ex: ServerExchange, code: AnswerCode, message: string): void {
    this.ctx.log.warn(code, message, this.fields(ex));
    this.ctx.stats.requestsRefused++;
    ex.request.abort(new LodestoneError(code, message));
    this.replyError(ex, code);
  }

  private abort(ex: ServerExchange): void {
    this.ctx.log.debug('LS_REQUEST_ABORTED', 'ABORT_REQUEST from the web server', this.fields(ex));
    this.ctx.stats.requestsAborted++;
    ex.request.abort(new LodestoneError('LS_REQUEST_ABORTED'));
    this.endAbruptly(ex);
  }

  private timeout(ex: ServerExchange, now: number): void {
    const fields = { ...this.fields(ex), elapsedMs: now - ex.startedAt };
    this.ctx.log.warn('LS_REQUEST_TIMEOUT', 'request timed out', fields);
    if (!ex.paramsDone) {
      // The web server is too slow to even send the params (a slow loris): drop the connection.
      this.socket.destroy();
      return;
    }
    ex.request.abort(new LodestoneError('LS_REQUEST_TIMEOUT'));
    this.replyError(ex, 'LS_REQUEST_TIMEOUT');
  }

  /** Sends END_REQUEST alone, after an abort or when output had already started. */
  private endAbruptly(ex: ServerExchange): void {
    if (ex.done) return;
    if (!this.closed) this.socket.write(encodeEndRequest(ex.requestId, 1, FCGI_REQUEST_COMPLETE));
    this.complete(ex);
  }

  private complete(ex: ServerExchange): void {
    ex.done = true;
    if (this.last === ex) this.last = null;
    else this.more?.delete(ex.requestId);
    this.ctx.activeRequests--;
    this.ctx.stats.requestsCompleted++;
    // Input the handler never read is dropped, and must not keep the socket paused.
    ex.request.discardInput();
    if (this.pausedBy !== null && this.pausedBy.size > 0) {
      for (const input of ex.request.inputs()) this.resumeFor(input);
    }
    // Without KEEP_CONN the connection closes after this request, but not under requests still
    // in flight on it: the web server multiplexed them there and waits for their answers.
    if (!ex.keepConn) this.draining = true;
    if (this.activeRequests === 0) {
      this.idleSince = Date.now();
      if (this.draining) this.endConnection();
    }
  }

  private endConnection(): void {
    this.parser.stop();
    this.socket.end();
  }

  private management(type: number, content: Buffer): void {
    if (type !== FCGI_GET_VALUES) {
      this.socket.write(encodeUnknownType(type));
      return;
    }
    const asked = Object.create(null) as Record<string, string>;
    if (decodePairs(content, 65535, asked) !== null) {
      this.fail('LS_RECORD_MALFORMED', 'malformed GET_VALUES');
      return;
    }
    const reply: Array<[string, string]> = [];
    for (const name in asked) {
      const value = this.ctx.values[name];
      if (value !== undefined) reply.push([name, value]);
    }
    this.socket.write(encodeRecord(FCGI_GET_VALUES_RESULT, 0, encodePairs(reply)));
  }

  private fail(code: Code, message: string): void {
    this.ctx.stats.protocolErrors++;
    this.ctx.log.warn(code, message + '; connection closed', { conn: this.id, peer: this.peer });
    this.parser.stop();
    this.socket.destroy();
  }

  private fields(ex: ServerExchange): Record<string, string | number | undefined> {
    return { conn: this.id, request: ex.requestId, script: ex.request.param('SCRIPT_FILENAME') };
  }
}
