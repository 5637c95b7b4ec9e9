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
  const pass = (name, options) => {
    let o, params, body;
    try {
      if (options !== undefined && options !== null && typeof options !== 'object') throw new TypeError_('pass(): options must be an object');
      o = options ?? {};
      if (o.params !== undefined && o.params !== null) {
        params = create(null);
        for (const k of Object.keys(o.params)) {
          const v = o.params[k];
          params[k] = v === false || v === null || v === undefined ? null : String_(v);
        }
      }
      body = o.body === undefined || o.body === null ? undefined : String_(o.body);
      if (o.emit) {
        // The run ends here: the host records the relay (no exception crosses the boundary, no
        // Error is made) and a promise that never settles keeps an awaiting script from going
        // on; other code is stopped at the next interrupt poll, and its output is dropped.
        flushBuffered();
        h_pass(stringify({ n: String_(name), p: params, b: body, e: true }));
        return new Promise_(() => {});
      }
    } catch (e) {
      // As from an async function, a bad call is a rejected promise; a host error (no such
      // backend) gets this call's place, as waitAt gives it below.
      return Promise_.reject(atSite(e, new Error_()));
    }
    // The host makes pass()'s errors outside any script frame, so they would carry no line: they
    // get the stack of this call instead (one Error, ~1 us, beside the ~300 us of a buffered pass).
    return waitAt(new Error_(), async () => fromHost(await h_pass(stringify({ n: String_(name), p: params, b: body, e: false }))));
  };`;

/** The host side of pass(): buffered into a response value, or relayed (`e`: pass(name, { emit: true })). */
export function passBindings(vm: Bridge): Bindings<(typeof PASS_PRIMITIVES)[number]> {
  const ctx = vm.context;
  return {
    pass: (run, [json]) => {
      const { n, p, b, e } = JSON.parse(str(ctx, json)) as { n: string; p?: Record<string, string | null>; b?: string; e: boolean };
      const options = { ...(p ? { params: p } : {}), ...(b !== undefined ? { body: Buffer.from(b) } : {}) };
      // Ends the run (the relay waits for the backend, not the script): the exit is recorded,
      // not thrown; the prelude returns a promise that never settles.
      if (e) {
        run.host.relayExit(n, options);
        return ctx.undefined;
      }
      return vm.hostCall(run, run.host.pass(n, options), (r) => vm.newString(toScript(run, r)));
    },
  };
}
