/**
 * One connection to a FastCGI backend (PHP-FPM), carrying one request at a time: the client side
 * of the protocol. The codec is the server's own (`records.ts`, `pairs.ts`, and `wire.ts` for the
 * records we send); what is here is the policy for a peer we do not trust to be well-formed: a
 * 64 KiB cap on the CGI header block, response timeouts, FCGI_STDERR logged like nginx's
 * "FastCGI sent in stderr", and a clean verdict on every way a response can end, so `pool.ts` can
 * decide about reuse and failover.
 *
 * It stays one file over 450 lines: what is left is one state machine, in which sending,
 * receiving, timeouts and failure all settle the same exchange (`over`, `paused`, its timer), and
 * it reads better whole; the pure parts are in `wire.ts`, `body-source.ts` and `connect.ts`. The
 * response the caller gets (`Reply`, the body's queue) is its other half: it pauses and resumes
 * that same exchange.
 */
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { parseCgiHead } from '../../cgi.js';
import type { Code } from '../../errors.js';
import { FCGI_END_REQUEST, FCGI_REQUEST_COMPLETE, FCGI_STDERR, FCGI_STDIN, FCGI_STDOUT } from '../constants.js';
import { RecordParser } from '../records.js';
import {
  BackendError,
  MAX_HEAD_BYTES,
  type BackendContext,
  type BackendErrorKind,
  type BackendExchangeOptions,
  type BackendResponse,
  type Cancel,
} from './backend.js';
import type { BodySource } from './body-source.js';
import { appendHead, blankLineEnd, emptyRecord, requestBuffer, requestHead, requestLength, requestParts, REQUEST_ID, stderrLine, stdinRecords } from './wire.js';

/** A script printing to stderr in a loop must not flood the log: later records are counted. */
const STDERR_LINES_PER_REQUEST = 20;
/** Below this size PARAMS + STDIN are copied into one buffer; above, written as a corked writev. */
const COPY_LIMIT = 64 * 1024;
const noop = (): void => {};

/**
 * Response timeouts of every exchange in flight, checked by one process-wide interval (the
 * server side's wall clock does the same: core.ts). A Node timer armed at the request, armed
 * again at the first bytes and cleared at the end was two setTimeout and two clearTimeout per
 * relayed request; a deadline field and a Set entry cost next to nothing while exchanges overlap
 * (the clock runs while any is armed). A timeout fires up to TIMEOUT_TICK_MS late; the message
 * names the configured time.
 */
const TIMEOUT_TICK_MS = 25;
const timed = new Set<BackendExchange>();
let timeoutClock: NodeJS.Timeout | null = null;

// A timed-out exchange fails, which disarms it (BackendConnection.over): the last one stops the clock.
function checkTimeouts(): void {
  const now = Date.now();
  for (const ex of timed) if (now >= ex.deadline) ex.conn.timedOut(ex);
}

/** The state of the request in flight on a connection. */
class BackendExchange {
  headDelivered = false;
  /** Bytes of the header block received so far, when it spans records. */
  head: Buffer | null = null;
  headLength = 0;
  /** What the caller got, once the header block is in; the body's chunks go through it. */
  reply: Reply | null = null;
  gotBytes = false;
  /** A streamed body is still being written. */
  writing = false;
  source: BodySource | null = null;
  /** The socket is paused because the body's consumer is not reading. */
  paused = false;
  stderrLines = 0;
  /** When the armed timeout ends (Date.now() ms), and its length; armed while in `timed`. */
  deadline = 0;
  timeoutMs = 0;
  over = false;
  /** Undoes the subscription to the request's cancel. */
  offAbort: (() => void) | null = null;

  constructor(
    readonly conn: BackendConnection,
    readonly options: BackendExchangeOptions,
    readonly resolve: (res: BackendResponse) => void,
    readonly reject: (err: BackendError) => void,
    readonly cancel: Cancel | undefined,
  ) {}
}

/**
 * A connection to one backend server: one request at a time, with KEEP_CONN when asked. The
 * pool owns it; it reports each exchange's end through {@link BackendExchangeOptions.onEnd} and
 * its own close through {@link onClose}. Nothing here throws into the caller: every socket error
 * becomes a BackendError on the exchange in flight, or just a closed idle connection.
 */
export class BackendConnection {
  /** Called once when the socket has closed, whatever the reason. */
  onClose: (conn: BackendConnection) => void = noop;
  /** Exchanges started on this connection. */
  requests = 0;
  private readonly parser: RecordParser;
  private ex: BackendExchange | null = null;
  private closedFlag = false;
  private socketError: string | null = null;
  private retiring = false;
  private retireTimer: NodeJS.Timeout | null = null;
  private readonly maxHeadBytes: number;

  constructor(
    private readonly socket: Socket,
    private readonly ctx: BackendContext,
  ) {
    this.maxHeadBytes = ctx.maxHeadBytes ?? MAX_HEAD_BYTES;
    this.parser = new RecordParser(this.onRecord);
    // Requests are written whole or record by record; Nagle would only delay them (a no-op on
    // unix sockets).
    socket.setNoDelay(true);
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('end', this.onEnd);
    socket.on('close', this.onSocketClose);
  }

  /** True once the socket is closed or closing; such a connection takes no request. */
  get closed(): boolean {
    return this.closedFlag || this.socket.destroyed;
  }

  /** True while a request is in flight. */
  get busy(): boolean {
    return this.ex !== null;
  }

  /** Closes the connection now; an exchange in flight fails with `unavailable`. */
  destroy(): void {
    if (this.ex) this.fail(this.ex, 'unavailable', 'connection closed by the pool', null);
    this.socket.destroy();
  }

  /**
   * Ends a connection that is not to be reused: a FIN, so that a backend that closes on its own
   * (no KEEP_CONN) does so without a reset, and a forced close if it does not within `graceMs`.
   */
  retire(graceMs: number): void {
    if (this.closed || this.ex) return;
    this.retiring = true;
    this.parser.stop();
    this.socket.end();
    this.retireTimer ??= setTimeout(() => this.socket.destroy(), graceMs);
  }

  /**
   * Sends a request (`params` an encoded pair block) and resolves with the response at the end
   * of the backend's header block. Rejects with a BackendError; never throws.
   */
  exchange(
    params: Buffer,
    body: Buffer | BodySource | null,
    cancel: Cancel | undefined,
    options: BackendExchangeOptions,
  ): Promise<BackendResponse> {
    return new Promise((resolve, reject) => {
      const ex = new BackendExchange(this, options, resolve, reject, cancel);
      if (this.ex !== null || this.closed) {
        const err = new BackendError('unavailable', 'connection is not free', this.ctx.pool, this.ctx.server);
        options.onEnd({ reusable: false, error: err, closedEarly: false });
        reject(err);
        return;
      }
      this.ex = ex;
      this.requests++;
      this.arm(ex, options.firstByteTimeoutMs);
      if (cancel) {
        if (cancel.aborted) {
          this.fail(ex, 'aborted', 'request aborted', null);
          return;
        }
        ex.offAbort = cancel.onAbort(this.onAbort);
      }
      this.send(ex, params, body);
    });
  }

  // ------------------------------------------------------------------------------------------
  private send(ex: BackendExchange, params: Buffer, body: Buffer | BodySource | null): void {
    if (body === null || Buffer.isBuffer(body)) {
      const total = requestLength(params.length, body?.length ?? 0);
      if (total <= COPY_LIMIT) this.socket.write(requestBuffer(total, params, body, ex.options.keepConn));
      // Several MB of body: framed as views of the caller's buffer, written as one writev.
      else this.writeAll(requestParts(params, body, ex.options.keepConn));
      return;
    }
    this.socket.write(requestHead(params, ex.options.keepConn));
    ex.writing = true;
    ex.source = body;
    void this.pump(ex, body);
  }

  private writeAll(parts: Buffer[]): void {
    this.socket.cork();
    for (const part of parts) this.socket.write(part);
    this.socket.uncork();
  }

  /** Streams a body into STDIN records, waiting for the socket to drain when it asks to. */
  private async pump(ex: BackendExchange, source: BodySource): Promise<void> {
    try {
      for (let pos = 0; ; pos++) {
        const chunk = await source.read(pos);
        if (ex.over) return;
        if (chunk === null) break;
        source.written(pos);
        if (chunk.length === 0) continue;
        this.writeAll(stdinRecords(chunk));
        if (!ex.gotBytes) this.arm(ex, ex.options.responseTimeoutMs);
        if (this.socket.writableNeedDrain) await this.drained();
        if (ex.over) return;
      }
      ex.writing = false;
      this.socket.write(emptyRecord(FCGI_STDIN));
      if (!ex.gotBytes) this.arm(ex, ex.options.responseTimeoutMs);
    } catch (err) {
      // The source failed: typically the web server's client went away mid-upload.
      if (!ex.over) this.fail(ex, 'aborted', `request body failed: ${(err as Error).message}`, null, err);
    }
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  // ------------------------------------------------------------------------------------------
  // Receiving

  private readonly onData = (chunk: Buffer): void => {
    const ex = this.ex;
    if (ex === null) {
      if (this.retiring) return;
      // php-fpm sends nothing between requests; bytes here would belong to no request.
      this.ctx.log.warn('LS_BACKEND_PROTOCOL', 'data on an idle backend connection; connection closed', this.fields());
      this.parser.stop();
      this.socket.destroy();
      return;
    }
    if (!ex.gotBytes) {
      ex.gotBytes = true;
      // The response started: the request is never sent again, its body needs no replay.
      ex.source?.stopKeeping();
      this.arm(ex, ex.options.responseTimeoutMs);
    } else if (timed.has(ex)) {
      ex.deadline = Date.now() + ex.timeoutMs;
    }
    try {
      const err = this.parser.push(chunk);
      if (err && this.ex) this.protocol(this.ex, `record with FastCGI version ${err.version}`);
    } catch (err) {
      // A bug must cost one request, never the process.
      if (this.ex) this.protocol(this.ex, `internal error on backend input: ${(err as Error).message}`);
      else this.socket.destroy();
    }
  };

  private readonly onRecord = (type: number, id: number, buf: Buffer, start: number, end: number): void => {
    const ex = this.ex;
    if (ex === null) {
      this.parser.stop();
      this.ctx.log.warn('LS_BACKEND_PROTOCOL', 'record after END_REQUEST; connection closed', this.fields());
      this.socket.destroy();
      return;
    }
    if (id !== REQUEST_ID) {
      this.protocol(ex, `record of type ${type} for request id ${id}, expected ${REQUEST_ID}`);
      return;
    }
    switch (type) {
      case FCGI_STDOUT:
        if (end === start) return;
        if (ex.headDelivered) this.pushBody(ex, buf.subarray(start, end));
        else this.headBytes(ex, buf, start, end);
        return;
      case FCGI_STDERR:
        if (end > start) this.stderr(ex, buf, start, end);
        return;
      case FCGI_END_REQUEST:
        this.endRequest(ex, buf, start, end);
        return;
      default:
        this.protocol(ex, `unexpected record type ${type}`);
    }
  };

  /** Collects the CGI header block; delivers the response once its blank line is in. */
  private headBytes(ex: BackendExchange, buf: Buffer, start: number, end: number): void {
    let block: Buffer;
    let from: number;
    if (ex.headLength === 0) {
      // The usual case: the whole header block is in the first STDOUT record. No copy.
      block = buf.subarray(start, end);
      from = 0;
    } else {
      from = ex.headLength;
      block = appendHead(ex, buf, start, end);
    }
    const blank = blankLineEnd(block, from);
    if (blank < 0 || blank > this.maxHeadBytes) {
      if (block.length > this.maxHeadBytes) {
        this.protocol(ex, `CGI header block over ${this.maxHeadBytes} bytes`);
        return;
      }
      if (ex.headLength === 0) appendHead(ex, buf, start, end);
      return;
    }
    const head = parseCgiHead(block.subarray(0, blank));
    if (head === 'incomplete' || 'error' in head) {
      this.protocol(ex, head === 'incomplete' ? 'CGI header block incomplete' : head.error);
      return;
    }
    ex.head = null;
    this.deliver(ex, head.status, head.headers);
    if (block.length > blank) this.pushBody(ex, block.subarray(blank));
  }

  private deliver(ex: BackendExchange, status: number, headers: ReadonlyArray<readonly [string, string]>): void {
    const reply = new Reply(this, ex, status, headers, this.ctx.server, this.ctx.pool);
    ex.reply = reply;
    ex.headDelivered = true;
    ex.resolve(reply);
  }

  private pushBody(ex: BackendExchange, data: Buffer): void {
    if (!ex.reply!.push(data) && !ex.paused) {
      // Backpressure: stop reading from the backend; the response timeout waits too.
      ex.paused = true;
      this.socket.pause();
      this.disarm(ex);
    }
  }

  /** The reader took enough of `ex`'s body: read from the backend again. */
  resumeFor(ex: BackendExchange): void {
    if (!ex.paused || ex.over) return;
    ex.paused = false;
    this.socket.resume();
    this.arm(ex, ex.options.responseTimeoutMs);
  }

  /** The reader gave up on `ex`'s body before its end: the rest would still come. */
  abandon(ex: BackendExchange, err: Error | undefined): void {
    if (!ex.over) this.fail(ex, 'aborted', 'response body destroyed before its end', null, err);
  }

  private stderr(ex: BackendExchange, buf: Buffer, start: number, end: number): void {
    ex.stderrLines++;
    if (ex.stderrLines > STDERR_LINES_PER_REQUEST) return;
    const text = stderrLine(buf, start, end);
    if (text === '') return;
    this.ctx.log.warn('LS_BACKEND_STDERR', text, this.fields());
  }

  private endRequest(ex: BackendExchange, buf: Buffer, start: number, end: number): void {
    if (end - start !== 8) {
      this.protocol(ex, `END_REQUEST body of ${end - start} bytes, expected 8`);
      return;
    }
    // appStatus (the first 4 bytes) is ignored: php-fpm sets it from exit().
    const protocolStatus = buf[start + 4]!;
    if (protocolStatus !== FCGI_REQUEST_COMPLETE) {
      this.protocol(ex, `END_REQUEST with protocolStatus ${protocolStatus}`);
      return;
    }
    if (!ex.headDelivered) {
      this.protocol(ex, ex.headLength > 0 ? 'END_REQUEST before the end of the CGI header block' : 'END_REQUEST without output');
      return;
    }
    if (ex.stderrLines > STDERR_LINES_PER_REQUEST) {
      const more = ex.stderrLines - STDERR_LINES_PER_REQUEST;
      this.ctx.log.warn('LS_BACKEND_STDERR', `${more} more stderr records not logged`, this.fields());
    }
    this.over(ex);
    // A backend that answered before reading the whole body left the stream mid-request.
    const reusable = ex.options.keepConn && !ex.writing && !this.closed;
    if (ex.paused) {
      ex.paused = false;
      this.socket.resume();
    }
    ex.reply!.finish();
    if (ex.writing) this.socket.destroy();
    // The connection is free now, before the body's consumer has read it all: every byte is off
    // the socket, and a caller that reads the body and sends its next request must find it idle.
    ex.options.onEnd({ reusable, error: null, closedEarly: false });
  }

  // ------------------------------------------------------------------------------------------
  // Failure and close

  private readonly onAbort = (): void => {
    if (this.ex) this.fail(this.ex, 'aborted', 'request aborted', null);
  };

  private readonly onError = (err: NodeJS.ErrnoException): void => {
    this.socketError = err.code ?? err.message;
  };

  private readonly onEnd = (): void => {
    // Without allowHalfOpen Node ends our side too; 'close' follows and settles the exchange.
    this.closedFlag = true;
  };

  private readonly onSocketClose = (): void => {
    this.closedFlag = true;
    this.parser.stop();
    if (this.retireTimer !== null) clearTimeout(this.retireTimer);
    const ex = this.ex;
    if (ex !== null) {
      const why = this.socketError ?? 'EOF';
      if (ex.gotBytes) this.protocol(ex, `connection closed before END_REQUEST (${why})`);
      else this.fail(ex, 'unavailable', `connection closed before any response (${why})`, null);
    }
    this.onClose(this);
  };

  private protocol(ex: BackendExchange, message: string): void {
    this.fail(ex, 'protocol', message, 'LS_BACKEND_PROTOCOL');
  }

  private fail(ex: BackendExchange, kind: BackendErrorKind, message: string, logCode: Code | null, cause?: unknown): void {
    if (ex.over) return;
    this.over(ex);
    this.parser.stop();
    this.socket.destroy();
    const fields = this.fields();
    if (logCode !== null) this.ctx.log.warn(logCode, `${message}; connection closed`, fields);
    else if (kind === 'aborted') this.ctx.log.debug('LS_REQUEST_ABORTED', message, fields);
    const err = new BackendError(kind, `${message} (pool ${this.ctx.pool}, server ${this.ctx.server})`, this.ctx.pool, this.ctx.server, {
      cause,
    });
    const closedEarly = kind === 'unavailable' && !ex.gotBytes;
    ex.options.onEnd({ reusable: false, error: err, closedEarly });
    if (ex.headDelivered) {
      ex.reply!.fail(err);
    } else {
      ex.reject(err);
    }
  }

  // The exchange is settled: no timer, no abort listener, the connection is free.
  private over(ex: BackendExchange): void {
    ex.over = true;
    this.disarm(ex);
    ex.offAbort?.();
    ex.offAbort = null;
    if (this.ex === ex) this.ex = null;
  }

  private arm(ex: BackendExchange, ms: number): void {
    ex.timeoutMs = ms;
    ex.deadline = Date.now() + ms;
    timed.add(ex);
    if (timeoutClock === null) {
      timeoutClock = setInterval(checkTimeouts, TIMEOUT_TICK_MS);
      timeoutClock.unref();
    }
  }

  private disarm(ex: BackendExchange): void {
    // The clock stops with the last armed exchange, so a closed pool leaves no timer behind.
    if (timed.delete(ex) && timed.size === 0 && timeoutClock !== null) {
      clearInterval(timeoutClock);
      timeoutClock = null;
    }
  }

  /** The armed timeout of `ex` ran out (checkTimeouts). */
  timedOut(ex: BackendExchange): void {
    const what = ex.gotBytes ? 'backend stopped sending' : 'no response from the backend';
    this.fail(ex, 'timeout', `${what} for ${ex.timeoutMs} ms`, 'LS_BACKEND_TIMEOUT');
  }

  private fields(): Record<string, string> {
    return { pool: this.ctx.pool, server: this.ctx.server };
  }
}

/** One full record's worth: with the default 16 KiB every 64 KiB record would pause the socket. */
const BODY_HIGH_WATER = 64 * 1024;
const noWake = (): void => {};

/**
 * A backend's response as the caller gets it (BackendResponse). Its body's chunks are queued
 * here and taken with {@link read}; the Readable `body` is made only when someone asks for it.
 * A Readable per relayed request, with its listeners, `read()` and `destroy()`, was a few
 * percent of a relay's CPU, and the relay and readBody() need none of it (issue 23).
 */
class Reply implements BackendResponse {
  ended = false;
  private queue: Buffer[] = [];
  private queued = 0;
  private stream: Readable | null = null;
  private failure: BackendError | null = null;
  /** read() or destroy() was used: the body has no stream, and never will. */
  private given = false;
  /** destroy() was called: what still arrives is dropped. */
  private dropped = false;
  private wake: () => void = noWake;

  constructor(
    private readonly conn: BackendConnection,
    private readonly ex: BackendExchange,
    readonly status: number,
    readonly headers: ReadonlyArray<readonly [string, string]>,
    readonly server: string,
    readonly pool: string,
  ) {}

  get error(): BackendError | null {
    return this.failure;
  }

  get body(): Readable {
    if (this.stream) return this.stream;
    if (this.given) throw new Error('the response body is being read with read(); it has no stream');
    const stream = new Readable({
      highWaterMark: BODY_HIGH_WATER,
      read: () => this.conn.resumeFor(this.ex),
      destroy: (err, callback) => {
        // The consumer gave up before END_REQUEST: the rest of the response would still come.
        this.conn.abandon(this.ex, err ?? undefined);
        callback(err);
      },
    });
    stream.on('error', noop);
    this.stream = stream;
    for (const chunk of this.queue) stream.push(chunk);
    this.queue = [];
    this.queued = 0;
    if (this.failure) stream.destroy(this.failure);
    else if (this.ended) stream.push(null);
    return stream;
  }

  read(): Buffer | null {
    if (this.stream) throw new Error('response body already read as a stream');
    this.given = true;
    const chunk = this.queue.shift();
    if (chunk === undefined) return null;
    this.queued -= chunk.length;
    if (this.queued < BODY_HIGH_WATER) this.conn.resumeFor(this.ex);
    return chunk;
  }

  whenReadable(fn: () => void): void {
    if (this.queue.length > 0 || this.ended || this.failure) fn();
    else this.wake = fn;
  }

  destroy(): void {
    if (this.stream) {
      this.stream.destroy();
      return;
    }
    this.given = true;
    this.dropped = true;
    this.queue = [];
    this.queued = 0;
    this.conn.abandon(this.ex, undefined);
  }

  /** A chunk of the body from the backend; false when the reader is behind (pause the socket). */
  push(chunk: Buffer): boolean {
    if (this.stream) return this.stream.destroyed || this.stream.push(chunk);
    if (this.dropped) return true;
    this.queue.push(chunk);
    this.queued += chunk.length;
    this.poke();
    return this.queued < BODY_HIGH_WATER;
  }

  /** END_REQUEST: the body is complete. */
  finish(): void {
    this.ended = true;
    if (this.stream) this.stream.push(null);
    else this.poke();
  }

  /** The exchange failed after the header block. */
  fail(err: BackendError): void {
    if (this.failure) return;
    this.failure = err;
    if (this.stream) {
      if (!this.stream.destroyed) this.stream.destroy(err);
    } else this.poke();
  }

  private poke(): void {
    const wake = this.wake;
    this.wake = noWake;
    wake();
  }
}
