/**
 * The data library (README, "Script library"), both sides of the boundary: the prelude part (the
 * `base64`, `url`, `crypto` and `time` objects; JS keeps its own JSON) and the one host primitive
 * they share, over host/codecs.ts, so both languages get Node's answers. Each call is one host
 * call (~5-10 us: quickjs-emscripten's host-function wrapper), except time.now(), which QuickJS's
 * Date.now answers at once.
 *
 * JS strings are text: a string argument reaches the host as its UTF-8 bytes, and bytes come
 * back decoded as UTF-8 (invalid sequences as U+FFFD), as request.body() does. Results that are
 * arbitrary bytes therefore come as text a script can carry: crypto.random_bytes(n) returns the
 * n bytes in lower-case hex, the digests and HMACs are hex in both languages.
 */
import {
  base64Decode,
  base64Encode,
  digest,
  hmac,
  httpDate,
  parseHttpDate,
  randomBytes,
  timingSafeEqual,
  uriEscape,
  uriUnescape,
} from '../../host/codecs.js';
import type { QuickJSContext, QuickJSHandle } from 'quickjs-emscripten-core';
import { num, str, type Bindings, type Bridge } from './binding.js';

/** The host primitives of this capability. */
export const LIBRARY_PRIMITIVES = ['library'] as const;

type Result = string | Buffer | boolean | number | null;

const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');
const text = (b: Buffer | null): string | null => (b === null ? null : b.toString('utf8'));

/**
 * The library calls by operation number (the prelude's call sends the index): the name the
 * script sees, the number of string arguments, and the work on them. One table, so the two
 * sides cannot drift apart.
 */
const OPS: ReadonlyArray<readonly [name: string, arity: number, run: (a: string[]) => Result]> = [
  ['base64.encode', 1, ([s]) => base64Encode(utf8(s!), false)],
  ['base64.decode', 1, ([s]) => text(base64Decode(s!, false))],
  ['base64.encode_url', 1, ([s]) => base64Encode(utf8(s!), true)],
  ['base64.decode_url', 1, ([s]) => text(base64Decode(s!, true))],
  ['url.escape', 1, ([s]) => uriEscape(utf8(s!))],
  ['url.unescape', 1, ([s]) => text(uriUnescape(utf8(s!)))],
  ['crypto.md5', 1, ([s]) => digest('md5', utf8(s!))],
  ['crypto.sha1', 1, ([s]) => digest('sha1', utf8(s!))],
  ['crypto.sha256', 1, ([s]) => digest('sha256', utf8(s!))],
  ['crypto.sha512', 1, ([s]) => digest('sha512', utf8(s!))],
  ['crypto.hmac', 3, ([alg, key, data]) => hmac(alg!, utf8(key!), utf8(data!))],
  ['crypto.random_bytes', 1, ([n]) => randomBytes(Number(n)).toString('hex')],
  ['crypto.timing_safe_equal', 2, ([a, b]) => timingSafeEqual(utf8(a!), utf8(b!))],
  ['time.http_date', 1, ([t]) => httpDate(Number(t))],
  ['time.parse_http_date', 1, ([s]) => parseHttpDate(s!)],
];

function libraryObjects(): string {
  const objects = new Map<string, string[]>();
  OPS.forEach(([name, arity], i) => {
    const [object, fn] = name.split('.') as [string, string];
    const params = ['a', 'b', 'c'].slice(0, arity).join(', ');
    const list = objects.get(object) ?? [];
    list.push(`${fn}: (${params}) => lib(${i}, '${name}', ${arity}, ${params})`);
    objects.set(object, list);
  });
  objects.get('time')!.unshift('now: () => Date.now()');
  return [...objects].map(([object, fns]) => `  const ${object} = {\n    ${fns.join(',\n    ')},\n  };`).join('\n');
}

/**
 * The prelude part (see ../prelude.ts for the names in scope): `lib`, the one host call, and the
 * objects. Arguments are strings (a number is converted, as String() would; anything else is a
 * TypeError); one holding a NUL travels as JSON, flagged by its bit in `nul`, because the host
 * reads C strings, which end at the first NUL.
 */
export const LIBRARY_PRELUDE = `
  const libArg = (what, v) => {
    if (typeof v === 'string') return v;
    if (typeof v === 'number') return String_(v);
    throw new TypeError_(what + ': expected a string, got ' + (v === null ? 'null' : typeof v));
  };
  const lib = (op, what, n, a, b, c) => {
    let nul = 0;
    a = libArg(what, a);
    if (a.indexOf('\\0') >= 0) { nul |= 1; a = stringify(a); }
    if (n > 1) {
      b = libArg(what, b);
      if (b.indexOf('\\0') >= 0) { nul |= 2; b = stringify(b); }
    }
    if (n > 2) {
      c = libArg(what, c);
      if (c.indexOf('\\0') >= 0) { nul |= 4; c = stringify(c); }
    }
    return h_library(op, nul, a, b, c);
  };
${libraryObjects()}`;

function toHandle(vm: Bridge, ctx: QuickJSContext, value: Result): QuickJSHandle {
  if (value === null) return ctx.null;
  if (typeof value === 'boolean') return value ? ctx.true : ctx.false;
  if (typeof value === 'number') return ctx.newNumber(value);
  return vm.newString(typeof value === 'string' ? value : value.toString('utf8'));
}

/** The host side of the library. */
export function libraryBindings(vm: Bridge): Bindings<(typeof LIBRARY_PRIMITIVES)[number]> {
  const ctx = vm.context;
  return {
    library: (_run, [op, nul, ...args]) => {
      const entry = OPS[num(ctx, op)];
      if (entry === undefined) throw new TypeError('no such library call');
      const [, arity, run] = entry;
      const flags = num(ctx, nul);
      const strings: string[] = [];
      for (let i = 0; i < arity; i++) {
        const s = str(ctx, args[i]);
        strings.push(flags & (1 << i) ? (JSON.parse(s) as string) : s);
      }
      return toHandle(vm, ctx, run(strings));
    },
  };
}
