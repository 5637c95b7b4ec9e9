/**
 * Output: print, write, flush, log, emit() and `response` (status and headers), both sides of
 * the boundary: the prelude part that builds them inside QuickJS and the host primitives they
 * call (../../host/output.ts does the work). Apart from the request view because this is what a
 * script changes, and because writes are buffered in the sandbox to save host calls (the host
 * collects them at the end of each CPU slice: js/vm.ts).
 */
import { isModuleFault } from '../module.js';
import type { ScriptResponse } from '../../host.js';
import { num, parts, str, type Bindings, type Bridge } from './binding.js';
import { fromScript, type FromScript } from './script-response.js';

/** The host primitives of this capability. */
export const OUTPUT_PRIMITIVES = ['write', 'flush', 'log', 'logRoom', 'emit', 'getStatus', 'setStatus', 'getHeader', 'setHeader'] as const;

/**
 * The prelude part (see ../prelude.ts for the names in scope): the write buffer and takeOut(),
 * print, write, flush, log, emitResponse (the script's emit) and the Response class.
 */
export const OUTPUT_PRELUDE = `

  // Output: a call out of QuickJS into the host costs ~7-10 us (quickjs-emscripten's host-function
  // wrapper), a call from the host in ~1 us, so writes collect in 'buffered' and the host takes
  // them with takeOut() at the end of every CPU slice; a buffer grown large is handed over at once.
  // The state belongs to the run in progress: start() empties it. What is handed over leaves the
  // buffer before the host call, so a write the host refuses (a stopped run, or a stack overflow
  // at the call) leaves nothing behind that later writes would pile onto.
  // The host reads takeOut()'s answer as a C string, which ends at the first NUL, so a write
  // holding one goes out at once, as NUL-separated parts (send).
  let buffered = '';
  const emit = (s) => {
    buffered += s;
    if (buffered.length >= 16384 || s.indexOf('\0') >= 0) {
      const b = buffered;
      buffered = '';
      send(h_write, b);
    }
  };
  // Hands buffered output to the host before a call that acts on the response.
  const flushBuffered = () => {
    if (buffered) {
      const out = buffered;
      buffered = '';
      send(h_write, out);
    }
  };
  const takeOut = () => {
    const b = buffered;
    buffered = '';
    return b;
  };

  // The API functions are shared by all runs (and frozen): the host primitives act on the run
  // whose slice is executing, so nothing here names a run.
  const print = (...args) => { emit(join(args, '\\t') + '\\n'); };
  const write = (...args) => { emit(join(args, '')); };
  const flush = () => {
    if (buffered) {
      const b = buffered;
      buffered = '';
      send(h_write, b);
    }
    h_flush();
  };
  // A log line is built only up to the host's room (log bytes left this run, at most one line's
  // bound): log('x'.repeat(2e7)) copies that room, not 20 MiB, out of the VM. The host gets the
  // count of characters cut and adds the marker.
  const log = (...args) => {
    const room = h_logRoom();
    let out = '', size = 0;
    for (let i = 0; i < args.length; i++) {
      const a = String_(args[i]);
      size += (i > 0 ? 1 : 0) + a.length;
      if (out.length <= room) out += (i > 0 ? '\\t' : '') + (a.length > room ? a.slice(0, room) : a);
    }
    if (size > room) out = out.slice(0, room);
    h_log(size - out.length, ...out.split('\\0'));
  };
  // Returns a promise when the body is a file (the run ends in sendfile): await it.
  const emitResponse = (res) => {
    flushBuffered();
    return h_emit(stringify(toHost('emit()', res)));
  };

  const setHeader = (name, value) => {
    // undefined asks the host to remove the header.
    const v = value === undefined || value === null ? undefined : typeof value === 'number' ? value : String_(value);
    if (name.indexOf('\\0') >= 0 || (typeof v === 'string' && v.indexOf('\\0') >= 0)) {
      throw new TypeError_('invalid header ' + stringify(name) + ': NUL');
    }
    const err = h_setHeader(name, v);
    if (err !== undefined) throw new TypeError_(err);
  };
  const headerTraps = freeze({
    get: (t, k) => (typeof k === 'string' && k.indexOf('\\0') < 0 ? h_getHeader(k) : undefined),
    has: (t, k) => typeof k === 'string' && k.indexOf('\\0') < 0 && h_getHeader(k) !== undefined,
    set: (t, k, v) => { if (typeof k !== 'string') return false; setHeader(k, v); return true; },
    deleteProperty: (t, k) => { if (typeof k === 'string') setHeader(k, undefined); return true; },
    defineProperty: () => false,
  });

  class Response {
    #headers = null;
    constructor(token) { if (token !== TOKEN) throw new TypeError_('Illegal constructor'); }
    get status() { return h_getStatus(); }
    set status(v) {
      if (typeof v !== 'number' || !isInteger(v) || v < 100 || v > 999) throw new TypeError_('invalid status ' + show(v));
      h_setStatus(v);
    }
    get headers() { return this.#headers ??= new Proxy(create(null), headerTraps); }
  }`;

/** The host side of output. */
export function outputBindings(vm: Bridge): Bindings<(typeof OUTPUT_PRIMITIVES)[number]> {
  const ctx = vm.context;
  return {
    write: (run, args) => {
      run.host.write(parts(ctx, args));
      return undefined;
    },
    flush: (run) => void run.host.flush(),
    // log(cut, ...parts): the prelude already cut the line to logRoom; `cut` counts UTF-16 units.
    log: (run, [cut, ...text]) => void run.host.log(parts(ctx, text), num(ctx, cut), 'characters'),
    logRoom: (run) => ctx.newNumber(run.host.logRoom),
    emit: (run, [json]) => {
      // A body in a file ends the run with sendfile(): the script gets a promise to await.
      const sent = run.host.emit(fromScript(run, JSON.parse(str(ctx, json)) as FromScript) as ScriptResponse);
      return sent ? vm.hostCall(run, sent, () => ctx.undefined) : undefined;
    },
    getStatus: (run) => ctx.newNumber(run.host.status),
    setStatus: (run, [n]) => {
      run.host.status = num(ctx, n);
      return undefined;
    },
    getHeader: (run, [name]) => {
      const value = run.host.getHeader(str(ctx, name));
      return value === undefined ? undefined : vm.newString(value);
    },
    setHeader: (run, [name, value]) => {
      const type = value ? ctx.typeof(value) : 'undefined';
      const v = type === 'undefined' ? null : type === 'number' ? num(ctx, value) : str(ctx, value);
      try {
        run.host.setHeader(str(ctx, name), v);
        return undefined;
      } catch (err) {
        if (isModuleFault(err)) throw err;
        return ctx.newString(err instanceof Error ? err.message : String(err));
      }
    },
  };
}
