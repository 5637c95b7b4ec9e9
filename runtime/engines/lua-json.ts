/**
 * Lua's json.encode and json.decode, for both Lua engines: the walk between Lua values and JS
 * values, with lua-cjson's rules. Node prints and parses the text (host/codecs.ts: JSON.stringify
 * and JSON.parse); this module only decides what a Lua value means in JSON and back. The two
 * engines reach their Lua values through different C APIs (fengari's JS objects, lua54's wasm
 * exports), so each gives a thin {@link LuaStack} over its own and the rules live once, here.
 *
 * The rules (lua-cjson 2.1 with its defaults): a table marked with json.array(t) is an array of
 * t[1..#t]; a table whose keys are all positive integers is an array, holes becoming null, unless
 * it is excessively sparse (largest key over 10 and over twice the number of keys), an error;
 * an empty table is an object; any other table is an object whose number keys become their
 * decimal text and whose other non-string keys are an error. json.null is null both ways. NaN
 * and infinities, functions, coroutines, userdata, cycles and nesting past 1000 are errors
 * naming where they are (`$.a[2]`). Decoded arrays come back marked, so they encode as arrays
 * again even when empty.
 */
import { jsonParse, jsonStringify, deepAt, MAX_JSON_DEPTH, MAX_LIBRARY_BYTES } from './host/codecs.js';

// Lua type tags: the same numbers in fengari and in the C API.
const T_NIL = 0;
const T_BOOLEAN = 1;
const T_LIGHTUSERDATA = 2;
const T_NUMBER = 3;
const T_STRING = 4;
const T_TABLE = 5;
const TYPE_NAMES = ['nil', 'boolean', 'userdata', 'number', 'string', 'table', 'function', 'userdata', 'thread'];

/**
 * Stack slots a {@link LuaStack.checkStack} keeps free beyond what the walk asks for: raising an
 * error from the deepest level pushes its position and message, and neither engine may push
 * past the room it was given (fengari asserts; PUC Lua would write past the stack).
 */
export const STACK_SLACK = 5;

/** Values one JS loop may walk between two checks of the run's limits (engine's `tick`). */
const TICK = 4096;

/**
 * One engine's Lua stack as the walk needs it. Indexes are absolute (positive); values the walk
 * pushes it pops again. Methods may raise the engine's own Lua errors (memory) at any point.
 */
export interface LuaStack {
  top(): number;
  type(idx: number): number;
  toBoolean(idx: number): boolean;
  toNumber(idx: number): number;
  /** The string at `idx` decoded as strict UTF-8; null when its bytes are not UTF-8. */
  text(idx: number): string | null;
  /** True for json.null (the engine's light userdata sentinel). */
  isNull(idx: number): boolean;
  /** Something that names the table at `idx` while it is alive (for cycles). */
  identity(idx: number): unknown;
  /** Makes the table at `idx` one whose contents lua_next and rawgeti read (lua54: a shared module's untouched table is a proxy); optional. */
  solid?(idx: number): void;
  /** True when json.array() marked the table at `idx`. */
  isMarked(idx: number): boolean;
  rawlen(idx: number): number;
  /** lua_next on the table at `idx` (the key on top is popped; key and value pushed when it returns true). */
  next(idx: number): boolean;
  /** Pushes t[i] for the table at `idx` (raw). */
  rawgeti(idx: number, i: number): void;
  pop(n: number): void;
  /** Makes room for `n` more values on the stack (a Lua error when it cannot). */
  checkStack(n: number): void;
  pushNil(): void;
  pushNull(): void;
  pushBoolean(b: boolean): void;
  /** Pushes a number: an integer when it is whole and fits the engine's integers, else a float. */
  pushNumber(n: number): void;
  pushString(s: string): void;
  /** Pushes a new table; `array`: mark it as json.array() would. */
  pushTable(narr: number, nrec: number, array: boolean): void;
  /** t[k] = v for the table at `idx`, key and value on top (popped). */
  rawset(idx: number): void;
  /** t[i] = v for the table at `idx`, value on top (popped). */
  rawseti(idx: number, i: number): void;
  /** Counts `units` of work and checks the run's CPU and memory limits (may end the run). */
  tick(units: number): void;
}

type Path = Array<string | number>;

function where(path: Path): string {
  let out = '$';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : /^[A-Za-z_][A-Za-z0-9_]*$/.test(p) ? `.${p}` : `[${JSON.stringify(p)}]`;
  return out;
}

class Encoder {
  private readonly path: Path = [];
  private readonly open = new Set<unknown>();
  /** Output size so far, roughly (a bound on the walk, not the final check). */
  private size = 0;
  private work = 0;

  constructor(private readonly s: LuaStack) {}

  fail(what: string): never {
    throw new TypeError(`json.encode: ${what}${this.path.length > 0 ? ` (at ${where(this.path)})` : ''}`);
  }

  grow(bytes: number): void {
    this.size += bytes;
    // Shared subtables are walked once per reference: a table that holds itself twice at each
    // of 30 levels is 2^30 values. The size bound stops that walk long before the memory goes.
    if (this.size > MAX_LIBRARY_BYTES) this.fail(`result over ${MAX_LIBRARY_BYTES} bytes`);
    if (++this.work >= TICK) {
      this.s.tick(this.work);
      this.work = 0;
    }
  }

  value(idx: number): unknown {
    const s = this.s;
    const t = s.type(idx);
    switch (t) {
      case T_NIL:
        this.grow(4);
        return null;
      case T_BOOLEAN:
        this.grow(5);
        return s.toBoolean(idx);
      case T_NUMBER: {
        const n = s.toNumber(idx);
        if (!Number.isFinite(n)) this.fail('cannot encode NaN or infinity');
        this.grow(8);
        return n;
      }
      case T_STRING: {
        const text = s.text(idx);
        if (text === null) this.fail('a string is not valid UTF-8');
        this.grow(text.length + 2);
        return text;
      }
      case T_TABLE:
        return this.table(idx);
      case T_LIGHTUSERDATA:
        if (s.isNull(idx)) {
          this.grow(4);
          return null;
        }
    }
    return this.fail(`cannot encode a ${TYPE_NAMES[t] ?? 'value'}`);
  }

  table(idx: number): unknown {
    const s = this.s;
    s.solid?.(idx);
    const id = s.identity(idx);
    if (this.open.has(id)) this.fail('a table contains itself');
    if (this.path.length >= MAX_JSON_DEPTH) this.fail(`nested deeper than ${MAX_JSON_DEPTH} levels`);
    s.checkStack(3);
    this.open.add(id);
    this.grow(2);
    const out = s.isMarked(idx) ? this.marked(idx) : this.entries(idx);
    this.open.delete(id);
    return out;
  }

  /** A json.array() table: t[1..#t], whatever other keys it has (cjson's array_mt). */
  marked(idx: number): unknown[] {
    const s = this.s;
    const n = s.rawlen(idx);
    const out: unknown[] = new Array(n);
    for (let i = 1; i <= n; i++) {
      s.rawgeti(idx, i);
      this.path.push(i);
      out[i - 1] = this.value(s.top());
      this.path.pop();
      s.pop(1);
    }
    return out;
  }

  /** Any other table: walked once, then an array or an object by its keys (cjson's rules). */
  entries(idx: number): unknown {
    const s = this.s;
    const keys: Array<string | number> = [];
    const values: unknown[] = [];
    let arrayLike = true;
    let max = 0;
    s.pushNil();
    while (s.next(idx)) {
      const keyAt = s.top() - 1;
      const kt = s.type(keyAt);
      let key: string | number;
      if (kt === T_NUMBER) {
        key = s.toNumber(keyAt);
        if (Number.isInteger(key) && key >= 1) max = Math.max(max, key);
        else arrayLike = false;
      } else if (kt === T_STRING) {
        const text = s.text(keyAt);
        if (text === null) this.fail('a key is not valid UTF-8');
        key = text;
        arrayLike = false;
      } else {
        this.fail(`a table key must be a string or a number, not a ${TYPE_NAMES[kt] ?? 'value'}`);
      }
      this.path.push(key);
      values.push(this.value(s.top()));
      this.path.pop();
      keys.push(key);
      this.grow(typeof key === 'string' ? key.length + 3 : 8);
      s.pop(1);
    }
    if (keys.length === 0) return {};
    if (arrayLike) {
      if (max > 10 && max > keys.length * 2) this.fail('excessively sparse array (use string keys, or fill the holes)');
      const out: unknown[] = new Array<unknown>(max).fill(null);
      for (let i = 0; i < keys.length; i++) out[(keys[i] as number) - 1] = values[i];
      this.grow(max - keys.length);
      return out;
    }
    // A prototype-less object: a key "__proto__" is a key like any other.
    const out = Object.create(null) as Record<string, unknown>;
    for (let i = 0; i < keys.length; i++) out[String(keys[i])] = values[i];
    return out;
  }
}

/** json.encode(value): the value at `idx` as JSON text. Throws a TypeError naming what cannot be encoded. */
export function luaToJson(s: LuaStack, idx: number): string {
  return jsonStringify(new Encoder(s).value(idx));
}

/**
 * json.decode(text): pushes the Lua value of the JSON text `bytes`. Throws a TypeError with the
 * byte position for invalid JSON, text that is not UTF-8, or nesting past {@link MAX_JSON_DEPTH}.
 */
export function jsonToLua(s: LuaStack, bytes: Uint8Array): void {
  const { value, text } = jsonParse(bytes);
  let work = 0;
  const push = (v: unknown, depth: number): void => {
    if (++work >= TICK) {
      s.tick(work);
      work = 0;
    }
    if (v === null) s.pushNull();
    else if (typeof v === 'string') s.pushString(v);
    else if (typeof v === 'number') s.pushNumber(v);
    else if (typeof v === 'boolean') s.pushBoolean(v);
    else {
      if (depth >= MAX_JSON_DEPTH) throw new TypeError(`json.decode: nested deeper than ${MAX_JSON_DEPTH} levels at byte ${deepAt(text)}`);
      s.checkStack(3);
      if (Array.isArray(v)) {
        s.pushTable(v.length, 0, true);
        const t = s.top();
        for (let i = 0; i < v.length; i++) {
          push(v[i], depth + 1);
          s.rawseti(t, i + 1);
        }
      } else {
        const keys = Object.keys(v as object);
        s.pushTable(0, keys.length, false);
        const t = s.top();
        for (const key of keys) {
          s.pushString(key);
          push((v as Record<string, unknown>)[key], depth + 1);
          s.rawset(t);
        }
      }
    }
  };
  push(value, 0);
}
