/**
 * The config's `[fetch]`: which origins a script's fetch() may reach and how much it may take
 * from them. Deny by default: with no `allow` list, fetch() reaches nothing. Origins are kept
 * in one normal form ({@link originOf}) so that the list and a URL compare as plain strings.
 */
import { field, integer, invalid, section, type ValueOf } from '../config-schema.js';

const DEFAULT_PORTS: Readonly<Record<string, string>> = { 'http:': '80', 'https:': '443' };

/**
 * The origin of an http(s) URL as `scheme://host:port`, the port always written (80 and 443
 * included), the host as the URL parser normalises it (lower case, IPv6 in brackets); null
 * for any other scheme. The host is the name as written, never an address it resolves to.
 *
 * @example
 *   originOf(new URL('HTTP://Api.Example:80/x')); // 'http://api.example:80'
 */
export function originOf(url: URL): string | null {
  const port = DEFAULT_PORTS[url.protocol];
  if (port === undefined) return null;
  return `${url.protocol}//${url.hostname}:${url.port === '' ? port : url.port}`;
}

// One entry of fetch.allow: an origin and nothing else (no path, query, fragment or user).
function allowedOrigin(entry: unknown, name: string): string {
  if (typeof entry !== 'string') throw invalid(name, 'must be an array of origins such as "https://api.example.com" or "http://127.0.0.1:8080"');
  let url: URL;
  try {
    url = new URL(entry);
  } catch {
    throw invalid(name, `${JSON.stringify(entry)} is not a URL (write scheme://host[:port])`);
  }
  const origin = originOf(url);
  if (origin === null) throw invalid(name, `${JSON.stringify(entry)}: only http:// and https:// origins can be allowed`);
  if (url.username !== '' || url.password !== '' || url.pathname !== '/' || url.search !== '' || url.hash !== '' || /[?#]$/.test(entry)) {
    throw invalid(name, `${JSON.stringify(entry)} is not an origin: write scheme://host[:port], without a path, query or credentials`);
  }
  return origin;
}

export const fetchSection = section({
  /** Normalised origins (see originOf); empty: fetch() reaches nothing. */
  allow: field<ReadonlySet<string>>({
    doc: 'origins `fetch()` may reach, e.g. `["https://auth.internal", "http://127.0.0.1:8080"]` (default ports implied); checked on every redirect hop, by the name as written, never by the address it resolves to',
    shown: '`[]` (none)',
    default: new Set<string>(),
    parse(value, at) {
      if (!Array.isArray(value)) throw invalid(at.name, 'must be an array of origins such as "https://api.example.com" or "http://127.0.0.1:8080"');
      return new Set(value.map((entry) => allowedOrigin(entry, at.name)));
    },
  }),
  timeoutMs: integer({
    doc: "a `fetch()` call's whole time (waiting for a slot, connecting, redirects, reading the body) unless the call's `timeoutMs` says otherwise; the run's `scriptLimits.wallMs` bounds it too",
    min: 1,
    max: 86_400_000,
    default: 10_000,
  }),
  maxResponseBytes: integer({
    doc: 'response body bytes one `fetch()` may read; a larger body is an error (`LS_FETCH_TOO_LARGE`), never cut short',
    min: 1,
    max: 1024 * 1024 * 1024,
    default: 8 * 1024 * 1024,
  }),
  maxConcurrent: integer({
    doc: '`fetch()` calls in flight per worker; further calls wait for a slot (the wait counts towards their `timeoutMs`)',
    min: 1,
    max: 65_536,
    default: 64,
  }),
  maxRedirects: integer({ doc: 'redirects one `fetch()` follows (each hop checked against `allow`); one more is an error (`LS_FETCH_REDIRECTS`)', min: 0, max: 20, default: 5 }),
});

/** The validated `[fetch]` section. */
export type FetchConfig = ValueOf<typeof fetchSection>;
