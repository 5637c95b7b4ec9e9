/**
 * A response as a value crossing the boundary (what pass() returns, the cache stores and emit()
 * sends), both sides: the prelude part (fromHost/toHost, a response object with a hidden handle)
 * and the host side (the values lent to the run by handle, and the `held` primitive that fetches
 * their headers and body only if the script reads them). Its own file because three
 * capabilities share it (pass.ts, cache.ts, output.ts), as ../../host/script-response.ts.
 */
import type { CacheValue } from '../../../content-cache/content-cache.js';
import { bodyFile, type ScriptResponse } from '../../host.js';
import type { Run } from '../run.js';
import { num, type Bindings, type Bridge } from './binding.js';

/** The host primitives of this capability. */
export const RESPONSE_PRIMITIVES = ['held'] as const;

/** The prelude part (see ../prelude.ts for the names in scope): HANDLE, fromHost and toHost. */
export const RESPONSE_PRELUDE = `
  // Cache values, pass() and emit(): everything crosses the host boundary as JSON (which
  // escapes NUL). A response from the host carries a hidden handle, so caching or emitting it
  // unchanged sends the backend's exact bytes, whatever their encoding; its body string is UTF-8.
  const HANDLE = Symbol('response');
  const defineProperty = Object.defineProperty;
  // A response's headers and body are fetched from the host when first read: emitting a
  // cached page (the common case) never needs them in here.
  const fromHost = (json) => {
    if (json === '') return null;
    const o = parse(json);
    if (o.r === undefined) return o.s;
    const h = o.h;
    let headers = null, body = null;
    const res = {
      status: o.r.status,
      get headers() {
        if (headers === null) {
          headers = create(null);
          for (const [n, v] of parse(h_held(h, 0))) {
            const k = n.toLowerCase();
            headers[k] = k in headers ? headers[k] + '\\n' + v : v;
          }
          freeze(headers);
        }
        return headers;
      },
      get body() { return body ??= h_held(h, 1); },
    };
    if (o.r.age !== undefined) res.age = o.r.age;
    if (o.r.file !== undefined) res.file = o.r.file;
    defineProperty(res, HANDLE, { value: h });
    return freeze(res);
  };
  const toHost = (what, v) => {
    if (typeof v === 'string' || typeof v === 'number') return { s: String_(v) };
    if (v !== null && typeof v === 'object') {
      if (typeof v[HANDLE] === 'number') return { h: v[HANDLE] };
      const headers = [];
      const h = v.headers;
      if (h !== undefined && h !== null) {
        if (typeof h !== 'object') throw new TypeError_(what + ': headers must be an object');
        for (const name of Object.keys(h)) {
          for (const line of String_(h[name]).split('\\n')) headers.push([name, line]);
        }
      }
      const status = v.status === undefined ? 200 : v.status;
      if (typeof status !== 'number') throw new TypeError_(what + ': status must be a number');
      const r = { status, headers, body: v.body === undefined || v.body === null ? '' : String_(v.body) };
      if (typeof v.file === 'string') r.file = v.file;
      return { r };
    }
    throw new TypeError_(what + ': value must be a string or a response object');
  };`;

/** A cache value or response as the prelude sends it (see its toHost). */
export type FromScript = { s: string } | { h: number } | { r: { status: number; headers: Array<[string, string]>; body: string; file?: string } };

/**
 * A cache value or response for the prelude (its fromHost): a string, or a response's status
 * and age with a handle: its headers and bytes stay on the host side for the run, fetched by
 * the `held` primitive only if the script reads them.
 */
export function toScript(run: Run, value: CacheValue | ScriptResponse | null): string {
  if (value === null) return '';
  if (Buffer.isBuffer(value)) return JSON.stringify({ s: value.toString('utf8') });
  const held = (run.held ??= []);
  held.push(value);
  const age = 'storedAt' in value ? Math.max(0, Math.floor((Date.now() - value.storedAt) / 1000)) : undefined;
  return JSON.stringify({ r: { status: value.status, age, file: bodyFile(value).file }, h: held.length - 1 });
}

/** A cache value or response from the prelude (its toHost): a held one by its handle, exactly. */
export function fromScript(run: Run, v: FromScript): Buffer | ScriptResponse {
  if ('s' in v) return Buffer.from(v.s);
  if ('h' in v) {
    const held = run.held?.[v.h];
    if (!held) throw new TypeError('not a response of this request');
    return held;
  }
  const { status, headers, body, file } = v.r;
  return file === undefined ? { status, headers, body: Buffer.from(body) } : { status, headers, body: Buffer.from(body), file };
}

/** The host side of a held response: `held(handle, 0)` its headers as JSON, `held(handle, 1)` its body. */
export function responseBindings(vm: Bridge): Bindings<(typeof RESPONSE_PRIMITIVES)[number]> {
  const ctx = vm.context;
  return {
    held: (run, [handle, which]) => {
      const value = run.held?.[num(ctx, handle)];
      if (!value) throw new TypeError('not a response of this request');
      return vm.newString(num(ctx, which) === 0 ? JSON.stringify(bodyFile(value).headers) : value.body.toString('utf8'));
    },
  };
}
