/**
 * The request body as the pool forwards it: a stream that can be read again from the start once,
 * for the one retry on a fresh connection. Apart from the connection because it is a buffer
 * policy with no socket in it: the pool creates and closes it, each exchange only reads it.
 */

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
