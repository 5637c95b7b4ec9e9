/**
 * Which JS modules may be loaded once per Vm and shared by the runs that follow (README,
 * "Modules"), decided from the module's source before it is compiled: the static half of the
 * rule; the prelude's loader (api/modules.ts) checks the other half when the top level has run.
 *
 * A shared module's top level runs once; every later run gets the same exports, deep-frozen.
 * Freezing reaches every object reachable from the module's own variables, but not what a
 * function keeps in its closure. So a module is shared only when its functions keep nothing of
 * their own between calls:
 * - no function assigns a variable of the top level (a counter, a lazily built table);
 * - a function keeps only variables of the module's top level (which the loader reads through
 *   the wrapper's `names` getter and freezes) or of its enclosing functions (read or assigned),
 *   and those functions are instrumented: if one runs during the top level (a closure factory
 *   called there), the loader does not share the module;
 * - `this` kept by an arrow function counts as a variable of the function around it;
 * - no generator functions (a generator object keeps its frame, and nothing can tell when the
 *   top level made one);
 * - no function changes a module value in place (`cache[k] = v`, `list.push(v)`): frozen, that
 *   would throw where the module used to work, so such a module keeps running per request;
 * - no class has private fields (freezing cannot reach them).
 * Anything else (a module that does not parse here, the reserved name) keeps running per request
 * too: refusing costs speed, never correctness.
 *
 * acorn parses and eslint-scope resolves the references: both well-kept, pure JS, and what ESLint
 * itself relies on. They are loaded with the JS engine only.
 */
import { parse } from 'acorn';
import { analyze, type Scope } from 'eslint-scope';
import { KEYS } from 'eslint-visitor-keys';
import type * as ESTree from 'estree';
import { SHARE_CONTROL } from './prelude.js';


/** A module the loader may share: its body with the instrumentation, and its top-level names. */
export interface SharePlan {
  readonly shared: true;
  /** The module's source with `$lodestone$.t()` at the start of every instrumented function (no line added). */
  readonly body: string;
  /** Every variable of the module's top level the loader must freeze the value of. */
  readonly names: readonly string[];
  /** The API parameters the module uses as given (not redeclared): the loader binds the real API to them after the top level. */
  readonly rebinds: readonly string[];
}

/** A module that runs per request, and why (for tests and the debug log). */
export interface ShareRefusal {
  readonly shared: false;
  readonly reason: string;
}

/** ES version parsed: one eslint-visitor-keys knows every node of (an unknown node would hide references). */
const ECMA_VERSION = 2024;

/** Methods that change their receiver: called on a module value by a function, they refuse sharing. */
const MUTATORS = new Set([
  'push', 'pop', 'shift', 'unshift', 'splice', 'sort', 'reverse', 'fill', 'copyWithin',
  'set', 'add', 'delete', 'clear', 'setTime', 'setFullYear', 'setMonth', 'setDate', 'setHours',
]);

type AnyNode = ESTree.Node & { start: number; end: number };

/**
 * Decides whether the module `source` may be shared. `params` are the module wrapper's
 * parameters after `module, exports` (the script API), so references to them resolve as in
 * the compiled wrapper.
 */
export function planShare(source: string, params: readonly string[]): SharePlan | ShareRefusal {
  const head = `(function (module, exports, ${params.join(', ')}) {"use strict"; `;
  const text = `${head}${source}\n})`;
  let program: ESTree.Program;
  try {
    program = parse(text, { ecmaVersion: ECMA_VERSION, sourceType: 'script', ranges: true }) as unknown as ESTree.Program;
  } catch (err) {
    return refuse(`it does not parse as ES${ECMA_VERSION} (${err instanceof Error ? err.message : String(err)})`);
  }
  const stmt = program.body[0];
  const wrapper = stmt?.type === 'ExpressionStatement' ? stmt.expression : null;
  // A source that closes the wrapper early parses as more than one function: compile.ts
  // rejects it; here it is simply not shared.
  if (program.body.length !== 1 || wrapper?.type !== 'FunctionExpression' || (wrapper as AnyNode).end !== text.length - 1) {
    return refuse('it closes its own wrapper');
  }
  const manager = analyze(program, { ecmaVersion: ECMA_VERSION, sourceType: 'script', childVisitorKeys: KEYS });
  const top = manager.acquire(wrapper);
  if (top === null) return refuse('no scope for the module (internal)');

  // A node's line in the source (the head holds no newline); only refusals need one.
  const line = (n: ESTree.Node): number => {
    let count = 1;
    for (let i = text.indexOf('\n'); i >= 0 && i < (n as AnyNode).start; i = text.indexOf('\n', i + 1)) count++;
    return count;
  };
  const facts = walk(program, line);
  if (facts.refusal !== null) return refuse(facts.refusal);

  // Functions whose body starts with the call (false), field values wrapped in it (true).
  const instrument = new Map<AnyNode, boolean>();
  for (const scope of manager.scopes) {
    for (const ref of scope.references) {
      const id = ref.identifier as ESTree.Identifier;
      if (id.name === SHARE_CONTROL) return refuse(`line ${line(id)}: it names ${SHARE_CONTROL}, which Lodestone reserves`);
      const v = ref.resolved;
      if (v === null) continue; // a global: the sandbox's globals are frozen
      // The wrapper's arguments hold the loader's control and the API's stand-ins.
      if (v.scope === top && v.name === 'arguments') return refuse(`line ${line(id)}: it uses the module's arguments`);
      // The loader binds the real API after the top level: one the module replaced would be lost.
      if (v.scope === top && params.includes(v.name) && ref.isWrite()) return refuse(`line ${line(id)}: it assigns '${v.name}', a name of the script API`);
      const from: Scope = ref.from.variableScope;
      const owner: Scope = v.scope.variableScope;
      if (from === owner) continue;
      // A function (or class field) uses a variable of an enclosing scope: it keeps it.
      if (owner === top) {
        if (ref.isWrite()) return refuse(`line ${line(id)}: a function assigns '${id.name}', a variable of the module's top level`);
        if (v.scope !== top && v.scope.type !== 'class' && v.scope.type !== 'function-expression-name') {
          return refuse(`line ${line(id)}: a function keeps '${id.name}', declared in a block of the top level`);
        }
        // The script API acts on the calling run: setting response.status is no module value.
        if (params.includes(v.name) && v.defs.every((d) => d.type === 'Parameter')) continue;
        const change = changedHere(id, facts.parents);
        if (change !== null) return refuse(`line ${line(id)}: a function changes '${id.name}' (${change}), a value of the module`);
        continue;
      }
      if (owner.type !== 'function') return refuse(`line ${line(id)}: a ${owner.type} keeps '${id.name}'`);
      instrument.set(owner.block as AnyNode, false);
    }
  }
  for (const [node, field] of facts.toInstrument) instrument.set(node, field);

  const names: string[] = [];
  const rebinds: string[] = [];
  for (const v of top.variables) {
    if (v.name === 'arguments') continue;
    // A module's `function log() {}` replaces the parameter: its value is the module's own.
    if (params.includes(v.name) && v.defs.every((d) => d.type === 'Parameter')) {
      if (v.references.length > 0) rebinds.push(v.name);
    } else {
      names.push(v.name);
    }
  }
  return { shared: true, body: instrumented(source, head.length, instrument), names, rebinds };
}

function refuse(reason: string): ShareRefusal {
  return { shared: false, reason };
}

/** What one walk of the tree learns: parents, the functions whose `this` an arrow keeps, a refusal. */
interface Facts {
  readonly parents: Map<ESTree.Node, ESTree.Node>;
  /** Functions to instrument (false) and instance field values to wrap (true): those whose `this` an arrow keeps. */
  readonly toInstrument: Map<AnyNode, boolean>;
  refusal: string | null;
}

/** What holds an arrow's `this`: the top level, a function, an instance field's value, a static part. */
type Holder = { kind: 'top' | 'function' | 'field' | 'static'; node: AnyNode; arrow: boolean };

/** Walks the tree once with eslint-visitor-keys' child keys. */
function walk(program: ESTree.Program, line: (n: ESTree.Node) => number): Facts {
  const facts: Facts = { parents: new Map(), toInstrument: new Map(), refusal: null };
  // The enclosing function-like nodes, innermost last; the first is the module's wrapper.
  const holders: Holder[] = [];
  const visit = (node: ESTree.Node, parent: ESTree.Node | null): void => {
    if (parent !== null) facts.parents.set(node, parent);
    const n = node as AnyNode;
    let pushed = 0;
    // A field's value runs at each `new` (instance) or once at definition (static), with that `this`.
    if (parent?.type === 'PropertyDefinition' && parent.value === node) {
      holders.push({ kind: parent.static ? 'static' : 'field', node: n, arrow: false });
      pushed++;
    }
    if (n.type === 'FunctionExpression' || n.type === 'FunctionDeclaration' || n.type === 'ArrowFunctionExpression') {
      // A generator object keeps its frame, and a generator's body starts only at its first
      // next(): no instrumented start could see one made by the top level.
      if (n.generator) facts.refusal ??= `line ${line(n)}: it defines a generator function (a generator keeps its frame)`;
      holders.push({ kind: holders.length === 0 ? 'top' : 'function', node: n, arrow: n.type === 'ArrowFunctionExpression' });
      pushed++;
    } else if (n.type === 'StaticBlock') {
      holders.push({ kind: 'static', node: n, arrow: false });
      pushed++;
    }
    if (n.type === 'PropertyDefinition' && n.key.type === 'PrivateIdentifier') {
      facts.refusal ??= `line ${line(n)}: a class has a private field (#${n.key.name}), which freezing cannot reach`;
    }
    if ((n.type === 'ThisExpression' || n.type === 'Super' || (n.type === 'MetaProperty' && n.meta.name === 'new')) && holders.at(-1)?.arrow === true) {
      // An arrow's `this` is its enclosing non-arrow function's.
      const h = holders.findLast((x) => !x.arrow);
      if (h?.kind === 'static') facts.refusal ??= `line ${line(n)}: an arrow function keeps 'this' of a class's static part`;
      else if (h?.kind === 'function' || h?.kind === 'field') facts.toInstrument.set(h.node, h.kind === 'field');
    }
    for (const key of KEYS[n.type] ?? []) {
      const child = (n as unknown as Record<string, unknown>)[key];
      if (Array.isArray(child)) {
        for (const c of child) if (c !== null && typeof c === 'object' && 'type' in c) visit(c as ESTree.Node, node);
      } else if (child !== null && typeof child === 'object' && 'type' in child) {
        visit(child as ESTree.Node, node);
      }
    }
    holders.length -= pushed;
  };
  visit(program, null);
  return facts;
}

/**
 * How a function changes the module value `id` names in place, or null: `id.x = v`, `id[k]++`,
 * `delete id.x`, `id.list.push(v)` (a member chain rooted at `id` as the target, or a mutating
 * method called on one). Aliases (`const c = cache; c.x = 1`) are not followed: on a shared
 * module those throw, as frozen objects do.
 */
function changedHere(id: ESTree.Identifier, parents: Map<ESTree.Node, ESTree.Node>): string | null {
  let node: ESTree.Node = id;
  let parent = parents.get(node);
  let member = false;
  while (parent?.type === 'MemberExpression' && parent.object === node) {
    member = true;
    node = parent;
    parent = parents.get(node);
  }
  if (!member) return null;
  if (parent?.type === 'AssignmentExpression' && parent.left === node) return 'assignment';
  if (parent?.type === 'UpdateExpression') return parent.operator;
  if (parent?.type === 'UnaryExpression' && parent.operator === 'delete') return 'delete';
  if ((parent?.type === 'ForInStatement' || parent?.type === 'ForOfStatement') && parent.left === node) return 'assignment';
  // A call of a mutating method: the chain's last step is the method (`id.list.push`).
  if (parent?.type === 'CallExpression' && parent.callee === node && node.type === 'MemberExpression') {
    const name = node.property.type === 'Identifier' && !node.computed ? node.property.name : node.property.type === 'Literal' ? String(node.property.value) : null;
    if (name !== null && MUTATORS.has(name)) return `.${name}()`;
  }
  return null;
}

/**
 * `source` with `$lodestone$.t();` at the start of each instrumented function's body (an
 * expression body or a field value becomes `($lodestone$.t(), expr)`). Nothing inserted holds a
 * newline, so lines stay the source's.
 */
function instrumented(source: string, offset: number, nodes: ReadonlyMap<AnyNode, boolean>): string {
  const edits: Array<[at: number, text: string]> = [];
  const call = `${SHARE_CONTROL}.t()`;
  for (const [node, field] of nodes) {
    const body = field ? node : ((node as ESTree.Function).body as AnyNode);
    if (body.type === 'BlockStatement') {
      edits.push([body.start + 1 - offset, `${call};`]);
    } else {
      edits.push([body.start - offset, `(${call}, `], [body.end - offset, ')']);
    }
  }
  edits.sort((a, b) => b[0] - a[0]);
  let out = source;
  for (const [at, insert] of edits) out = out.slice(0, at) + insert + out.slice(at);
  return out;
}
