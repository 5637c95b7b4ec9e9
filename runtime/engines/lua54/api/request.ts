/**
 * Request bindings: the fields of `request` (filled in on first read by its __index, since
 * most scripts read a few and decoding every param costs), request.body(), and the request's
 * own globals table for `_G`. request.form() is form.ts's; it is served here as a field.
 */
import type { Bindings, Run54 } from '../run.js';
import type { Ptr } from '../wasm.js';
import { LUA_TSTRING } from '../capi.js';
import { formFunction } from './form.js';

/** The host functions of this capability, by their names in the sandbox. */
export function bindRequest(b: Bindings): Record<string, (L: Ptr) => number> {
  const { api } = b;
  const x = api.x;

  const pushRecord = (L: Ptr, record: Readonly<Record<string, string>>): void => {
    x.lua_createtable(L, 0, 0);
    for (const name in record) {
      api.push(L, name);
      api.push(L, record[name]!);
      x.lua_rawset(L, -3);
    }
  };

  const pushBody = (L: Ptr, value: unknown): number => {
    const run = b.run(L);
    run.body = value as Buffer;
    api.push(L, run.body);
    return 1;
  };

  const form = formFunction(b);
  let formFn: Ptr = 0;
  let bodyFn: Ptr = 0;
  const body = (L: Ptr): number => {
    const run = b.run(L);
    if (run.body !== null) {
      api.push(L, run.body);
      return 1;
    }
    return b.wait(L, run, 'request.body()', () => run.host.body(), pushBody);
  };

  function pushField(L: Ptr, run: Run54, key: string): boolean {
    const host = run.host;
    switch (key) {
      case 'method': api.push(L, host.method); break;
      case 'uri': api.push(L, host.uri); break;
      case 'path': api.push(L, host.path); break;
      case 'query_string': api.push(L, host.queryString); break;
      case 'remote_addr': api.push(L, host.remoteAddr); break;
      case 'script_filename': api.push(L, host.scriptFilename); break;
      case 'document_root': api.push(L, host.documentRoot); break;
      case 'query': pushRecord(L, host.query); break;
      case 'headers': pushRecord(L, host.headers); break;
      case 'params': pushRecord(L, host.request.params); break;
      case 'cookies': pushRecord(L, host.cookies); break;
      case 'body':
        bodyFn ||= api.cfunction(body);
        api.pushFunction(L, bodyFn);
        break;
      case 'form':
        formFn ||= api.cfunction(form);
        api.pushFunction(L, formFn);
        break;
      default: return false;
    }
    return true;
  }

  return {
    /** request's __index: computes a field once and keeps it in the request table. */
    request_index(L) {
      const key = x.lua_type(L, 2) === LUA_TSTRING ? api.text(L, 2) : null;
      if (key === null || !pushField(L, b.run(L), key)) {
        x.lua_pushnil(L);
        return 1;
      }
      x.lua_pushvalue(L, 2);
      x.lua_pushvalue(L, -2);
      x.lua_rawset(L, 1);
      return 1;
    },
    env(L) {
      b.pushEnv(L, b.run(L));
      return 1;
    },
  };
}
