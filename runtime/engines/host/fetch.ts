/**
 * fetch(): an outbound HTTP call to an origin the configuration allows (fetch.allow), through
 * the worker's FetchClient (services.fetch, ../../fetch/fetch-client.ts, which holds the
 * policy). This module turns a script's arguments into a checked call and makes it one of the
 * run's waits: bounded by the run's wall limit like every host wait, and dropped (its socket
 * freed) when the run is stopped. Refusals and failures reject with the client's FetchError
 * (`LS_FETCH_*: ...`), which the engines hand to the script as an error it can catch; a bad
 * argument rejects with a TypeError.
 */
import { checkHeader } from '../../fastcgi/server/response.js';
import { originOf } from '../../fetch/fetch-config.js';
import { FetchError, type FetchCall } from '../../fetch/fetch-client.js';
import type { HostCore } from './core.js';
import type { ScriptResponse } from './script-response.js';

/** A fetch() call's options, as the engines read them from the script. */
export interface FetchOptions {
  /** GET unless given. */
  readonly method?: string;
  /** Request headers; a name may repeat. */
  readonly headers?: ReadonlyArray<readonly [string, string]>;
  readonly body?: Buffer;
  /** The whole call's time; fetch.timeoutMs unless given. */
  readonly timeoutMs?: number;
}

/** Methods that name no request a script should send (fetch's own forbidden list). */
const FORBIDDEN_METHODS = new Set(['CONNECT', 'TRACE', 'TRACK']);
/** fetch normalises the case of these only; every other method goes as written. */
const NORMALISED_METHODS = new Set(['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT']);
/** Headers the client owns: the connection's own, and the body's length (from `body`). */
const FORBIDDEN_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'expect', 'content-length']);
const METHOD = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** The longest timer Node honours. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * fetch(url, options): the whole response ({status, headers, body}, a response value the
 * script may also emit or cache), after following redirects to allowed origins.
 */
export async function fetch(host: HostCore, url: string, options: FetchOptions = {}): Promise<ScriptResponse> {
  const target = parseUrl(url);
  const client = host.services.fetch;
  if (!client) throw new FetchError('LS_FETCH_DENIED', `${originOf(target)} is not in fetch.allow`);
  const stop = new AbortController();
  const call: FetchCall = {
    url: target,
    method: method(options.method),
    headers: headers(options.headers ?? []),
    body: options.body ?? null,
    timeoutMs: timeout(options.timeoutMs, client.config.timeoutMs),
    signal: stop.signal,
    request: host.request.id,
  };
  const work = client.fetch(call);
  try {
    return await host.guard(work, `fetch(${originOf(target)})`);
  } catch (err) {
    // The run was stopped (a limit, an abort) while waiting: nobody reads the answer, so its
    // socket must not stay busy.
    if (host.fatal) {
      work.catch(() => undefined);
      stop.abort(host.fatal);
    }
    throw err;
  }
}

function parseUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`fetch(): ${JSON.stringify(url.slice(0, 200))} is not an absolute URL`);
  }
  if (originOf(parsed) === null) throw new TypeError(`fetch(): only http:// and https:// URLs can be fetched (got ${parsed.protocol})`);
  if (parsed.username !== '' || parsed.password !== '') throw new TypeError('fetch(): credentials in the URL are not sent; use an Authorization header');
  return parsed;
}

function method(given: string | undefined): string {
  if (given === undefined) return 'GET';
  if (!METHOD.test(given)) throw new TypeError(`fetch(): invalid method ${JSON.stringify(given)}`);
  const upper = given.toUpperCase();
  if (FORBIDDEN_METHODS.has(upper)) throw new TypeError(`fetch(): method ${upper} is not allowed`);
  return NORMALISED_METHODS.has(upper) ? upper : given;
}

function headers(given: ReadonlyArray<readonly [string, string]>): ReadonlyArray<readonly [string, string]> {
  for (const [name, value] of given) {
    try {
      checkHeader(name, value);
    } catch (err) {
      throw new TypeError(`fetch(): ${(err as Error).message}`, { cause: err });
    }
    if (FORBIDDEN_HEADERS.has(name.toLowerCase())) throw new TypeError(`fetch(): header ${name} is set by the client, not the script`);
  }
  return given;
}

function timeout(given: number | undefined, fallback: number): number {
  if (given === undefined) return fallback;
  if (typeof given !== 'number' || !(given > 0)) throw new TypeError(`fetch(): timeoutMs must be a positive number (got ${String(given)})`);
  return Math.min(Math.ceil(given), MAX_TIMEOUT_MS);
}
