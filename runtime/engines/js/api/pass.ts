/**
 * pass(), both sides of the boundary: the prelude part (options checked, the call's stack kept
 * for its errors and the slow log) and the host primitive (../../host/pass.ts forwards to a
 * FastCGI backend). Apart because it is the one capability that talks to another server.
 */
import { str, type Bindings, type Bridge } from './binding.js';
import { toScript } from './script-response.js';

/** The host primitives of this capability. */
export const PASS_PRIMITIVES = ['pass'] as const;

/** The prelude part (see ../prelude.ts for the names in scope): pass(). */
export const PASS_PRELUDE = `
  const pass = async (name, options) => {
    if (options !== undefined && options !== null && typeof options !== 'object') throw new TypeError_('pass(): options must be an object');
    const o = options ?? {};
    let params;
    if (o.params !== undefined && o.params !== null) {
      params = create(null);
      for (const k of Object.keys(o.params)) {
        const v = o.params[k];
        params[k] = v === false || v === null || v === undefined ? null : String_(v);
      }
    }
    const body = o.body === undefined || o.body === null ? undefined : String_(o.body);
    if (o.emit) flushBuffered();
    // The host makes pass()'s errors outside any script frame, so they would carry no line: they
    // get the stack of this call instead (one Error, ~1 us, beside a relay of ~230 us).
    return waitAt(new Error_(), async () => fromHost(await h_pass(stringify({ n: String_(name), p: params, b: body, e: !!o.emit }))));
  };`;

/** The host side of pass(): buffered into a response value, or relayed (`e`: pass(name, { emit: true })). */
export function passBindings(vm: Bridge): Bindings<(typeof PASS_PRIMITIVES)[number]> {
  const ctx = vm.context;
  return {
    pass: (run, [json]) => {
      const { n, p, b, e } = JSON.parse(str(ctx, json)) as { n: string; p?: Record<string, string | null>; b?: string; e: boolean };
      const options = { ...(p ? { params: p } : {}), ...(b !== undefined ? { body: Buffer.from(b) } : {}) };
      // Ends the run at once (the host throws its exit): the relay waits for the backend, not the script.
      if (e) return run.host.passThrough(n, options);
      return vm.hostCall(run, run.host.pass(n, options), (r) => vm.newString(toScript(run, r)));
    },
  };
}
