/**
 * The script library's data functions (README, "Script library"): base64, URL escaping,
 * digests and HMAC, random bytes, a constant-time compare, HTTP dates, and the JSON text side of
 * Lua's `json`. Engine-neutral and stateless (no run, no services), so the engines call them
 * directly instead of through ScriptHost; every input is bytes or a JS string, every result a
 * Buffer, a string or a number. Node does the work (Buffer, crypto, JSON, Date); what is written
 * here is only the policy: sizes, what counts as invalid input, and the messages.
 *
 * Errors are thrown as TypeError (a bad argument) or Error (a limit), never RangeError (which
 * lua54 takes for a fault of its wasm module), with the script-facing name first
 * (`json.decode: ...`): each engine turns a thrown Error into an error the script can catch
 * (Lua: at the caller's line; JS: the same TypeError).
 */
import { createHash, createHmac, randomBytes as nodeRandomBytes, timingSafeEqual as nodeTimingSafeEqual } from 'node:crypto';

/**
 * Largest input of base64.*, url.* and json.decode, and largest json.encode result: the default
 * request body limit (limits.maxBodyBytes), so a script can decode any body it accepts by default.
 * One call works this through in JS where no engine can interrupt it (~10-40 ms for 8 MiB).
 */
export const MAX_LIBRARY_BYTES = 8 * 1024 * 1024;

/** Deepest nesting json.encode and json.decode accept: lua-cjson's default (encode/decode_max_depth). */
export const MAX_JSON_DEPTH = 1000;

/** Most bytes one crypto.random_bytes(n) returns: enough for any key or token, too few to fill memory. */
export const MAX_RANDOM_BYTES = 65536;

/** Digests crypto.* and crypto.hmac know. */
export const DIGESTS = ['md5', 'sha1', 'sha256', 'sha512'] as const;

/** A digest name. */
export type Digest = (typeof DIGESTS)[number];

function checkSize(what: string, length: number): void {
  if (length > MAX_LIBRARY_BYTES) throw new Error(`${what}: input over ${MAX_LIBRARY_BYTES} bytes`);
}

function view(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length);
}

// ---- base64 (ngx.encode_base64 / ngx.decode_base64, RFC 4648 §4 and §5) ---------------------

/** base64.encode(s) (padded) and base64.encode_url(s) (RFC 4648 §5, unpadded like ngx's base64url). */
export function base64Encode(data: Uint8Array, url: boolean): string {
  checkSize(url ? 'base64.encode_url' : 'base64.encode', data.length);
  return view(data).toString(url ? 'base64url' : 'base64');
}

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;
const B64URL = /^[A-Za-z0-9_-]*={0,2}$/;

/**
 * base64.decode(s) / base64.decode_url(s): the bytes, or null when `text` is not base64 of that
 * alphabet (like ngx.decode_base64, which returns nil). Node's decoder skips what it does not
 * know, so the text is checked first: only the alphabet, padding optional but, when present,
 * completing the last quantum, and no quantum of a single character. `text` is bytes read as
 * Latin-1 (Lua) or a JS string.
 */
export function base64Decode(text: string, url: boolean): Buffer | null {
  checkSize(url ? 'base64.decode_url' : 'base64.decode', text.length);
  if (!(url ? B64URL : B64).test(text)) return null;
  let body = text.length;
  while (body > 0 && text.charCodeAt(body - 1) === 61) body--;
  if (body % 4 === 1 || (body !== text.length && text.length % 4 !== 0)) return null;
  return Buffer.from(text.slice(0, body), url ? 'base64url' : 'base64');
}

// ---- URL escaping (ngx.escape_uri type 2, ngx.unescape_uri) ---------------------------------

// What lua-nginx-module's URI-component table leaves alone (ngx_http_lua_util.c, `uri_component`,
// 0xfc00987d...): letters, digits and - . _ ~ ! * ' ( ), the set of encodeURIComponent.
const ESCAPED = /[^A-Za-z0-9\-._~!*'()]/g;
const HEX = Array.from({ length: 256 }, (_, i) => '%' + i.toString(16).toUpperCase().padStart(2, '0'));

/** url.escape(s): every byte outside the URI-component set as %XX (upper-case hex), like ngx.escape_uri. */
export function uriEscape(data: Uint8Array): string {
  checkSize('url.escape', data.length);
  return view(data).toString('latin1').replace(ESCAPED, (c) => HEX[c.charCodeAt(0)]!);
}

const UNESCAPED = /%([0-9A-Fa-f]{2})|\+/g;

/**
 * url.unescape(s): %XX becomes its byte and `+` a space, as ngx.unescape_uri does (its C code,
 * ngx_http_lua_unescape_uri, still decodes '+' to ' '); a `%` not followed by two hex digits is
 * kept as it is. Works on bytes: the result need not be UTF-8.
 */
export function uriUnescape(data: Uint8Array): Buffer {
  checkSize('url.unescape', data.length);
  const s = view(data).toString('latin1');
  return Buffer.from(s.replace(UNESCAPED, (_, hex: string | undefined) => (hex === undefined ? ' ' : String.fromCharCode(parseInt(hex, 16)))), 'latin1');
}

// ---- crypto (ngx.md5, ngx.sha1_bin, ngx.hmac_sha1, resty.random) ----------------------------

/** crypto.md5/sha1/sha256/sha512(data): the digest in lower-case hex. */
export function digest(alg: Digest, data: Uint8Array): string {
  return createHash(alg).update(data).digest('hex');
}

/** crypto.hmac(alg, key, data): the HMAC in lower-case hex; an unknown `alg` is a TypeError. */
export function hmac(alg: string, key: Uint8Array, data: Uint8Array): string {
  if (!(DIGESTS as readonly string[]).includes(alg)) throw new TypeError(`crypto.hmac: unknown algorithm ${JSON.stringify(alg)} (md5, sha1, sha256 or sha512)`);
  return createHmac(alg, key).update(data).digest('hex');
}

/** crypto.random_bytes(n): n bytes from the OS's CSPRNG; n an integer from 0 to {@link MAX_RANDOM_BYTES}. */
export function randomBytes(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > MAX_RANDOM_BYTES) throw new TypeError(`crypto.random_bytes: n must be an integer from 0 to ${MAX_RANDOM_BYTES}`);
  return nodeRandomBytes(n);
}

/**
 * crypto.timing_safe_equal(a, b): whether the bytes are equal, in time that depends on their
 * length only (for comparing MACs and tokens); false for different lengths, which is not
 * hidden (a MAC's length is no secret).
 */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && nodeTimingSafeEqual(a, b);
}

// ---- time (ngx.now, ngx.http_time, ngx.parse_http_time) -------------------------------------

/** time.http_date(t): `t` seconds since the epoch as an IMF-fixdate ("Thu, 18 Nov 2010 11:27:35 GMT"). */
export function httpDate(seconds: number): string {
  if (!Number.isFinite(seconds)) throw new TypeError('time.http_date: t must be a finite number of seconds');
  const date = new Date(Math.floor(seconds) * 1000);
  const year = date.getUTCFullYear();
  if (Number.isNaN(year) || year < 0 || year > 9999) throw new Error('time.http_date: t is outside years 0 to 9999');
  return date.toUTCString();
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MON = MONTHS.join('|');
// The three forms HTTP/1.1 (RFC 9110 §5.6.7) asks recipients to accept, as ngx_parse_http_time does.
const IMF = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\\d{2}) (${MON}) (\\d{4}) (\\d{2}):(\\d{2}):(\\d{2}) GMT$`);
const RFC850 = new RegExp(`^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\\d{2})-(${MON})-(\\d{2}) (\\d{2}):(\\d{2}):(\\d{2}) GMT$`);
const ASCTIME = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (${MON}) ( \\d|\\d{2}) (\\d{2}):(\\d{2}):(\\d{2}) (\\d{4})$`);

/**
 * time.parse_http_date(s): the seconds since the epoch of an HTTP date (IMF-fixdate, RFC 850 or
 * asctime form), or null when `text` is none of them or names no real time (Feb 30, 25:00).
 * RFC 850's two-digit year is 19xx from 70 on, else 20xx (as nginx reads it).
 */
export function parseHttpDate(text: string): number | null {
  const s = text.trim();
  let m: RegExpExecArray | null;
  let year: number, month: string, day: string, time: string[];
  if ((m = IMF.exec(s))) [year, month, day, time] = [Number(m[3]), m[2]!, m[1]!, m.slice(4)];
  else if ((m = RFC850.exec(s))) {
    const yy = Number(m[3]);
    [year, month, day, time] = [yy < 70 ? 2000 + yy : 1900 + yy, m[2]!, m[1]!, m.slice(4)];
  } else if ((m = ASCTIME.exec(s))) [year, month, day, time] = [Number(m[6]), m[1]!, m[2]!, m.slice(3, 6)];
  else return null;
  const [h, mi, se] = time.map(Number) as [number, number, number];
  const d = Number(day);
  if (h > 23 || mi > 59 || se > 59 || d < 1) return null;
  const ms = Date.UTC(year, MONTHS.indexOf(month), d, h, mi, se);
  // Date.UTC rolls Feb 30 over into March: a day the month does not have is no date.
  if (new Date(ms).getUTCDate() !== d) return null;
  return ms / 1000;
}

// ---- JSON text (Lua's json.encode / json.decode; the Lua values are walked in lua-json.ts) ---

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * UTF-8 bytes as a JS string, or null when they are not valid UTF-8 (Lua strings are bytes:
 * JSON text and json.encode's strings must be UTF-8).
 */
export function utf8OrNull(bytes: Uint8Array): string | null {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return null;
  }
}

/**
 * json.decode's parse: the JSON value of `bytes` (JSON.parse does the parsing) and the text it
 * read (for {@link deepAt}), or a TypeError
 * naming the byte (1-based) where the text stops being JSON. V8's messages give that position
 * for some errors only; for the others it is found by parsing shorter prefixes (a prefix of
 * valid JSON fails only where it ends): log2(n) more parses, on invalid input only.
 */
export function jsonParse(bytes: Uint8Array): { value: unknown; text: string } {
  checkSize('json.decode', bytes.length);
  const text = utf8OrNull(bytes);
  if (text === null) throw new TypeError('json.decode: the text is not valid UTF-8');
  try {
    return { value: JSON.parse(text) as unknown, text };
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    const { at, reason } = syntaxError(text, err.message);
    throw new TypeError(`json.decode: invalid JSON at byte ${Buffer.byteLength(text.slice(0, at)) + 1}: ${reason}`, { cause: err });
  }
}

const END = /^Unexpected end of JSON input/;
const POSITION = /^(.*?)(?: in JSON)? at position (\d+)/;

function syntaxError(text: string, message: string): { at: number; reason: string } {
  const positioned = POSITION.exec(message);
  if (positioned) return { at: Number(positioned[2]), reason: positioned[1]! };
  if (END.test(message)) return { at: text.length, reason: 'unexpected end of the text' };
  // "Unexpected token 'x', "...input..." is not valid JSON": keep the token, not the input.
  const token = /^(Unexpected token '.*?'),/.exec(message);
  return { at: firstBadOffset(text), reason: token ? token[1]! : message };
}

/** The offset of the first character no JSON text can continue with (see {@link jsonParse}). */
function firstBadOffset(text: string): number {
  let good = 0;
  let bad = text.length;
  while (bad - good > 1) {
    const mid = (good + bad) >>> 1;
    if (viablePrefix(text.slice(0, mid))) good = mid;
    else bad = mid;
  }
  return good;
}

// A prefix JSON text can continue: it parses, or it fails only where it ends (V8 says
// "Unexpected end", or names the position of the end: "Expected property name ... at position 1").
function viablePrefix(prefix: string): boolean {
  try {
    JSON.parse(prefix);
    return true;
  } catch (err) {
    if (!(err instanceof SyntaxError)) return false;
    const at = POSITION.exec(err.message);
    return at ? Number(at[2]) >= prefix.length : END.test(err.message);
  }
}

/**
 * The byte (1-based) where `text`, valid JSON, first nests deeper than {@link MAX_JSON_DEPTH}:
 * for json.decode's depth error, which the walk over the parsed value finds without a position.
 */
export function deepAt(text: string): number {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      // Skip the string: to its closing quote, past escaped characters.
      for (i++; i < text.length && text.charCodeAt(i) !== 34; i++) if (text.charCodeAt(i) === 92) i++;
    } else if (c === 91 || c === 123) {
      if (++depth > MAX_JSON_DEPTH) return Buffer.byteLength(text.slice(0, i)) + 1;
    } else if (c === 93 || c === 125) depth--;
  }
  return text.length;
}

/** json.encode's printing: JSON.stringify of a value the Lua walk built, its size checked. */
export function jsonStringify(value: unknown): string {
  const text = JSON.stringify(value);
  if (text.length > MAX_LIBRARY_BYTES) throw new Error(`json.encode: result over ${MAX_LIBRARY_BYTES} bytes`);
  return text;
}
