/**
 * Output: print, write, flush, log, emit() and `response` (status and headers), both sides of
 * the boundary: the prelude part that builds them inside QuickJS and the host primitives they
 * call (../../host/output.ts does the work). Apart from the request view because this is what a
 * script changes, and because writes are buffered in the sandbox to save host calls (the host
 * collects them at the end of each CPU slice: js/vm.ts).
 */
import { TOKEN } from '../../../fastcgi/server/response.js';
import { isModuleFault } from '../module.js';
import type { Run } from '../run.js';
import type { ScriptResponse } from '../../host.js';
import { num, parts, str, type Bindings, type Bridge } from './binding.js';
import { fromScript, type FromScript } from './script-response.js';

/** The host primitives of this capability. */
export const OUTPUT_PRIMITIVES = ['write', 'flush', 'log', 'logRoom', 'emit', 'getStatus', 'setStatus', 'getHeader', 'setHeader', 'head'] as const;

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

  // The response head (status and headers) is kept the same way: changes collect in 'head'
  // ([name, value or null (remove), ...]) and 'headStatus', and reach the host with the output
  // at the end of the slice, or before a call that acts on the response. The checks the host
  // would make are made here, so a bad header still throws at the assignment. Once the head
  // may have been sent (flush, emit, sendfile, pass with emit), changes go to the host at once,
  // which refuses those that come too late.
  let head = null, headStatus = null;
  let headSent = false;
  // A header line added beside the others of its name (Set-Cookie) is '=' name in 'head' (no
  // header name starts with '='). Which value the host will then report first depends on what
  // it has, so getHeader() hands 'head' over first while one is pending (rare: a read after a
  // cookie in the same slice).
  let headAdds = false;
  // The changes as text: the status (or nothing), then '\\n' name ':' value for a header set,
  // '\\n=' name ':' value for a line added and '\\n' name for one removed. Names are tokens,
  // values hold no CR, LF or NUL: no JSON (QuickJS's JSON.stringify costs ~1.7 us for a
  // three-element array).
  const headText = () => {
    let t = headStatus === null ? '' : String_(headStatus);
    if (head !== null) {
      for (let i = 0; i < head.length; i += 2) t += head[i + 1] === null ? '\\n' + head[i] : '\\n' + head[i] + ':' + head[i + 1];
    }
    head = null;
    headStatus = null;
    headAdds = false;
    return t;
  };
  const syncHead = () => {
    if (head !== null || headStatus !== null) h_head(headText());
  };
  // Hands buffered output and head changes to the host before a call that acts on the response.
  const flushBuffered = () => {
    syncHead();
    headSent = true;
    if (buffered) {
      const out = buffered;
      buffered = '';
      send(h_write, out);
    }
  };
  // The slice's head changes and output, each after a '\\r' (the head holds none), so the host
  // splits at the first two (start() puts the returned status first).
  const takeOut = () => {
    const b = buffered;
    buffered = '';
    return head === null && headStatus === null ? '\\r\\r' + b : '\\r' + headText() + '\\r' + b;
  };
  const resetOut = () => {
    buffered = '';
    head = null;
    headStatus = null;
    headAdds = false;
    headSent = false;
  };

  // The API functions are shared by all runs (and frozen): the host primitives act on the run
  // whose slice is executing, so nothing here names a run.
  const print = (...args) => { emit(join(args, '\\t') + '\\n'); };
  const write = (...args) => { emit(join(args, '')); };
  const flush = () => {
    flushBuffered();
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

  const HEADER_NAME = /${TOKEN.source}/, goodNames = new Set();
  const setHeader = (name, value) => {
    // null asks the host to remove the header.
    const v = value === undefined || value === null ? null : String_(value);
    if (name.indexOf('\\0') >= 0 || (v !== null && v.indexOf('\\0') >= 0)) {
      throw new TypeError_('invalid header ' + stringify(name) + ': NUL');
    }
    if (headSent) {
      const err = h_setHeader(name, v ?? undefined);
      if (err !== undefined) throw new TypeError_(err);
      return;
    }
    // A regular expression's test() costs ~1 us in QuickJS (it builds the match): names once
    // checked are remembered, as the host does; values are searched for CR and LF (NUL: above).
    if (!goodNames.has(name)) {
      if (!HEADER_NAME.test(name)) throw new TypeError_('invalid header name ' + stringify(name));
      if (goodNames.size < 256) goodNames.add(name);
    }
    if (v !== null && (v.indexOf('\\r') >= 0 || v.indexOf('\\n') >= 0)) throw new TypeError_('invalid value for header ' + name + ': CR, LF or NUL');
    (head ??= []).push(name, v);
  };
  // Adds a header line, keeping the others of its name; the caller has checked name and value
  // (setCookie: a fixed name, a line the cookie package wrote). After the head may have been
  // sent, the host refuses it with its own error, as it refuses a late response.cookie() in Lua.
  const addHeader = (name, value) => {
    if (headSent) {
      h_head('\\n=' + name + ':' + value);
      return;
    }
    (head ??= []).push('=' + name, value);
    headAdds = true;
  };
  // A header's value as the script last set it in this slice, else as the host has it.
  const getHeader = (name) => {
    if (headAdds) syncHead();
    if (head !== null) {
      const lower = name.toLowerCase();
      for (let i = head.length - 2; i >= 0; i -= 2) {
        if (head[i].toLowerCase() === lower) return head[i + 1] ?? undefined;
      }
    }
    return h_getHeader(name);
  };
  const headerTraps = freeze({
    get: (t, k) => (typeof k === 'string' && k.indexOf('\\0') < 0 ? getHeader(k) : undefined),
    has: (t, k) => typeof k === 'string' && k.indexOf('\\0') < 0 && getHeader(k) !== undefined,
    set: (t, k, v) => { if (typeof k !== 'string') return false; setHeader(k, v); return true; },
    deleteProperty: (t, k) => { if (typeof k === 'string') setHeader(k, undefined); return true; },
    defineProperty: () => false,
    // The proxy serves every run (see Response): its empty target must stay extensible, with a
    // null prototype, or one run's Object.freeze(response.headers) would break the 'in' of the next.
    preventExtensions: () => false,
    setPrototypeOf: () => false,
  });

  // One Response serves every run of the context (frozen by harden()): it holds no state of its
  // own, its accessors act on the run in progress (and on 'head').
  class Response {
    #headers = new Proxy(create(null), headerTraps);
    constructor(token) { if (token !== TOKEN) throw new TypeError_('Illegal constructor'); }
    get status() { return headStatus ?? h_getStatus(); }
    set status(v) {
      if (typeof v !== 'number' || !isInteger(v) || v < 100 || v > 999) throw new TypeError_('invalid status ' + show(v));
      if (headSent) h_setStatus(v);
      else headStatus = v;
    }
    get headers() { return this.#headers; }
    cookie(name, value, options) { setCookie(name, value, options); }
  }
  const response = new Response(TOKEN);`;

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
    head: (run, [json]) => {
      applyHead(run, str(ctx, json));
      return undefined;
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

/**
 * Applies what the prelude's takeOut(), or a start() that finished the run, answered
 * (status '\r' head '\r' output): the head changes, then the output. Returns the status part
 * ('' when the script returned no number). Throws what host.write throws past the limit.
 */
export function applyTaken(run: Run, text: string): string {
  const a = text.indexOf('\r');
  const b = text.indexOf('\r', a + 1);
  if (a < 0 || b < 0) throw new Error('malformed output from the sandbox');
  if (b > a + 1) applyHead(run, text.slice(a + 1, b));
  if (b + 1 < text.length) run.host.write(text.slice(b + 1));
  return text.slice(0, a);
}

// The head changes the prelude collected (its headText()): the status, then each header set,
// added ('=' name: a Set-Cookie line) or removed, in the script's order. The prelude checked
// them as the host would.
function applyHead(run: Run, text: string): void {
  const ops = text.split('\n');
  if (ops[0] !== '') run.host.status = Number(ops[0]);
  for (let i = 1; i < ops.length; i++) {
    const op = ops[i]!;
    const colon = op.indexOf(':');
    if (colon < 0) run.host.setHeader(op, null);
    else if (op.charCodeAt(0) === 0x3d) run.host.addHeader(op.slice(1, colon), op.slice(colon + 1));
    else run.host.setHeader(op.slice(0, colon), op.slice(colon + 1));
  }
}
