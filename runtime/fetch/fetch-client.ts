/**
 * The outbound HTTP client behind scripts' fetch(): one per worker, holding a keep-alive pool
 * per allowed origin, the per-worker concurrency bound, and every policy of an outbound call in
 * one place (as undici keeps maxResponseSize in its client, not its parser): the allow list,
 * checked on every redirect hop before a connection exists, the redirects themselves, the
 * size bound and the deadline. Knows nothing of scripts or engines; engines/host/fetch.ts
 * turns a script's call into a {@link FetchCall}.
 *
 * Built on undici's dispatcher API (`Pool.request`), the HTTP/1.1 client inside Node's own
 * fetch, rather than on fetch itself: its headers keep repeated fields apart (fetch's Headers
 * joins them with ", "), which scripts get joined by "\n" as pass() gives them; and undici's
 * fetch accepts only a dispatcher of its own version, which Node's bundled one is not (Node 20
 * and 22 bundle undici 6, Node 24 undici 7).
 *
 * DNS: an origin is allowed by its name as written in fetch.allow. A name not in the list is
 * never resolved or connected to, so no name can lead a script to 127.0.0.1 unless an entry
 * says so; an allowed name is trusted with whatever its DNS answers.
 */
import type { Dispatcher, Pool } from 'undici';
import { LodestoneError, type Code } from '../errors.js';
import type { Logger } from '../log.js';
import { originOf, type FetchConfig } from './fetch-config.js';

/** One outbound call as the host hands it over (already validated). */
export interface FetchCall {
  readonly url: URL;
  readonly method: string;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Buffer | null;
  /** The whole call's time: waiting for a slot, connecting, redirects, reading the body. */
  readonly timeoutMs: number;
  /** Aborted when the run that made the call is stopped: the call is dropped, its socket freed. */
  readonly signal?: AbortSignal;
  /** For the log lines: the request that made the call. */
  readonly request?: number;
}

/** A whole response: status, headers in the order received (names lower case), all the bytes. */
export interface FetchResponse {
  readonly status: number;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Buffer;
}

/** A refusal or failure of fetch(): its message starts with its code, which scripts can match. */
export class FetchError extends LodestoneError {
  constructor(code: Code, detail: string) {
    super(code, `${code}: ${detail}`);
    this.name = 'FetchError';
  }
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** Hop-by-hop headers describe the connection to the upstream, not the response: dropped. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);
/** Credentials meant for one origin are not sent to the next (as fetch and curl do). */
const CREDENTIALS = new Set(['authorization', 'cookie', 'proxy-authorization']);
/** What is read of a redirect's body to keep its connection reusable; past it, the socket closes. */
const REDIRECT_BODY_BYTES = 64 * 1024;

/** Why an abort happened: the deadline (an error for the script) or the run's stop (the run's own). */
const TIMED_OUT = Symbol('timeout');

/**
 * undici, loaded on the first call: importing it took ~900 ms on the 2-core dev machine under
 * load (load average 14), start-up time that a worker whose scripts never fetch should not pay
 * (Node loads its own bundled fetch lazily for the same reason).
 */
let undici: Promise<typeof import('undici')> | null = null;
const loadUndici = (): Promise<typeof import('undici')> => (undici ??= import('undici'));

/**
 * Outbound HTTP for one worker.
 *
 * @example
 *   const client = new FetchClient(config.fetch, log);
 *   const res = await client.fetch({ url: new URL('http://127.0.0.1:8080/auth'), method: 'GET', headers: [], body: null, timeoutMs: 1000 });
 */
export class FetchClient {
  private readonly pools = new Map<string, Pool>();
  private inFlight = 0;
  private readonly waiting: Array<() => void> = [];
  private closed = false;

  constructor(
    readonly config: FetchConfig,
    private readonly log: Logger,
  ) {}

  /** Whether `url`'s origin is in fetch.allow. */
  allows(url: URL): boolean {
    const origin = originOf(url);
    return origin !== null && this.config.allow.has(origin);
  }

  /** Calls in flight and calls waiting for a slot (tests, the status page). */
  get load(): { inFlight: number; waiting: number } {
    return { inFlight: this.inFlight, waiting: this.waiting.length };
  }

  /**
   * Makes the call, following redirects; resolves with the whole response or rejects with a
   * {@link FetchError} (a TypeError when undici refuses an argument). A denied origin is
   * refused before anything else happens: no slot, no pool, no socket.
   */
  async fetch(call: FetchCall): Promise<FetchResponse> {
    this.check(call, call.url, null);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(TIMED_OUT), call.timeoutMs);
    const stop = (): void => controller.abort(call.signal?.reason);
    call.signal?.addEventListener('abort', stop, { once: true });
    let slot = false;
    try {
      if (call.signal?.aborted) throw call.signal.reason;
      await this.acquire(controller.signal);
      slot = true;
      return await this.follow(call, controller.signal);
    } catch (err) {
      throw this.failure(call, err, controller.signal);
    } finally {
      clearTimeout(timer);
      call.signal?.removeEventListener('abort', stop);
      if (slot) this.release();
    }
  }

  /** Closes every pool (a stopping worker); calls in flight fail. */
  async close(): Promise<void> {
    this.closed = true;
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.allSettled(pools.map((pool) => pool.destroy()));
  }

  // The call's hops: each one's origin checked before its pool is touched.
  private async follow(call: FetchCall, signal: AbortSignal): Promise<FetchResponse> {
    let url = call.url;
    let { method, headers, body } = call;
    for (let hop = 0; ; hop++) {
      const res = await (await this.pool(url)).request({ path: url.pathname + url.search, method, headers: flat(headers), body, signal });
      const location = REDIRECTS.has(res.statusCode) ? one(res.headers.location) : undefined;
      if (location === undefined) return { status: res.statusCode, headers: received(res.headers), body: await this.read(url, res, signal) };
      await res.body.dump({ limit: REDIRECT_BODY_BYTES }).catch(() => undefined);
      if (hop >= this.config.maxRedirects) throw new FetchError('LS_FETCH_REDIRECTS', `${describe(call.url)}: more than ${this.config.maxRedirects} redirects (fetch.maxRedirects)`);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new FetchError('LS_FETCH_FAILED', `${describe(url)}: redirect to a Location that is not a URL`);
      }
      this.check(call, next, url);
      // As fetch and browsers do: 303 (and 301/302 after a POST) become a GET without a body.
      if (res.statusCode === 303 ? method !== 'HEAD' : (res.statusCode === 301 || res.statusCode === 302) && method === 'POST') {
        method = 'GET';
        body = null;
        headers = headers.filter(([name]) => !name.toLowerCase().startsWith('content-'));
      }
      if (originOf(next) !== originOf(url)) headers = headers.filter(([name]) => !CREDENTIALS.has(name.toLowerCase()));
      url = next;
    }
  }

  // Refuses a URL whose origin is not allowed (`from`: the hop that redirected to it).
  private check(call: FetchCall, url: URL, from: URL | null): void {
    if (this.allows(url)) return;
    const origin = originOf(url) ?? url.protocol;
    const detail = from === null ? `${origin} is not in fetch.allow` : `redirect from ${describe(from)} to ${origin}, which is not in fetch.allow`;
    this.log.warn('LS_FETCH_DENIED', `fetch(): ${detail}`, { request: call.request, origin });
    throw new FetchError('LS_FETCH_DENIED', detail);
  }

  // The body, whole, or an error as soon as it is known to be too large: never cut short.
  private async read(url: URL, res: Dispatcher.ResponseData, signal: AbortSignal): Promise<Buffer> {
    const max = this.config.maxResponseBytes;
    const tooLarge = (): FetchError => new FetchError('LS_FETCH_TOO_LARGE', `${describe(url)}: response body over ${max} bytes (fetch.maxResponseBytes)`);
    const declared = Number(one(res.headers['content-length']) ?? NaN);
    if (declared > max) {
      res.body.destroy();
      throw tooLarge();
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      // Leaving the loop destroys the body: the upstream's socket is closed, nothing more is read.
      if (size > max) throw tooLarge();
      chunks.push(chunk);
    }
    if (signal.aborted) throw signal.reason;
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
  }

  // One keep-alive pool per allowed origin, made on its first call.
  private async pool(url: URL): Promise<Pool> {
    const origin = originOf(url)!;
    const found = this.pools.get(origin);
    if (found) return found;
    const { Pool } = await loadUndici();
    // Another call may have made it while undici loaded.
    let pool = this.pools.get(origin);
    if (!pool) {
      if (this.closed) throw new FetchError('LS_FETCH_FAILED', `${origin}: the worker is stopping`);
      pool = new Pool(origin, { connections: this.config.maxConcurrent });
      this.pools.set(origin, pool);
    }
    return pool;
  }

  // A slot among fetch.maxConcurrent: at once, or in turn (FIFO) until the call's deadline.
  private acquire(signal: AbortSignal): Promise<void> {
    if (this.inFlight < this.config.maxConcurrent) {
      this.inFlight++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const granted = (): void => {
        signal.removeEventListener('abort', aborted);
        resolve();
      };
      const aborted = (): void => {
        const i = this.waiting.indexOf(granted);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal.reason as Error);
      };
      signal.addEventListener('abort', aborted, { once: true });
      this.waiting.push(granted);
    });
  }

  // Hands the slot to the next waiting call, or frees it.
  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.inFlight--;
  }

  // What a failed call rejects with: its own FetchError, the run's stop as it came, a timeout,
  // an argument undici refused, or any other failure as LS_FETCH_FAILED; logged with its code.
  private failure(call: FetchCall, err: unknown, signal: AbortSignal): unknown {
    // LS_FETCH_DENIED is logged where it is found (check), before any of this.
    if (err instanceof FetchError) return err.code === 'LS_FETCH_DENIED' ? err : this.logged(call, err);
    if (signal.aborted && signal.reason !== TIMED_OUT) return signal.reason ?? err;
    if ((err as NodeJS.ErrnoException).code === 'UND_ERR_INVALID_ARG') return new TypeError(`fetch(): ${(err as Error).message}`, { cause: err });
    const where = describe(call.url);
    return this.logged(
      call,
      signal.aborted
        ? new FetchError('LS_FETCH_TIMEOUT', `${where}: no complete response within ${call.timeoutMs} ms`)
        : new FetchError('LS_FETCH_FAILED', `${where}: ${reason(err)}`),
    );
  }

  private logged(call: FetchCall, err: FetchError): FetchError {
    this.log.warn(err.code, `fetch(): ${err.message.slice(err.code.length + 2)}`, { request: call.request, origin: originOf(call.url) ?? undefined });
    return err;
  }
}

// The origin a message names: never the path or query, which may carry secrets.
function describe(url: URL): string {
  return originOf(url) ?? url.protocol;
}

// A failure's words: the system error code where there is one (ECONNREFUSED), else the message.
function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as NodeJS.ErrnoException).code;
  const cause = err.cause instanceof Error ? (err.cause as NodeJS.ErrnoException).code : undefined;
  const sys = code !== undefined && !code.startsWith('UND_ERR') ? code : cause;
  return sys !== undefined ? `${sys} (${err.message})` : err.message;
}

function one(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

// Headers as undici takes them: a flat name, value, name, value... list keeps repeated names.
function flat(headers: ReadonlyArray<readonly [string, string]>): string[] {
  const out: string[] = [];
  for (const [name, value] of headers) out.push(name, value);
  return out;
}

// The response's headers as pairs, repeated ones kept apart; hop-by-hop ones dropped.
function received(headers: Dispatcher.ResponseData['headers']): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const name of Object.keys(headers)) {
    if (HOP_BY_HOP.has(name)) continue;
    const value = headers[name];
    if (Array.isArray(value)) for (const v of value) out.push([name, v]);
    else if (value !== undefined) out.push([name, value]);
  }
  return out;
}
