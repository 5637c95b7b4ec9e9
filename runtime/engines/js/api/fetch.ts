/**
 * fetch(), both sides of the boundary: the prelude part (options checked, the call's stack kept
 * for its errors and the slow log, the error's `code` set) and the host primitive
 * (../../host/fetch.ts calls an allowed origin). One host call per fetch: the options go out as
 * one JSON string, and the response comes back as pass()'s does (a held response whose headers
 * and body cross only when read).
 */
import { str, type Bindings, type Bridge } from './binding.js';
import { toScript } from './script-response.js';

/** The host primitives of this capability. */
export const FETCH_PRIMITIVES = ['fetch'] as const;

/** The prelude part (see ../prelude.ts for the names in scope): fetch(). */
export const FETCH_PRELUDE = `
  const FETCH_OPTIONS = freeze(['method', 'headers', 'body', 'timeoutMs']);
  const fetch = async (url, options) => {
    if (typeof url !== 'string') throw new TypeError_('fetch(url[, options]): url must be a string');
    if (options !== undefined && options !== null && typeof options !== 'object') throw new TypeError_('fetch(url[, options]): options must be an object');
    const o = options ?? {};
    for (const k of Object.keys(o)) {
      if (FETCH_OPTIONS.indexOf(k) < 0) throw new TypeError_('fetch(): unknown option ' + stringify(k));
    }
    const m = o.method ?? undefined, b = o.body ?? undefined, t = o.timeoutMs ?? undefined;
    if (m !== undefined && typeof m !== 'string') throw new TypeError_('fetch(): method must be a string');
    if (b !== undefined && typeof b !== 'string') throw new TypeError_('fetch(): body must be a string');
    if (t !== undefined && (typeof t !== 'number' || !(t > 0))) throw new TypeError_('fetch(): timeoutMs must be a positive number');
    let h;
    if (o.headers !== undefined && o.headers !== null) {
      if (typeof o.headers !== 'object') throw new TypeError_('fetch(): headers must be an object');
      h = [];
      for (const name of Object.keys(o.headers)) {
        for (const line of String_(o.headers[name]).split('\\n')) h.push([name, line]);
      }
    }
    // The host makes fetch()'s errors outside any script frame: they get this call's stack,
    // and the code their message starts with as \`code\`, for a script to test.
    try {
      return await waitAt(new Error_(), async () => fromHost(await h_fetch(stringify({ u: url, m, h, b, t }))));
    } catch (e) {
      if (e !== null && typeof e === 'object') {
        const message = typeof e.message === 'string' ? e.message : '';
        const end = message.indexOf(': ');
        if (message.startsWith('LS_FETCH_') && end > 0) {
          try { defineProperty(e, 'code', { value: message.slice(0, end), writable: true, configurable: true, enumerable: true }); } catch {}
        }
      }
      throw e;
    }
  };`;

/** The host side of fetch(): the call's options as JSON, the response as a held value. */
export function fetchBindings(vm: Bridge): Bindings<(typeof FETCH_PRIMITIVES)[number]> {
  const ctx = vm.context;
  return {
    fetch: (run, [json]) => {
      const { u, m, h, b, t } = JSON.parse(str(ctx, json)) as { u: string; m?: string; h?: Array<[string, string]>; b?: string; t?: number };
      const options = {
        ...(m !== undefined ? { method: m } : {}),
        ...(h !== undefined ? { headers: h } : {}),
        ...(b !== undefined ? { body: Buffer.from(b) } : {}),
        ...(t !== undefined ? { timeoutMs: t } : {}),
      };
      return vm.hostCall(run, run.host.fetch(u, options), (r) => vm.newString(toScript(run, r)));
    },
  };
}
