/**
 * What a shared module's bytecode says about its functions (shared-modules-lua.ts): the names
 * of the upvalues some function assigns (OP_SETUPVAL). Only those locals can differ after a
 * run, so only those are set back before the next one; most modules assign none, and their
 * require then costs a table lookup. Read from lua_dump's output (Lua 5.4's ldump.c format,
 * not stripped: upvalue names are debug info) once per compiled module.
 */

/** OP_SETUPVAL in Lua 5.4's lopcodes.h (the low 7 bits of an instruction). */
const OP_SETUPVAL = 10;

/** Constant tags (lobject.h: makevariant) that carry a payload in a dump. */
const VNUMINT = 3;
const VNUMFLT = 19;
const VSHRSTR = 4;
const VLNGSTR = 20;

class Reader {
  pos = 0;
  constructor(readonly b: Buffer) {}

  byte(): number {
    if (this.pos >= this.b.length) throw new RangeError('dump ends early');
    return this.b[this.pos++]!;
  }

  /** ldump.c dumpSize: 7 bits a byte, most significant first, the last byte marked with 0x80. */
  size(): number {
    let x = 0;
    for (;;) {
      const c = this.byte();
      x = x * 128 + (c & 0x7f);
      if (c & 0x80) return x;
    }
  }

  /** A string: its size + 1, then its bytes; 0 for none. */
  string(): string | null {
    const n = this.size();
    if (n === 0) return null;
    const s = this.b.toString('latin1', this.pos, this.pos + n - 1);
    this.pos += n - 1;
    return s;
  }

  skip(n: number): void {
    this.pos += n;
  }
}

/**
 * The names of the upvalues that some function in the dump assigns; null when the dump is not
 * one this reader knows (another Lua version, other sizes, stripped) or does not parse whole,
 * which the caller takes as "every upvalue may be assigned".
 *
 * @example
 *   assignedUpvalues(dumpOf('local n = 0\nfunction f() n = n + 1 end')); // ['n']
 */
export function assignedUpvalues(dump: Uint8Array): string[] | null {
  const r = new Reader(Buffer.from(dump.buffer, dump.byteOffset, dump.byteLength));
  try {
    // "\x1bLua", version 5.4, format 0, LUAC_DATA; Instruction, lua_Integer, lua_Number sizes.
    const head = r.b.subarray(0, 15);
    if (!head.equals(Buffer.from([0x1b, 0x4c, 0x75, 0x61, 0x54, 0, 0x19, 0x93, 0x0d, 0x0a, 0x1a, 0x0a, 4, 8, 8]))) return null;
    r.skip(15 + 16 + 1); // the header, LUAC_INT and LUAC_NUM, the main function's upvalue count
    const names = new Set<string>();
    if (!readFunction(r, names)) return null;
    return r.pos === r.b.length ? [...names] : null;
  } catch (err) {
    if (err instanceof RangeError) return null;
    throw err;
  }
}

/** ldump.c dumpFunction; false when an assigned upvalue has no name (a stripped dump). */
function readFunction(r: Reader, names: Set<string>): boolean {
  r.string(); // source
  r.size(); // linedefined
  r.size(); // lastlinedefined
  r.skip(3); // numparams, is_vararg, maxstacksize
  const ncode = r.size();
  const assigned: number[] = [];
  for (let i = 0; i < ncode; i++) {
    const ins = r.b.readUInt32LE(r.pos + 4 * i);
    if ((ins & 0x7f) === OP_SETUPVAL) assigned.push((ins >>> 16) & 0xff);
  }
  r.skip(4 * ncode);
  const nk = r.size();
  for (let i = 0; i < nk; i++) {
    const tag = r.byte();
    if (tag === VNUMINT || tag === VNUMFLT) r.skip(8);
    else if (tag === VSHRSTR || tag === VLNGSTR) r.string();
  }
  r.skip(3 * r.size()); // upvalues: instack, idx, kind
  const nprotos = r.size();
  for (let i = 0; i < nprotos; i++) if (!readFunction(r, names)) return false;
  r.skip(r.size()); // lineinfo
  const nabs = r.size();
  for (let i = 0; i < nabs; i++) {
    r.size();
    r.size();
  }
  const nlocals = r.size();
  for (let i = 0; i < nlocals; i++) {
    r.string();
    r.size();
    r.size();
  }
  const upnames: Array<string | null> = [];
  const nup = r.size();
  for (let i = 0; i < nup; i++) upnames.push(r.string());
  for (const b of assigned) {
    const name = upnames[b];
    if (name === undefined || name === null) return false;
    names.add(name);
  }
  return true;
}
