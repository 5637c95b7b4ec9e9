/**
 * The shared content cache: Redis, through the official client (@redis/client), one connection
 * per worker. A cache must never make a request slower than not having one, so:
 *
 * - Creation never waits: the connection is made in the background. Calls made while the first
 *   connection is under way wait for it, at most timeoutMs.
 * - Down (refused, closed, no socket): calls fail at once (disableOfflineQueue; nothing queues
 *   for later) and miss. We reconnect ourselves, with backoff capped at ~1 s: the client's own
 *   reconnect loop sleeps on a timer nobody can cancel, which close() could not clean up.
 * - Hung (SIGSTOP, a long blocking command, a dead link): a command unanswered after timeoutMs is
 *   a miss, and the cache counts as down: later calls fail at once instead of each waiting
 *   timeoutMs, while one PING waits in line behind the stuck commands; its answer means "back".
 *   The client's own `timeout` option does not help here: it stops timing once a command is
 *   written to the socket, which is exactly when a hung server leaves it waiting.
 *   A timed-out set/delete/incr may still be applied when Redis wakes up.
 * - The outage is logged once (LS_CACHE_UNAVAILABLE, at most once per 10 s however it flaps),
 *   its end once (LS_CACHE_RECOVERED), never per call.
 *
 * Values are bytes both ways (bulk strings mapped to Buffer), keys are UTF-8 with the prefix in
 * front. incr with a TTL runs `SET key 0 PX ttl NX` then INCRBY in one Lua script, so the key is
 * created with its TTL atomically and an existing key keeps its own; the "result == by, then
 * PEXPIRE" shortcut would also reset the TTL of a counter that was at 0, and leave a key without
 * TTL if the worker died between the two commands. (MULTI is not used: the client queues a MULTI
 * while offline even with disableOfflineQueue, which would replay stale increments later.)
 */
import { createRequire } from 'node:module';
import type * as RedisClient from '@redis/client';
import type { ErrorReply } from '@redis/client';
import type { Logger } from '../log.js';
import {
  CacheValueError,
  CorruptRecordError,
  checkIncrement,
  decodeValue,
  encodeValue,
  ttlMilliseconds,
  type CacheValue,
} from './cache-codec.js';
import type { CacheStats, ContentCache, ContentCacheConfig } from './types.js';

/** Between two LS_CACHE_UNAVAILABLE lines, however often Redis flaps. */
const UNAVAILABLE_LOG_INTERVAL_MS = 10_000;
/** First reconnect delay; doubles per failed attempt up to {@link RECONNECT_MAX_MS}. */
const RECONNECT_MIN_MS = 50;
const RECONNECT_MAX_MS = 1_000;
/** A connection (TCP/TLS connect plus the AUTH/SELECT handshake) not ready by then is dropped and retried. */
const CONNECT_TIMEOUT_MS = 2_000;
/** Commands in flight per connection; past it calls fail at once rather than queue without bound. */
const MAX_IN_FLIGHT = 4096;
/** Retry delay of the "is it back?" PING when it could not even be sent. */
const PROBE_RETRY_MS = 200;

const INCR_WITH_TTL = "redis.call('SET', KEYS[1], '0', 'PX', ARGV[2], 'NX') return redis.call('INCRBY', KEYS[1], ARGV[1])";
/** Redis's words when the stored value cannot be incremented. */
const NOT_AN_INTEGER = /not an integer|overflow|WRONGTYPE/i;

// The client is loaded when the first RedisCache connects, not when this module is imported:
// it costs ~18 MB of RSS, which the primary and every worker without a Redis cache would pay
// (measured: import of @redis/client 6.3 on Node 20). It is CommonJS, so require() loads it
// synchronously and the connection starts as soon as before.
const require = createRequire(import.meta.url);
let redis: typeof RedisClient | null = null;
const redisClient = (): typeof RedisClient => (redis ??= require('@redis/client') as typeof RedisClient);

function newClient(config: ContentCacheConfig['redis']) {
  const { createClient, RESP_TYPES } = redisClient();
  const socketOptions = { reconnectStrategy: false as const, connectTimeout: CONNECT_TIMEOUT_MS };
  return createClient({
    ...(config.url !== null ? { url: config.url } : {}),
    socket: config.socket !== null ? { ...socketOptions, path: config.socket, tls: false as const } : socketOptions,
    // RESP2: no HELLO in the handshake, so Redis before 6 (and look-alikes) work too; we need
    // nothing RESP3 adds.
    RESP: 2,
    disableOfflineQueue: true,
    commandsQueueMaxLength: MAX_IN_FLIGHT,
    // Enterprise maintenance notifications cost a handshake command (and a DNS lookup) for nothing.
    maintNotifications: 'disabled',
    commandOptions: { typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer } },
  });
}

type Client = ReturnType<typeof newClient>;
type Outcome = { readonly ok: true; readonly reply: unknown } | { readonly ok: false; readonly refused: ErrorReply | null };

const TIMED_OUT = Symbol('timed out');

/** The `redis` backend of {@link ContentCache}; build it with createContentCache. */
export class RedisCache implements ContentCache {
  readonly kind = 'redis';
  readonly now = null;
  private readonly prefix: string;
  private readonly timeoutMs: number;
  private readonly maxValueBytes: number;
  private readonly target: string;
  private client: Client | null = null;
  /** connecting: before the first connection succeeded or failed. */
  private state: 'connecting' | 'up' | 'down' = 'connecting';
  private closed = false;
  private firstSettled!: () => void;
  private readonly firstAttempt = new Promise<void>((resolve) => (this.firstSettled = resolve));
  private attempts = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private readyTimer: NodeJS.Timeout | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private probing = false;
  private downSince = 0;
  private failedWhileDown = 0;
  /** An LS_CACHE_UNAVAILABLE line is out and its LS_CACHE_RECOVERED is not. */
  private announced = false;
  private lastUnavailableLog = -Infinity;
  private lastRefusedLog = -Infinity;
  private counts = { hits: 0, misses: 0, sets: 0, errors: 0 };

  constructor(
    config: ContentCacheConfig,
    private readonly log: Logger,
  ) {
    const { url, socket, prefix, timeoutMs } = config.redis;
    if ((url === null) === (socket === null)) throw new RangeError('cache.redis needs exactly one of url and socket');
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new RangeError(`cache.redis.timeoutMs must be > 0, not ${timeoutMs}`);
    this.prefix = prefix;
    this.timeoutMs = timeoutMs;
    this.maxValueBytes = config.maxValueBytes;
    this.target = socket ?? redactUrl(url!);
    this.connect(config.redis);
  }

  async get(key: string): Promise<CacheValue | null> {
    const outcome = await this.send(['GET', this.prefix + key]);
    if (!outcome.ok || !Buffer.isBuffer(outcome.reply)) {
      // A nil reply is the only plain miss; anything else was a failure, already counted.
      this.counts.misses++;
      if (outcome.ok && outcome.reply !== null) this.unexpected('GET', outcome.reply);
      return null;
    }
    try {
      // The reply buffer is ours alone, so the decoded value may be a view of it.
      const value = decodeValue(outcome.reply);
      this.counts.hits++;
      return value;
    } catch (err) {
      if (!(err instanceof CorruptRecordError)) throw err;
      this.counts.misses++;
      this.counts.errors++;
      this.log.warn('LS_CACHE_RECORD_INVALID', 'a cached response record does not decode; treated as a miss', { key, error: err.message });
      return null;
    }
  }

  async set(key: string, value: CacheValue, ttlSeconds: number): Promise<boolean> {
    const ttl = ttlMilliseconds(ttlSeconds);
    const encoded = encodeValue(value);
    if (encoded.length > this.maxValueBytes) return false;
    const args = ttl > 0 ? ['SET', this.prefix + key, encoded, 'PX', String(ttl)] : ['SET', this.prefix + key, encoded];
    const outcome = await this.send(args);
    if (!outcome.ok) return false;
    if (outcome.reply !== 'OK') return this.unexpected('SET', outcome.reply) ?? false;
    this.counts.sets++;
    return true;
  }

  async delete(key: string): Promise<boolean> {
    const outcome = await this.send(['DEL', this.prefix + key]);
    if (!outcome.ok) return false;
    if (typeof outcome.reply !== 'number') return this.unexpected('DEL', outcome.reply) ?? false;
    return outcome.reply > 0;
  }

  async incr(key: string, by: number, ttlSeconds?: number): Promise<number | null> {
    checkIncrement(by);
    const ttl = ttlSeconds === undefined ? 0 : ttlMilliseconds(ttlSeconds);
    const full = this.prefix + key;
    const args = ttl > 0 ? ['EVAL', INCR_WITH_TTL, '1', full, String(by), String(ttl)] : ['INCRBY', full, String(by)];
    const outcome = await this.send(args);
    if (!outcome.ok) {
      if (outcome.refused && NOT_AN_INTEGER.test(outcome.refused.message)) {
        throw new CacheValueError(`cache.incr: the value of "${key}" is not an integer`);
      }
      return null;
    }
    if (typeof outcome.reply !== 'number') return this.unexpected('INCRBY', outcome.reply);
    return outcome.reply;
  }

  stats(): CacheStats {
    return { ...this.counts };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.firstSettled();
    for (const timer of [this.reconnectTimer, this.readyTimer, this.probeTimer]) if (timer) clearTimeout(timer);
    const client = this.client;
    this.client = null;
    // destroy, not close: close waits for pending replies, forever if Redis is stopped.
    client?.destroy();
    return Promise.resolve();
  }

  // -------------------------------------------------------------------------------------------
  // Connection

  private connect(config: ContentCacheConfig['redis']): void {
    this.reconnectTimer = null;
    if (this.closed) return;
    const client = newClient(config);
    this.client = client;
    // Every failure also arrives as 'terminated' or a rejected command; without a listener an
    // 'error' event would crash the worker.
    client.on('error', (err: unknown) => {
      if (this.log.enabled('debug')) this.log.debug('-', 'redis client error', { redis: this.target, error: describe(err) });
    });
    client.on('ready', () => {
      if (this.client !== client) return;
      if (this.readyTimer) clearTimeout(this.readyTimer);
      this.readyTimer = null;
      this.attempts = 0;
      this.markUp();
    });
    // reconnectStrategy false: the client gives up at the first failure and we start over.
    client.on('terminated', (cause: unknown) => this.lost(client, config, describe(cause)));
    this.readyTimer = setTimeout(() => {
      this.readyTimer = null;
      if (this.client === client && !client.isReady) this.lost(client, config, `not ready within ${CONNECT_TIMEOUT_MS} ms`);
    }, CONNECT_TIMEOUT_MS);
    client.connect().catch(() => {
      // Reported through 'terminated' (or caused by our own destroy()).
    });
  }

  private lost(client: Client, config: ContentCacheConfig['redis'], reason: string): void {
    if (this.client !== client || this.closed) return;
    if (this.readyTimer) clearTimeout(this.readyTimer);
    this.readyTimer = null;
    this.client = null;
    client.destroy();
    this.markDown(reason);
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** Math.min(this.attempts, 10));
    this.attempts++;
    // Jitter, so the workers of a host do not reconnect in lockstep.
    this.reconnectTimer = setTimeout(() => this.connect(config), Math.round(delay * (0.8 + 0.2 * Math.random())));
  }

  private markUp(): void {
    const wasDown = this.state === 'down';
    this.state = 'up';
    this.firstSettled();
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    if (wasDown && this.announced) {
      this.announced = false;
      this.log.info('LS_CACHE_RECOVERED', 'the shared cache is reachable again', {
        redis: this.target,
        downMs: Date.now() - this.downSince,
        failedCalls: this.failedWhileDown,
      });
    }
  }

  private markDown(reason: string): void {
    this.firstSettled();
    if (this.state === 'down') return;
    this.state = 'down';
    this.downSince = Date.now();
    this.failedWhileDown = 0;
    this.announce(reason);
  }

  /** Logs the outage unless one was logged within the interval (then a later failed call does). */
  private announce(reason: string): void {
    const now = Date.now();
    if (this.announced || now - this.lastUnavailableLog < UNAVAILABLE_LOG_INTERVAL_MS) return;
    this.announced = true;
    this.lastUnavailableLog = now;
    this.log.warn('LS_CACHE_UNAVAILABLE', 'the shared cache cannot be reached; cache calls miss until it is back', {
      redis: this.target,
      reason,
    });
  }

  /** After a timeout: one PING waits behind the stuck commands; its answer means Redis is back. */
  private probe(): void {
    const client = this.client;
    if (this.probing || this.closed || !client?.isReady) return;
    this.probing = true;
    client.sendCommand(['PING']).then(
      () => {
        this.probing = false;
        if (this.client === client && this.state === 'down') this.markUp();
      },
      () => {
        this.probing = false;
        // Lost connections come back through 'ready'; a PING refused locally (queue full) retries.
        if (this.client === client && client.isReady && this.state === 'down' && !this.closed) {
          this.probeTimer = setTimeout(() => {
            this.probeTimer = null;
            this.probe();
          }, PROBE_RETRY_MS);
        }
      },
    );
  }

  // -------------------------------------------------------------------------------------------
  // Commands

  /** Runs one command within timeoutMs; never rejects. */
  private async send(args: ReadonlyArray<string | Buffer>): Promise<Outcome> {
    if (this.state === 'connecting' && !this.closed) await this.waitForFirstAttempt();
    const client = this.client;
    if (this.closed || this.state !== 'up' || !client?.isReady) {
      if (this.state === 'connecting' && !this.closed) this.markDown(`no connection within ${this.timeoutMs} ms`);
      return this.failed();
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<typeof TIMED_OUT>((resolve) => (timer = setTimeout(resolve, this.timeoutMs, TIMED_OUT)));
    try {
      const reply: unknown = await Promise.race([client.sendCommand(args), timeout]);
      if (reply !== TIMED_OUT) return { ok: true, reply };
      if (this.client === client) {
        this.markDown(`no reply within ${this.timeoutMs} ms`);
        this.probe();
      }
      return this.failed();
    } catch (err) {
      if (err instanceof redisClient().ErrorReply) return this.refused(args[0]!, err);
      // Closed or lost under us: 'terminated' marks the outage and reconnects.
      return this.failed();
    } finally {
      clearTimeout(timer);
    }
  }

  private async waitForFirstAttempt(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.timeoutMs)));
    await Promise.race([this.firstAttempt, timeout]);
    clearTimeout(timer);
  }

  private failed(): Outcome {
    this.counts.errors++;
    if (this.state === 'down' && !this.closed) {
      this.failedWhileDown++;
      this.announce('still unreachable');
    }
    return { ok: false, refused: null };
  }

  /** Redis answered with an error: not an outage (WRONGTYPE, OOM, NOPERM, a read-only replica). */
  private refused(command: string | Buffer, err: ErrorReply): Outcome {
    // incr on a non-integer is the script's mistake (a CacheValueError), not the backend's.
    if (/^(INCRBY|EVAL)$/.test(command.toString()) && NOT_AN_INTEGER.test(err.message)) return { ok: false, refused: err };
    this.counts.errors++;
    const now = Date.now();
    if (now - this.lastRefusedLog >= UNAVAILABLE_LOG_INTERVAL_MS) {
      this.lastRefusedLog = now;
      this.log.warn('LS_CACHE_COMMAND_FAILED', 'redis refused a cache command; the call misses', {
        redis: this.target,
        command: command.toString(),
        error: err.message,
      });
    }
    return { ok: false, refused: err };
  }

  private unexpected(command: string, reply: unknown): null {
    this.counts.errors++;
    this.log.warn('LS_CACHE_COMMAND_FAILED', 'unexpected reply from redis; the call misses', { redis: this.target, command, reply: String(reply) });
    return null;
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) return (err as NodeJS.ErrnoException).code ?? err.message ?? err.name;
  return String(err);
}

/** The URL for log lines, without a password. */
function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return 'redis';
  }
}
