/**
 * What a backend request is made of, shared by the pool, the connection and the callers of
 * pass(): the request, the response, how one exchange ends, and BackendError. Apart from the
 * connection so that a caller that only reads a response (readBody) or maps an error to a status
 * needs none of the socket code.
 */
import type { Readable } from 'node:stream';
import { LodestoneError, httpStatus, type Code } from '../../errors.js';
import type { Logger } from '../../log.js';

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
  readonly cancel?: Cancel;
}

/**
 * What cancels a backend request: whether it is cancelled, and a subscription that returns its
 * own undoing. The server's Request is one, so a pass() makes no AbortController: an
 * AbortSignal and its listeners were ~3% of the CPU of a relayed request. {@link cancelOf}
 * makes one of an AbortSignal.
 */
export interface Cancel {
  readonly aborted: boolean;
  onAbort(fn: () => void): () => void;
}

/** An AbortSignal as a {@link Cancel}. */
export function cancelOf(signal: AbortSignal): Cancel {
  return {
    get aborted() {
      return signal.aborted;
    },
    onAbort(fn) {
      const listener = (): void => fn();
      signal.addEventListener('abort', listener, { once: true });
      return () => signal.removeEventListener('abort', listener);
    },
  };
}

/** The backend's answer, delivered once its CGI header block is complete. */
export interface BackendResponse {
  /** From `Status:`, `Location` -> 302, else 200 (parseCgiHead). */
  readonly status: number;
  /** In order, names as sent, Set-Cookie may repeat; without `Status`. */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  /**
   * The body after the header block as a stream, made on first use; ends at END_REQUEST.
   * Backpressure: pausing it pauses the socket. Destroying it early closes the connection (not
   * reused). An 'error' listener is installed, so a body nobody reads never crashes the
   * process; `pipeline`, `for await` and `stream.finished` still see its errors (BackendError).
   * Read the body either this way or with {@link read}, not both.
   */
  readonly body: Readable;
  /**
   * The next chunk of the body that has arrived, or null: the body without a stream, for
   * readers that take what is there and wait with {@link whenReadable} (the relay, readBody).
   * Taking chunks is what lets the socket be read again past 64 KiB queued (backpressure).
   */
  read(): Buffer | null;
  /** Calls `fn` once, when a chunk is there to {@link read}, the body has ended, or it failed: at once if so now. */
  whenReadable(fn: () => void): void;
  /** Why the body failed after the header block (the connection broke, a protocol error), or null. */
  readonly error: BackendError | null;
  /**
   * Gives up on the body: before END_REQUEST the connection is closed (not reused), since the
   * rest of the response would still come.
   */
  destroy(): void;
  /**
   * True once END_REQUEST arrived: what is left of the response is queued, so a relay can end
   * its own response with it in one write instead of waiting.
   */
  readonly ended: boolean;
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

/**
 * Reads a whole response body, for caching. Past `maxBytes` it stops reading, destroys the body
 * (so the connection is closed, not reused) and rejects with a BackendError of kind 'protocol'
 * (502): the caller asked for a response it can hold, and the backend sent one it cannot. A body
 * that fails rejects with its BackendError.
 */
export async function readBody(res: BackendResponse, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for (;;) {
    let chunk: Buffer | null;
    while ((chunk = res.read()) !== null) {
      size += chunk.length;
      if (size > maxBytes) {
        res.destroy();
        throw new BackendError('protocol', `response body over ${maxBytes} bytes`, res.pool, res.server);
      }
      chunks.push(chunk);
    }
    if (res.error) throw res.error;
    if (res.ended) return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
    await new Promise<void>((resolve) => res.whenReadable(resolve));
  }
}
