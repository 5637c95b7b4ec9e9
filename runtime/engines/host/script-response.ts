/**
 * A response as a value: what pass() returns, what the cache stores and hands back, and what
 * emit() sends. Its own module because three capabilities share it (pass.ts makes one, cache.ts
 * stores one, output.ts emits one) and the engines convert it to and from script tables/objects.
 */
import { checkHeader } from '../../fastcgi/server/response.js';

/** A response as scripts build, cache and emit it (storedAt is set when it is cached). */
export interface ScriptResponse {
  readonly status: number;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Buffer;
  /** The body is this file (a large cached body): emit() sends it with sendfile(). */
  readonly file?: string;
}

/**
 * The pseudo-header under which a cached response keeps the path of its body file. Not an HTTP
 * token (the colon), so no real header can collide with it; scripts see it as `res.file`.
 */
export const BODY_FILE = ':file';

/** Splits a cached response's body-file pseudo-header off its real headers. */
export function bodyFile(value: ScriptResponse): { headers: ScriptResponse['headers']; file: string | undefined } {
  let file = value.file;
  if (!value.headers.some(([name]) => name === BODY_FILE)) return { headers: value.headers, file };
  const headers = value.headers.filter(([name, v]) => (name === BODY_FILE ? ((file ??= v), false) : true));
  return { headers, file };
}

/**
 * Validates a response a script built: the status, and with `headers` its header names and
 * values (emit() leaves those to the Response, which checks every header it is given).
 */
export function checkResponse(value: ScriptResponse, headers = true): ScriptResponse {
  const { status, body } = value;
  if (!Number.isInteger(status) || status < 100 || status > 999) throw new TypeError(`invalid response status ${String(status)}`);
  if (headers) checkHeaders(value.headers);
  if (!Buffer.isBuffer(body)) throw new TypeError('response body must be bytes');
  return value;
}

function checkHeaders(headers: ScriptResponse['headers']): void {
  for (const [name, v] of headers) {
    if (name !== BODY_FILE) checkHeader(name, v);
  }
}
