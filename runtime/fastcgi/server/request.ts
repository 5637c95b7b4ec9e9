/**
 * The engine-neutral request a handler sees: FastCGI params, a body stream, the FILTER data
 * stream and an abort signal. Costly parts (streams, AbortController) are created only when a
 * handler asks for them, because most requests (GET behind nginx) never do.
 */
import { Readable } from 'node:stream';
import { decodePairs, findPair } from '../pairs.js';

/** A FastCGI role. */
export type Role = 'RESPONDER' | 'AUTHORIZER' | 'FILTER';

/** FastCGI params as received: CGI variable name -> value. Null prototype: no inherited keys. */
export type Params = Record<string, string>;

/** Lets an input stream ask its connection to stop and restart reading the socket. */
export interface FlowControl {
  pauseFor(input: Input): void;
  resumeFor(input: Input): void;
}

// Marks an input dropped without a reader; never thrown or shown, so one instance serves all.
const ANSWERED = new Error('request already answered');

/** Bytes an input buffers before it asks the connection to stop reading (backpressure). */
export const INPUT_HIGH_WATER = 64 * 1024;
/** Size of the slab small records are copied into (see Input.push). */
const INPUT_SLAB = 16 * 1024;
/** Gathered bytes delivered as a chunk without waiting for the end of the socket read. */
const INPUT_SEAL = 4 * 1024;

/**
 * One input stream of a request (STDIN or DATA). Chunks are queued until a consumer asks for
 * the stream; past {@link INPUT_HIGH_WATER} queued bytes the connection pauses the socket, and
 * resumes it when the consumer reads.
 */
export class Input {
  private queue: Buffer[] | null = [];
  private queued = 0;
  private stream: Readable | null = null;
  private ended = false;
  private failure: Error | null = null;
  // Small record contents gathered into a slab of our own (see push): bytes [gatheredFrom,
  // slabUsed) are not delivered yet.
  private slab: Buffer | null = null;
  private slabUsed = 0;
  private gatheredFrom = 0;
  private sealPending = false;
  // A bytes() call waiting for the end while nobody streams the input (see bytes).
  private whole: Promise<Buffer> | null = null;
  private waiter: { resolve: (all: Buffer) => void; reject: (err: Error) => void } | null = null;
  /** Bytes received so far. */
  received = 0;

  constructor(private readonly flow: FlowControl) {}

  /** True once the empty record that ends the stream arrived. */
  get complete(): boolean {
    return this.ended;
  }

  /** Called by the connection with each record's content. */
  push(content: Buffer): void {
    // A failed stream has let go of its queue; late records for it are dropped.
    if (this.failure) return;
    this.received += content.length;
    // A view keeps its whole socket read alive, so records padded to many times their content
    // would hold memory far beyond what maxBodyBytes counts: small views are copied. Not one
    // Buffer each: a 1-byte copy from Node's shared pool keeps a whole pool slab alive (64 KiB
    // on Node 24, 8 KiB before), and each is an object on the heap. They are gathered into
    // this input's own slab instead and delivered as one chunk per socket read (see seal).
    // nginx's STDIN records are large parts of their reads and stay zero-copy.
    if (content.length * 4 < content.buffer.byteLength) {
      this.gather(content);
      return;
    }
    this.seal();
    this.deliver(content);
  }

  /** Hands a chunk to the reader, or queues it until there is one; pauses the socket when full. */
  private deliver(chunk: Buffer): void {
    if (this.stream) {
      if (!this.stream.push(chunk)) this.flow.pauseFor(this);
      return;
    }
    this.queue!.push(chunk);
    this.queued += chunk.length;
    // A waiting bytes() takes everything (the connection bounds it by maxBodyBytes): no pause.
    if (this.queued > INPUT_HIGH_WATER && this.waiter === null) this.flow.pauseFor(this);
  }

  /** Copies a small record's content to the end of the gathered bytes. */
  private gather(content: Buffer): void {
    const n = content.length;
    if (this.slab === null || this.slabUsed + n > this.slab.length) {
      this.seal();
      this.slab = Buffer.allocUnsafeSlow(Math.max(INPUT_SLAB, n));
      this.slabUsed = 0;
      this.gatheredFrom = 0;
    }
    content.copy(this.slab, this.slabUsed);
    this.slabUsed += n;
    if (this.slabUsed - this.gatheredFrom >= INPUT_SEAL) this.seal();
    // The rest of this socket read is parsed before the immediate runs: one chunk per read.
    else if (!this.sealPending) {
      this.sealPending = true;
      setImmediate(this.sealSoon);
    }
  }

  private readonly sealSoon = (): void => {
    this.sealPending = false;
    if (!this.failure) this.seal();
  };

  /** Delivers the bytes gathered since the last seal as one chunk (a view of the slab). */
  private seal(): void {
    if (this.slab === null || this.slabUsed === this.gatheredFrom) return;
    const chunk = this.slab.subarray(this.gatheredFrom, this.slabUsed);
    this.gatheredFrom = this.slabUsed;
    this.deliver(chunk);
  }

  /** Called by the connection at the empty record that ends the stream. */
  end(): void {
    if (this.ended) return;
    this.seal();
    this.ended = true;
    if (this.stream) this.stream.push(null);
    const waiter = this.waiter;
    if (waiter !== null) {
      this.waiter = null;
      waiter.resolve(this.takeQueued());
    }
  }

  /** Fails the stream (request aborted or refused); a pending read rejects with `err`. */
  fail(err: Error): void {
    if (this.ended || this.failure) return;
    this.failure = err;
    this.queue = null;
    this.slab = null;
    if (this.stream) this.stream.destroy(err);
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.reject(err);
  }

  /**
   * Drops input the handler did not read once the request is answered. Without a reader this
   * only lets go of the queue: behind nginx the answer usually precedes the empty STDIN record,
   * so this runs on nearly every request, and building an Error (a stack capture) here cost a
   * fifth of the hot path. A reader that exists gets an error so its read does not hang.
   */
  discard(): void {
    if (this.ended || this.failure) return;
    if (this.stream || this.waiter) {
      this.fail(new Error('request already answered'));
      return;
    }
    this.failure = ANSWERED;
    this.queue = null;
    this.queued = 0;
    this.slab = null;
  }

  /** The stream, created on first use; reading it is what releases backpressure. */
  get readable(): Readable {
    if (this.stream) return this.stream;
    const stream = new Readable({
      highWaterMark: INPUT_HIGH_WATER,
      read: () => this.flow.resumeFor(this),
    });
    this.stream = stream;
    if (this.failure) {
      stream.destroy(this.failure);
      return stream;
    }
    for (const chunk of this.queue!) stream.push(chunk);
    this.queue = null;
    this.queued = 0;
    if (this.ended) stream.push(null);
    // A bytes() already waiting now reads the stream like any reader.
    const waiter = this.waiter;
    if (waiter !== null) {
      this.waiter = null;
      collect(stream).then(waiter.resolve, waiter.reject);
    }
    return stream;
  }

  /**
   * Reads the whole stream into one Buffer. Without a stream (nobody asked for `readable`),
   * no Readable is made: the chunks stay queued and the promise settles at the end record.
   * An async iterator over a Readable per request was ~5% of a relayed request (pass()
   * forwards the body, empty for a GET, and behind nginx the script runs before STDIN ends).
   */
  bytes(): Promise<Buffer> {
    if (this.stream === null && this.failure === null) {
      if (this.ended) return Promise.resolve(this.takeQueued());
      if (this.whole === null) {
        this.whole = new Promise((resolve, reject) => {
          this.waiter = { resolve, reject };
        });
        // Queued past the high-water mark, the connection paused reading: all is wanted now.
        if (this.queued > INPUT_HIGH_WATER) this.flow.resumeFor(this);
      }
      return this.whole;
    }
    return collect(this.readable);
  }

  // The queued chunks as one Buffer, and the queue emptied (a second read gets nothing).
  private takeQueued(): Buffer {
    const queue = this.queue!;
    const all = queue.length === 1 ? queue[0]! : Buffer.concat(queue, this.queued);
    this.queue = [];
    this.queued = 0;
    return all;
  }
}

/** Every chunk of `stream`, as one Buffer. */
async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Where a request came in: the FastCGI connection, shared by multiplexed requests. */
export interface ConnectionInfo {
  /** Serial number of the connection within this process, from 1. */
  readonly id: number;
  /** The web server's address for TCP connections; undefined on unix sockets. */
  readonly peer: string | undefined;
}

/** One FastCGI request, as handlers see it. */
export class Request {
  /** The request body (FCGI_STDIN). */
  readonly stdin: Input;
  // FCGI_DATA exists only for FILTER requests, so its Input is made on first use.
  private dataInput: Input | null = null;
  private controller: AbortController | null = null;
  private abortReason: Error | null = null;
  private abortListeners: Array<(reason: Error) => void> | null = null;
  private rawParams: Buffer | null = null;
  private decodedParams: Params | null = null;

  constructor(
    readonly id: number,
    readonly role: Role,
    readonly keepConn: boolean,
    readonly connection: ConnectionInfo,
    /** Position of this request on its connection, from 1: above 1 means the connection was reused. */
    readonly sequence: number,
    private readonly flow: FlowControl,
  ) {
    this.stdin = new Input(flow);
  }

  /** The file a FILTER request filters (FCGI_DATA); empty for other roles. */
  get data(): Input {
    if (!this.dataInput) {
      this.dataInput = new Input(this.flow);
      if (this.abortReason) this.dataInput.fail(this.abortReason);
      // Other roles get no DATA stream: it is complete (and empty) from the start.
      else if (this.role !== 'FILTER') this.dataInput.end();
    }
    return this.dataInput;
  }

  /** The request's input streams that exist so far. */
  inputs(): Input[] {
    return this.dataInput ? [this.stdin, this.dataInput] : [this.stdin];
  }

  /** Drops unread input once the request is answered. Called by the connection. */
  discardInput(): void {
    this.stdin.discard();
    this.dataInput?.discard();
  }

  /**
   * All CGI params, decoded on first access. Decoding every name and value of a request cost
   * a quarter of the hot path while handlers read a few: prefer {@link param} for single ones.
   */
  get params(): Params {
    if (!this.decodedParams) {
      const out = Object.create(null) as Params;
      if (this.rawParams) decodePairs(this.rawParams, Infinity, out);
      this.decodedParams = out;
    }
    return this.decodedParams;
  }

  /** One CGI param (e.g. `QUERY_STRING`), without decoding the others; undefined if absent. */
  param(name: string): string | undefined {
    if (this.decodedParams) return this.decodedParams[name];
    return this.rawParams ? findPair(this.rawParams, name) : undefined;
  }

  /** The PARAMS block as received (encoded name-value pairs), e.g. to forward it unchanged. */
  get paramsBlock(): Buffer | null {
    return this.rawParams;
  }

  /** Sets the PARAMS block, already checked by `scanPairs`. Called by the connection. */
  setParams(block: Buffer): void {
    this.rawParams = block;
    this.decodedParams = null;
  }

  /** The request body as a Readable stream. */
  get body(): Readable {
    return this.stdin.readable;
  }

  /** The request body as one Buffer. */
  readBody(): Promise<Buffer> {
    return this.stdin.bytes();
  }

  /** True once the web server aborted the request or the connection closed. */
  get aborted(): boolean {
    return this.abortReason !== null;
  }

  /** Fires when the request is aborted; long-running handlers should listen to it. */
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  /**
   * Calls `fn` once if the request is aborted; returns a function that unsubscribes. The cheap
   * form of {@link signal} for every-request use: creating an AbortSignal and its listeners
   * cost more than a whole Lua run (measured under load).
   */
  onAbort(fn: (reason: Error) => void): () => void {
    (this.abortListeners ??= []).push(fn);
    return () => {
      const listeners = this.abortListeners;
      const at = listeners ? listeners.indexOf(fn) : -1;
      if (at >= 0) listeners!.splice(at, 1);
    };
  }

  /** Marks the request aborted and fails its inputs. Called by the connection. */
  abort(reason: Error): void {
    if (this.abortReason) return;
    this.abortReason = reason;
    this.stdin.fail(reason);
    this.dataInput?.fail(reason);
    this.controller?.abort(reason);
    const listeners = this.abortListeners;
    this.abortListeners = null;
    if (listeners) for (const fn of listeners) fn(reason);
  }
}
