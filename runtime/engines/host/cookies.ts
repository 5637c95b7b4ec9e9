/**
 * Cookies: `request.cookies` (the Cookie header, values percent-decoded) and `response.cookie()`
 * (one Set-Cookie line per call), with the `cookie` package (jshttp, what Express uses) parsing
 * and serialising. A capability of its own because it spans both sides: it reads the request and
 * adds to the response, and neither request.ts nor output.ts should know the cookie grammar.
 *
 * The JS engine runs the same code inside QuickJS (js/api/cookies.ts): the `cookie` package's
 * own file and {@link cookieLine} below, embedded in the prelude as source text, so that
 * response.cookie() costs no call out of the sandbox (~5-10 us each) and both sides say the
 * same thing about the same options. That is why cookieLine is written as it is: it uses only
 * its arguments and the language's built-ins, never a name of this module.
 */
import { isUtf8 } from 'node:buffer';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { parseCookie, stringifySetCookie } from 'cookie';
import type { HostCore } from './core.js';
import { addHeader } from './output.js';

/**
 * The options of response.cookie(), as a script passes them (the same camelCase keys in Lua
 * and JS, as the `cookie` package and the Set-Cookie attributes spell them). `expires` is
 * seconds since the epoch (what Lua's os.time() gives; Max-Age counts seconds too), or in JS
 * also a Date.
 */
export interface CookieOptions {
  path?: string;
  domain?: string;
  maxAge?: number;
  expires?: number | Date;
  httpOnly?: boolean;
  secure?: boolean;
  sameSite?: 'Strict' | 'Lax' | 'None' | 'strict' | 'lax' | 'none';
  partitioned?: boolean;
}

/**
 * request.cookies: the request's cookies by name, values percent-decoded (a value that does not
 * decode is kept as sent); for a name sent twice the first wins, as browsers send the most
 * specific cookie (longest path) first. Parsed on first use and kept for the run.
 */
export function cookies(host: HostCore): Readonly<Record<string, string>> {
  if (!host.cookieCache) {
    const header = host.request.param('HTTP_COOKIE');
    // parseCookie returns an object without a prototype: `__proto__` is just a name.
    host.cookieCache = header ? (parseCookie(header) as Record<string, string>) : (Object.create(null) as Record<string, string>);
  }
  return host.cookieCache;
}

/**
 * response.cookie(name, value, options): adds one Set-Cookie header line (earlier ones stay).
 * A Lua value comes as bytes and must be UTF-8 text, since the line percent-encodes characters;
 * binary data should be encoded first (base64). Throws a TypeError for a bad name, value or
 * option, and an Error once the headers are sent.
 *
 * @example
 *   addCookie(host, 'sid', 'a b', { path: '/', httpOnly: true, sameSite: 'Lax' });
 *   // Set-Cookie: sid=a%20b; Path=/; HttpOnly; SameSite=Lax
 */
export function addCookie(host: HostCore, name: unknown, value: unknown, options: unknown): void {
  let text = value;
  if (value instanceof Uint8Array) {
    if (!isUtf8(value)) throw new TypeError('response.cookie(): the value is not valid UTF-8 (encode binary data first, e.g. as base64)');
    text = Buffer.from(value.buffer, value.byteOffset, value.length).toString('utf8');
  }
  addHeader(host, 'Set-Cookie', cookieLine(stringifySetCookie, name, text, options));
}

/**
 * The Set-Cookie line for one call of response.cookie(), after checking every argument: a
 * TypeError names what is wrong. `stringify` is the `cookie` package's stringifySetCookie
 * (its one-object form).
 * Self-contained on purpose (see the module comment): the JS prelude embeds its source text.
 */
export function cookieLine(
  stringify: (cookie: { name: string; value: string }) => string,
  name: unknown,
  value: unknown,
  options: unknown,
): string {
  const fail = (message: string): never => {
    throw new TypeError('response.cookie(): ' + message);
  };
  if (typeof name !== 'string') fail('the name must be a string');
  if (typeof value === 'number') value = String(value);
  else if (typeof value !== 'string') fail('the value must be a string');
  // The package's object form: its (name, value, options) form spreads the options into a
  // new object, which cost ~15x the whole call on V8 (measured: 4 us against 0.3 us).
  const out: { name: string; value: string; [option: string]: unknown } = { name: name as string, value: value as string };
  if (options !== undefined && options !== null) {
    if (typeof options !== 'object') fail('the options must be a table or an object');
    // A switch: no array of known names to build and search per call. QuickJS interprets all
    // of this, and each option passed measured a few us there (no call out of the sandbox).
    for (const key of Object.keys(options)) {
      const v = (options as Record<string, unknown>)[key];
      switch (key) {
        case 'path':
        case 'domain':
          if (v !== undefined && v !== null && typeof v !== 'string') fail('option ' + key + ' must be a string');
          break;
        case 'maxAge':
          if (v !== undefined && v !== null && (typeof v !== 'number' || !Number.isInteger(v))) fail('option maxAge must be an integer (seconds)');
          break;
        case 'expires':
          if (v !== undefined && v !== null) {
            const ms = v instanceof Date ? v.getTime() : typeof v === 'number' ? v * 1000 : NaN;
            if (!Number.isFinite(ms)) fail('option expires must be a time in seconds since the epoch');
            out.expires = new Date(ms);
          }
          continue;
        case 'sameSite':
          if (v !== undefined && v !== null) {
            const s = typeof v === 'string' ? v.toLowerCase() : '';
            if (s !== 'strict' && s !== 'lax' && s !== 'none') fail('option sameSite must be "Strict", "Lax" or "None"');
            out.sameSite = s;
          }
          continue;
        case 'httpOnly':
        case 'secure':
        case 'partitioned':
          if (v !== undefined && v !== null && typeof v !== 'boolean') fail('option ' + key + ' must be a boolean');
          break;
        default:
          fail('unknown option ' + key + ' (known: path, domain, maxAge, expires, httpOnly, secure, sameSite, partitioned)');
      }
      if (v !== undefined && v !== null) out[key] = v;
    }
  }
  try {
    return stringify(out);
  } catch (err) {
    // encodeURIComponent refuses a lone surrogate (URIError); the package's own checks (the
    // name's characters, the domain and path) throw TypeErrors with the value in the message.
    if (err instanceof URIError) return fail('the value is not valid Unicode text (a lone surrogate)');
    return fail(err instanceof Error ? err.message : String(err));
  }
}

/** The `cookie` package's own file, for the JS prelude to run inside the sandbox. */
export function cookieLibrarySource(): string {
  const file = createRequire(import.meta.url).resolve('cookie');
  return readFileSync(file, 'utf8').replace(/^\/\/# sourceMappingURL=.*$/m, '');
}
