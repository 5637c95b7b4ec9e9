/**
 * One connection to a FastCGI backend (PHP-FPM), carrying one request at a time: the client side
 * of the protocol. The codec is the server's own (`records.ts`, `pairs.ts`); what is here is the
 * policy for a peer we do not trust to be well-formed: a 64 KiB cap on the CGI header block,
 * response timeouts, FCGI_STDERR logged like nginx's "FastCGI sent in stderr", and a clean
 * verdict on every way a response can end, so `pool.ts` can decide about reuse and failover.
 */
import net, { type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { parseCgiHead } from '../../cgi.js';
import { LodestoneError, httpStatus, type Code } from '../../errors.js';
import type { Logger } from '../../log.js';
import {
  FCGI_BEGIN_REQUEST,
  FCGI_END_REQUEST,
  FCGI_KEEP_CONN,
  FCGI_PARAMS,
  FCGI_REQUEST_COMPLETE,
  FCGI_RESPONDER,
  FCGI_STDERR,
  FCGI_STDIN,
  FCGI_STDOUT,
} from '../constants.js';
import { RecordParser, frameStream, framedLength, writeHeader, writeStream } from '../records.js';

/** Where a backend listens, as `parseServer` in `pool.ts` returns it. */
export type ServerTarget =
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number };

/** What went wrong with a backend request; decides the status a caller answers with. */
export type BackendErrorKind = 'unavailable' | 'timeout' | 'protocol' | 'aborted';

const codeOf = {
  unavailable: 'LS_BACKEND_UNAVAILABLE',
  timeout: 'LS_BACKEND_TIMEOUT',
  protocol: 'LS_BACKEND_PROTOCOL',
  aborted: 'LS_REQUEST_ABORTED',
} as const satisfies Record<BackendErrorKind, Code>;

/**
 * Why a backend request failed. `code` is the stable log code, `status` what the web server's
 * client should see, {@link httpStatus} of the code (nginx answers 502 and 504 in the same
 * cases; 499 is nginx's "client closed request"). The pool and connection have already logged
 * it: callers need not log again.
 */
export class BackendError extends LodestoneError {
  readonly kind: BackendErrorKind;
  readonly status: (typeof httpStatus)[(typeof codeOf)[BackendErrorKind]];
  readonly pool: string;
  /** The server spec involved, when one was. */
  readonly server: string | undefined;

  constructor(kind: BackendErrorKind, message: string, pool: string, server?: string, options?: { cause?: unknown }) {
    super(codeOf[kind], message);
    this.name = 'BackendError';
    this.kind = kind;
    this.status = httpStatus[codeOf[kind]];
    this.pool = pool;
    this.server = server;
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

/** A request to forward. */
export interface BackendRequest {
  /**
   * The PARAMS: a ready encoded name-value block (e.g. forwarded as received) or pairs. PHP reads
   * exactly CONTENT_LENGTH bytes of the body: without that param it sees an empty body.
   */
  readonly params: Buffer | Iterable<readonly [string, string]>;
  /** FCGI_STDIN: whole, streamed, or none (an empty STDIN record is still sent). */
  readonly body: Buffer | AsyncIterable<Uint8Array> | null;
  /** Aborting closes the backend connection (php-fpm ignores FCGI_ABORT_REQUEST) and rejects/destroys the body. */
  readonly signal?: AbortSignal;
}

/** The backend's answer, delivered once its CGI header block is complete. */
export interface BackendResponse {
  /** From `Status:`, `Location` -> 302, else 200 (parseCgiHead). */
  readonly status: number;
  /** In order, names as sent, Set-Cookie may repeat; without `Status`. */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  /**
   * The body after the header block; ends at END_REQUEST. Backpressure: pausing it pauses the
   * socket. Destroying it early closes the connection (not reused). An 'error' listener is
   * installed, so a body nobody reads never crashes the process; `pipeline`, `for await` and
   * `stream.finished` still see its errors (BackendError).
   */
  readonly body: Readable;
  /** The spec of the server that answered. */
  readonly server: string;
  /** The pool's name. */
  readonly pool: string;
}

/** How an exchange ended, for the pool: reuse the connection, count a failure, retry. */
export interface BackendExchangeEnd {
  /** The connection can take another request (KEEP_CONN, clean END_REQUEST, body fully sent). */
  readonly reusable: boolean;
  /** Null when END_REQUEST arrived and the response was complete. */
  readonly error: BackendError | null;
  /** The connection closed (EOF, reset, EPIPE) before any byte of the response. */
  readonly closedEarly: boolean;
}

/** Per-exchange settings from the pool. */
export interface BackendExchangeOptions {
  readonly keepConn: boolean;
  /** Wait for the first response byte (the pool subtracts the time the request queued). */
  readonly firstByteTimeoutMs: number;
  /** Wait between reads once the response started, and between writes of a streamed body. */
  readonly responseTimeoutMs: number;
  /** Called exactly once, before the returned promise settles when it rejects. */
  readonly onEnd: (end: BackendExchangeEnd) => void;
}

/** What a connection needs to know about where it belongs; for errors and log lines. */
export interface BackendContext {
  readonly pool: string;
  readonly server: string;
  readonly log: Logger;
  /** Cap on the CGI header block; default {@link MAX_HEAD_BYTES}. */
  readonly maxHeadBytes?: number;
}

/** nginx's default fastcgi_buffer_size is 4-8 KiB; 64 KiB leaves room for many cookies. */
export const MAX_HEAD_BYTES = 64 * 1024;
/** php-fpm never multiplexes, and nginx always uses id 1: so do we. */
const REQUEST_ID = 1;
/** A FCGI_STDERR record is logged as one line, cut at this many characters. */
const STDERR_LINE_CHARS = 1024;
/** A script printing to stderr in a loop must not flood the log: later records are counted. */
const STDERR_LINES_PER_REQUEST = 20;
/** Below this size PARAMS + STDIN are copied into one buffer; above, written as a corked writev. */
const COPY_LIMIT = 64 * 1024;
const LF = 10;
const CR = 13;
const noop = (): void => {};

/**
 * How much of a streamed body is kept for a replay. A request on a reused kept connection is
 * sent again on a fresh one when the backend had closed it (php-fpm recycling a child under
 * pm.max_requests closes it after END_REQUEST, and its FIN usually arrives after we reused the
 * connection); a streamed body can only be sent again if what was taken from it is still here.
 */
export const REPLAY_LIMIT = 256 * 1024;

/**
 * A streamed request body that can be read again from the start, once more, as long as at most
 * `limit` bytes were taken from it and keeping was not stopped. The pool creates one per request;
 * each exchange reads it by position. Kept chunks are dropped once they cannot be needed (the
 * response started, or the exchange is not one that is retried).
 */
export class BodySource {
  private readonly iterator: AsyncIterator<Uint8Array>;
  private readonly kept: Array<Buffer | null> = [];
  private keptBytes = 0;
  private keeping = true;
  private taken = 0;
  private fetching: Promise<void> | null = null;
  private done = false;
  private closed = false;

  constructor(
    body: AsyncIterable<Uint8Array>,
    private readonly limit = REPLAY_LIMIT,
  ) {
    this.iterator = body[Symbol.asyncIterator]();
  }

  /** Every chunk taken so far can be read again. */
  get replayable(): boolean {
    return this.keeping;
  }

  /** Keeps no further chunks; those kept are dropped once written again. */
  stopKeeping(): void {
    this.keeping = false;
  }

  /** The chunk at `pos` (taken from the iterator when not yet), or null after the last one. */
  async read(pos: number): Promise<Buffer | null> {
    while (pos >= this.taken) {
      if (this.done) return null;
      this.fetching ??= this.fetch();
      await this.fetching;
    }
    const chunk = this.kept[pos];
    if (chunk === null || chunk === undefined) throw new Error('the request body cannot be sent again');
    return chunk;
  }

  /**
   * The chunk at `pos` was written by the exchange that is live. Only then is it dropped (when
   * not kept): the pump of a failed exchange may wake on the same chunk and must not take it.
   */
  written(pos: number): void {
    if (!this.keeping && pos < this.kept.length) this.kept[pos] = null;
  }

  /** Tells the source to stop (a Readable is destroyed); for a request that is over. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.kept.length = 0;
    if (this.done || this.iterator.return === undefined) return;
    try {
      this.iterator.return().then(noop, noop);
    } catch {
      // a broken iterator; nothing more to do
    }
  }

  private async fetch(): Promise<void> {
    try {
      const step = await this.iterator.next();
      if (step.done === true) {
        this.done = true;
        return;
      }
      const value: unknown = step.value;
      if (!(value instanceof Uint8Array)) throw new TypeError('request body chunks must be Uint8Array');
      const chunk = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
      this.kept.push(chunk);
      this.taken++;
      if (this.keeping) {
        this.keptBytes += chunk.length;
        if (this.keptBytes > this.limit) {
          // Too big to replay: everything before this chunk has been read already.
          this.keeping = false;
          this.kept.fill(null, 0, this.taken - 1);
        }
      }
    } finally {
      this.fetching = null;
    }
  }
}

/**
 * Opens a socket to `target`; rejects with the socket error (`code` ECONNREFUSED, ENOENT, ...)
 * or an ETIMEDOUT error after `timeoutMs`, or an AbortError when `signal` fires.
 */
export function connectSocket(target: ServerTarget, timeoutMs: number, signal?: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = target.kind === 'unix' ? net.connect({ path: target.path }) : net.connect({ host: target.host, port: target.port });
    const settle = (err: Error | null): void => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
      if (err === null) {
        resolve(socket);
        return;
      }
      // A destroyed socket can still report a late error; it must not become an uncaught one.
      socket.on('error', noop);
      socket.destroy();
      reject(err);
    };
    const onConnect = (): void => settle(null);
    const onError = (err: Error): void => settle(err);
    const onAbort = (): void => settle(Object.assign(new Error('aborted while connecting'), { name: 'AbortError' }));
    const timer = setTimeout(
      () => settle(Object.assign(new Error(`connect timed out after ${timeoutMs} ms`), { code: 'ETIMEDOUT' })),
      timeoutMs,
    );
    socket.once('connect', onConnect);
    socket.once('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The state of the request in flight on a connection. */
class BackendExchange {
  headDelivered = false;
  /** Bytes of the header block received so far, when it spans records. */
  head: Buffer | null = null;
  headLength = 0;
  body: Readable | null = null;
  gotBytes = false;
  /** A streamed body is still being written. */
  writing = false;
  source: BodySource | null = null;
  /** The socket is paused because the body's consumer is not reading. */
  paused = false;
  stderrLines = 0;
  timer: NodeJS.Timeout | null = null;
  over = false;

  constructor(
    readonly options: BackendExchangeOptions,
    readonly resolve: (res: BackendResponse) => void,
    readonly reject: (err: BackendError) => void,
    readonly signal: AbortSignal | undefined,
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
    signal: AbortSignal | undefined,
    options: BackendExchangeOptions,
  ): Promise<BackendResponse> {
    return new Promise((resolve, reject) => {
      const ex = new BackendExchange(options, resolve, reject, signal);
      if (this.ex !== null || this.closed) {
        const err = new BackendError('unavailable', 'connection is not free', this.ctx.pool, this.ctx.server);
        options.onEnd({ reusable: false, error: err, closedEarly: false });
        reject(err);
        return;
      }
      this.ex = ex;
      this.requests++;
      this.arm(ex, options.firstByteTimeoutMs);
      if (signal) {
        if (signal.aborted) {
          this.fail(ex, 'aborted', 'request aborted', null);
          return;
        }
        signal.addEventListener('abort', this.onAbort, { once: true });
      }
      this.send(ex, params, body);
    });
  }

  // ------------------------------------------------------------------------------------------
  // Sending

  private send(ex: BackendExchange, params: Buffer, body: Buffer | BodySource | null): void {
    const head = 16 + framedLength(params.length) + 8;
    if (body === null || Buffer.isBuffer(body)) {
      const bodyLength = body?.length ?? 0;
      const total = head + framedLength(bodyLength) + 8;
      if (total <= COPY_LIMIT) {
        const out = Buffer.allocUnsafe(total);
        let pos = this.writeHead(out, ex, params);
        pos = writeStream(out, pos, FCGI_STDIN, REQUEST_ID, body ? [body] : [], bodyLength);
        writeHeader(out, pos, FCGI_STDIN, REQUEST_ID, 0, 0);
        this.socket.write(out);
        return;
      }
      // Several MB of body: framed as views of the caller's buffer, written as one writev.
      const parts: Buffer[] = [];
      const first = Buffer.allocUnsafe(16);
      writeBegin(first, ex.options.keepConn);
      parts.push(first);
      frameStream(parts, FCGI_PARAMS, REQUEST_ID, [params], params.length);
      parts.push(emptyRecord(FCGI_PARAMS));
      if (body) frameStream(parts, FCGI_STDIN, REQUEST_ID, [body], body.length);
      parts.push(emptyRecord(FCGI_STDIN));
      this.writeAll(parts);
      return;
    }
    const out = Buffer.allocUnsafe(head);
    this.writeHead(out, ex, params);
    this.socket.write(out);
    ex.writing = true;
    ex.source = body;
    void this.pump(ex, body);
  }

  // BEGIN_REQUEST, the PARAMS stream and its closing empty record.
  private writeHead(out: Buffer, ex: BackendExchange, params: Buffer): number {
    let pos = writeBegin(out, ex.options.keepConn);
    pos = writeStream(out, pos, FCGI_PARAMS, REQUEST_ID, [params], params.length);
    return writeHeader(out, pos, FCGI_PARAMS, REQUEST_ID, 0, 0);
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
        const parts: Buffer[] = [];
        frameStream(parts, FCGI_STDIN, REQUEST_ID, [chunk], chunk.length);
        this.writeAll(parts);
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
    } else if (ex.timer !== null) {
      ex.timer.refresh();
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
      block = this.appendHead(ex, buf, start, end);
    }
    const blank = blankLineEnd(block, from);
    if (blank < 0 || blank > this.maxHeadBytes) {
      if (block.length > this.maxHeadBytes) {
        this.protocol(ex, `CGI header block over ${this.maxHeadBytes} bytes`);
        return;
      }
      if (ex.headLength === 0) this.appendHead(ex, buf, start, end);
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

  private appendHead(ex: BackendExchange, buf: Buffer, start: number, end: number): Buffer {
    const need = ex.headLength + (end - start);
    if (ex.head === null || ex.head.length < need) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * (ex.head?.length ?? 0), 4096));
      ex.head?.copy(grown, 0, 0, ex.headLength);
      ex.head = grown;
    }
    buf.copy(ex.head, ex.headLength, start, end);
    ex.headLength = need;
    return ex.head.subarray(0, need);
  }

  private deliver(ex: BackendExchange, status: number, headers: ReadonlyArray<readonly [string, string]>): void {
    const body = new Readable({
      // One full record's worth: with the default 16 KiB every 64 KiB record would pause the socket.
      highWaterMark: 64 * 1024,
      read: () => this.resumeFor(ex),
      destroy: (err, callback) => {
        // The consumer gave up before END_REQUEST: the rest of the response would still come.
        if (!ex.over) this.fail(ex, 'aborted', 'response body destroyed before its end', null, err ?? undefined);
        callback(err);
      },
    });
    body.on('error', noop);
    ex.body = body;
    ex.headDelivered = true;
    ex.resolve({ status, headers, body, server: this.ctx.server, pool: this.ctx.pool });
  }

  private pushBody(ex: BackendExchange, data: Buffer): void {
    const body = ex.body!;
    if (body.destroyed) return;
    if (!body.push(data) && !ex.paused) {
      // Backpressure: stop reading from the backend; the response timeout waits too.
      ex.paused = true;
      this.socket.pause();
      this.disarm(ex);
    }
  }

  private resumeFor(ex: BackendExchange): void {
    if (!ex.paused || ex.over) return;
    ex.paused = false;
    this.socket.resume();
    this.arm(ex, ex.options.responseTimeoutMs);
  }

  private stderr(ex: BackendExchange, buf: Buffer, start: number, end: number): void {
    ex.stderrLines++;
    if (ex.stderrLines > STDERR_LINES_PER_REQUEST) return;
    const limit = Math.min(end, start + STDERR_LINE_CHARS * 4);
    let text = buf.toString('utf8', start, limit).trim();
    if (text.length > STDERR_LINE_CHARS || limit < end) text = text.slice(0, STDERR_LINE_CHARS) + '...';
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
    ex.body!.push(null);
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
      if (!ex.body!.destroyed) ex.body!.destroy(err);
    } else {
      ex.reject(err);
    }
  }

  // The exchange is settled: no timer, no abort listener, the connection is free.
  private over(ex: BackendExchange): void {
    ex.over = true;
    this.disarm(ex);
    ex.signal?.removeEventListener('abort', this.onAbort);
    if (this.ex === ex) this.ex = null;
  }

  private arm(ex: BackendExchange, ms: number): void {
    this.disarm(ex);
    ex.timer = setTimeout(() => this.timedOut(ex, ms), ms);
  }

  private disarm(ex: BackendExchange): void {
    if (ex.timer !== null) {
      clearTimeout(ex.timer);
      ex.timer = null;
    }
  }

  private timedOut(ex: BackendExchange, ms: number): void {
    const what = ex.gotBytes ? 'backend stopped sending' : 'no response from the backend';
    this.fail(ex, 'timeout', `${what} for ${ms} ms`, 'LS_BACKEND_TIMEOUT');
  }

  private fields(): Record<string, string> {
    return { pool: this.ctx.pool, server: this.ctx.server };
  }
}

function writeBegin(out: Buffer, keepConn: boolean): number {
  const pos = writeHeader(out, 0, FCGI_BEGIN_REQUEST, REQUEST_ID, 8, 0);
  out[pos] = FCGI_RESPONDER >> 8;
  out[pos + 1] = FCGI_RESPONDER & 0xff;
  out[pos + 2] = keepConn ? FCGI_KEEP_CONN : 0;
  out.fill(0, pos + 3, pos + 8);
  return pos + 8;
}

function emptyRecord(type: number): Buffer {
  const out = Buffer.allocUnsafe(8);
  writeHeader(out, 0, type, REQUEST_ID, 0, 0);
  return out;
}

/**
 * Offset just after the blank line that ends a CGI header block (LF or CRLF line ends), looking
 * only at line feeds at or after `from`; -1 when there is none yet.
 */
export function blankLineEnd(buf: Buffer, from: number): number {
  let lf = buf.indexOf(LF, from);
  while (lf >= 0) {
    const prev = lf > 0 ? buf[lf - 1] : -1;
    if (lf === 0 || prev === LF || (prev === CR && (lf === 1 || buf[lf - 2] === LF))) return lf + 1;
    lf = buf.indexOf(LF, lf + 1);
  }
  return -1;
}
