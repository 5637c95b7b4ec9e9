/**
 * cache.get/set/delete/incr, both sides of the boundary: the prelude part (the `cache` object,
 * arguments as JSON) and the host primitives (../../host/cache.ts checks keys and TTLs and talks
 * to the content cache). Apart because it is the one capability that answers at once or through
 * a promise depending on the backend (the embedded cache, Redis).
 */
import { str, type Bindings, type Bridge } from './binding.js';
import { fromScript, toScript, type FromScript } from './script-response.js';

/** The host primitives of this capability. */
export const CACHE_PRIMITIVES = ['cacheGet', 'cacheSet', 'cacheDelete', 'cacheIncr'] as const;

/** The prelude part (see ../prelude.ts for the names in scope): the `cache` object. */
export const CACHE_PRELUDE = `
  const cache = {
    get: async (key) => fromHost(await h_cacheGet(stringify(String_(key)))),
    set: async (key, value, ttl) => parse(await h_cacheSet(stringify({ k: String_(key), v: toHost('cache.set()', value), t: ttl === undefined ? 0 : Number_(ttl) }))),
    delete: async (key) => parse(await h_cacheDelete(stringify(String_(key)))),
    incr: async (key, by, ttl) => parse(await h_cacheIncr(stringify({ k: String_(key), by: by === undefined ? 1 : Number_(by), t: ttl === undefined ? null : Number_(ttl) }))),
  };`;

/** The host side of the cache calls. */
export function cacheBindings(vm: Bridge): Bindings<(typeof CACHE_PRIMITIVES)[number]> {
  const ctx = vm.context;
  return {
    cacheGet: (run, [key]) => vm.answer(run, run.host.cacheGet(JSON.parse(str(ctx, key)) as string), (v) => vm.newString(toScript(run, v))),
    cacheSet: (run, [json]) => {
      const { k, v, t } = JSON.parse(str(ctx, json)) as { k: string; v: FromScript; t: number };
      return vm.answer(run, run.host.cacheSet(k, fromScript(run, v), t), (ok) => vm.newString(JSON.stringify(ok)));
    },
    cacheDelete: (run, [key]) => vm.answer(run, run.host.cacheDelete(JSON.parse(str(ctx, key)) as string), (ok) => vm.newString(JSON.stringify(ok))),
    cacheIncr: (run, [json]) => {
      const { k, by, t } = JSON.parse(str(ctx, json)) as { k: string; by: number; t: number | null };
      return vm.answer(run, run.host.cacheIncr(k, by, t ?? undefined), (n) => vm.newString(JSON.stringify(n)));
    },
  };
}
