/**
 * stat() and sendfile(), both sides of the boundary: the prelude part (argument checks, paths
 * sent as NUL-separated parts) and the host primitives (../../host/files.ts confines and serves
 * the files). Apart because file access is the one capability that can refuse a script outright.
 */
import { optNum, optStr, parts, type Bindings, type Bridge } from './binding.js';

/** The host primitives of this capability. */
export const FILES_PRIMITIVES = ['stat', 'sendfile'] as const;

/** The prelude part (see ../prelude.ts for the names in scope): stat() and sendfile(). */
export const FILES_PRELUDE = `
  // Paths go last, as NUL-separated parts (see send): a NUL must reach the host, which
  // refuses such a path, rather than cut it short.
  const stat = async (path) => {
    const json = await h_stat(...String_(path).split('\0'));
    return json === '' ? null : freeze(parse(json));
  };
  // sendfile(path[, offset, length][, options]); the run ends inside it.
  const sendfile = (path, a, b, c) => {
    const ranged = !(a !== null && typeof a === 'object');
    const options = ranged ? c : a;
    if (options !== undefined && options !== null && typeof options !== 'object') throw new TypeError_('sendfile(): options must be an object');
    const type = options?.content_type, name = options?.filename;
    if ((type !== undefined && typeof type !== 'string') || (name !== undefined && typeof name !== 'string')) {
      throw new TypeError_('sendfile(): content_type and filename must be strings');
    }
    flushBuffered();
    const offset = ranged && a != null ? Number_(a) : undefined, length = ranged && b != null ? Number_(b) : undefined;
    return h_sendfile(offset, length, type, name, ...String_(path).split('\0'));
  };`;

/** The host side of stat() and sendfile(). */
export function filesBindings(vm: Bridge): Bindings<(typeof FILES_PRIMITIVES)[number]> {
  const ctx = vm.context;
  return {
    // The prelude parses the JSON; '' stands for a missing file.
    stat: (run, args) => vm.hostCall(run, run.host.stat(parts(ctx, args)), (info) => vm.newString(info ? JSON.stringify(info) : '')),
    sendfile: (run, [offset, length, type, name, ...path]) =>
      vm.hostCall(
        run,
        run.host.sendfile(parts(ctx, path), {
          offset: optNum(ctx, offset),
          length: optNum(ctx, length),
          contentType: optStr(ctx, type),
          filename: optStr(ctx, name),
        }),
        () => ctx.undefined,
      ),
  };
}
