/**
 * The request view, both sides of the boundary: the prelude part (the Request class, whose
 * getters fetch on first read and keep what they fetched for the run) and the host primitives
 * that serve the fields (../../host/request.ts reads them from the FastCGI params). Apart from
 * the output side because it is read-only. A call out of QuickJS into the host costs ~7-10 us
 * (quickjs-emscripten's host-function wrapper), so the first string field read fetches all of
 * them in one call; each record (query, headers, params, cookies) is one call on first read.
 * request.form() is api/form.ts's; the Request class here serves it.
 */
import type { ScriptHost } from '../../host.js';
import { num, type Bindings, type Bridge } from './binding.js';

/**
 * Order of the request string fields the `texts` primitive serves (index -> field), all at once
 * as a JSON array. The prelude and the host both use this table, so the two cannot drift apart.
 */
export const TEXT_FIELDS = [
  'method',
  'uri',
  'path',
  'query_string',
  'remote_addr',
  'script_filename',
  'document_root',
] as const;

/** Order of the request record fields the `json` primitive serves. */
export const JSON_FIELDS = ['query', 'headers', 'params', 'cookies'] as const;

/** The host primitives of this capability. */
export const REQUEST_PRIMITIVES = ['texts', 'json', 'body'] as const;

const textGetters = TEXT_FIELDS.map((name, i) => `get ${name}() { return this.#text(${i}); }`).join('\n    ');
const jsonGetters = JSON_FIELDS.map((name, i) => `get ${name}() { return this.#record(${i}); }`).join('\n    ');

/** The prelude part (see ../prelude.ts for the names in scope): the Request class. */
export const REQUEST_PRELUDE = `
  // One Request serves every run of the context (frozen by harden()); it caches what it fetched
  // for the run in progress, which start() forgets (resetRequest) before the next run.
  let resetRequest;
  // The body's wait, rejected with the stack of the script's call (see atSite).
  const located = (promise) => {
    const site = new Error_();
    return promise.then(undefined, (e) => { throw atSite(e, site); });
  };
  class Request {
    #texts = null; #records = null; #body = null; #form = null;
    constructor(token) { if (token !== TOKEN) throw new TypeError_('Illegal constructor'); }
    static { resetRequest = (r) => { r.#texts = null; r.#records = null; r.#body = null; r.#form = null; }; }
    #text(i) {
      return (this.#texts ??= parse(h_texts()))[i];
    }
    #record(i) {
      const cache = (this.#records ??= []);
      return cache[i] ??= assign(create(null), parse(h_json(i)));
    }
    ${textGetters}
    ${jsonGetters}
    body() { return this.#body ??= located(h_body()); }
    // One form object per run (api/form.ts builds it), whatever the number of calls.
    form() { return this.#form ??= located(h_form()).then(formOf); }
  }
  const request = new Request(TOKEN);`;

/** The host side of the request view. */
export function requestBindings(vm: Bridge): Bindings<(typeof REQUEST_PRIMITIVES)[number]> {
  const ctx = vm.context;
  return {
    texts: (run) => vm.newString(JSON.stringify(TEXT_FIELDS.map((_, i) => textField(run.host, i)))),
    json: (run, [i]) => vm.newString(JSON.stringify(jsonField(run.host, num(ctx, i)))),
    body: (run) => vm.hostCall(run, run.host.body(), (buf) => vm.newString(buf.toString('utf8'))),
  };
}

function textField(host: ScriptHost, i: number): string {
  switch (TEXT_FIELDS[i]) {
    case 'method':
      return host.method;
    case 'uri':
      return host.uri;
    case 'path':
      return host.path;
    case 'query_string':
      return host.queryString;
    case 'remote_addr':
      return host.remoteAddr;
    case 'script_filename':
      return host.scriptFilename;
    case 'document_root':
      return host.documentRoot;
    default:
      throw new RangeError(`no request field ${i}`);
  }
}

function jsonField(host: ScriptHost, i: number): Readonly<Record<string, string>> {
  switch (JSON_FIELDS[i]) {
    case 'query':
      return host.query;
    case 'headers':
      return host.headers;
    case 'params':
      return host.request.params;
    case 'cookies':
      return host.cookies;
    default:
      throw new RangeError(`no request record ${i}`);
  }
}
