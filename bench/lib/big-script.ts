/**
 * Generated application-sized scripts (about 2,000 lines) for the micro and big-script benchmarks: what a real
 * edge script with helpers looks like to the parser. Module tables of functions (filter/map
 * loops, sorting, string building, pattern matching, metatable "classes", config tables), so
 * most of the source is function bodies the compiler must parse but one request barely runs;
 * the top level then routes on the query, calls a few of them and prints one short line.
 *
 * Deterministic: the same arguments give the same source and the same output ({@link BIG_OUTPUT}).
 */

/** What both generated scripts print (one line). */
export const BIG_OUTPUT = 'ok rows=3 words=6 queue=2 route=/x';

// Lua allows 200 locals per function: every module is one local table, so keep well under.
const luaModule = (k: number): string => {
  const m = `m${k}`;
  const lines: string[] = [];
  lines.push(`-- module ${k}: helpers of feature ${k}`, `local ${m} = {}`, '');
  for (let j = 1; j <= 2; j++) {
    const cls = `Queue${k}_${j}`;
    lines.push(
      `${m}.defaults_${j} = {`,
      `  name = "feature ${k}.${j}",`,
      `  retries = ${j + (k % 3)},`,
      `  timeout_ms = ${(k * 37 + j * 11) % 900 + 100},`,
      `  tags = { "edge", "f${k}", "v${j}" },`,
      `  limits = { min = ${j}, max = ${k + j * 10} },`,
      `}`,
      '',
      `function ${m}.select_${j}(items, limit)`,
      `  local out = {}`,
      `  limit = limit or ${5 + j}`,
      `  for i = 1, #items do`,
      `    local item = items[i]`,
      `    if item.score and item.score > ${j} then`,
      `      out[#out + 1] = { id = item.id, name = item.name, score = item.score * ${k % 5 + 1} }`,
      `      if #out >= limit then break end`,
      `    end`,
      `  end`,
      `  return out`,
      `end`,
      '',
      `function ${m}.render_${j}(fields)`,
      `  local keys = {}`,
      `  for key in pairs(fields) do keys[#keys + 1] = key end`,
      `  sort(keys, function(a, b) return tostring(a) < tostring(b) end)`,
      `  local parts = {}`,
      `  for _, key in ipairs(keys) do`,
      `    parts[#parts + 1] = format("%s=%s", tostring(key), tostring(fields[key]))`,
      `  end`,
      `  return concat(parts, "&")`,
      `end`,
      '',
      `function ${m}.count_${j}(text)`,
      `  local counts, total = {}, 0`,
      `  for word in text:gmatch("%a+") do`,
      `    word = word:lower()`,
      `    counts[word] = (counts[word] or 0) + 1`,
      `    total = total + 1`,
      `  end`,
      `  return counts, total`,
      `end`,
      '',
      `function ${m}.escape_${j}(s)`,
      `  return (tostring(s):gsub("[<>&\\"]", function(c)`,
      `    if c == "<" then return "&lt;" elseif c == ">" then return "&gt;"`,
      `    elseif c == "&" then return "&amp;" else return "&quot;" end`,
      `  end))`,
      `end`,
      '',
      `function ${m}.merge_${j}(a, b)`,
      `  local out = {}`,
      `  for key, value in pairs(a) do out[key] = value end`,
      `  for key, value in pairs(b) do`,
      `    if type(value) == "table" and type(out[key]) == "table" then`,
      `      out[key] = ${m}.merge_${j}(out[key], value)`,
      `    else`,
      `      out[key] = value`,
      `    end`,
      `  end`,
      `  return out`,
      `end`,
      '',
      `local ${cls} = {}`,
      `${cls}.__index = ${cls}`,
      `function ${cls}.new(name, capacity)`,
      `  return setmetatable({ name = name, items = {}, size = 0, capacity = capacity or ${j * 8} }, ${cls})`,
      `end`,
      `function ${cls}:push(value)`,
      `  if self.size >= self.capacity then return false end`,
      `  self.size = self.size + 1`,
      `  self.items[self.size] = value`,
      `  return true`,
      `end`,
      `function ${cls}:pop()`,
      `  if self.size == 0 then return nil end`,
      `  local value = self.items[self.size]`,
      `  self.items[self.size] = nil`,
      `  self.size = self.size - 1`,
      `  return value`,
      `end`,
      `function ${cls}:each(fn)`,
      `  for i = 1, self.size do fn(self.items[i], i) end`,
      `end`,
      `${m}.${cls} = ${cls}`,
      '',
    );
  }
  return lines.join('\n');
};

/** Lines of `parts` joined with newlines. */
const linesOf = (parts: readonly string[]): number => parts.reduce((n, p) => n + p.split('\n').length, 0);

/** As many feature modules as it takes for `fixed` lines plus the modules to reach `target`. */
function modulesFor(target: number, fixed: number, moduleOf: (k: number) => string): string[] {
  const modules: string[] = [];
  // At least 6: the request code at the end calls into m1..m6.
  while (modules.length < 6 || fixed + linesOf(modules) < target) modules.push(moduleOf(modules.length + 1));
  return modules;
}

// The request code at the end of both scripts, for the line count.
const TAIL_LINES = 20;

/** A Lua application script of about `target` lines (feature modules of ~180 lines each). */
export function bigLuaScript(target = 2000): string {
  const out: string[] = [
    '-- Generated by bench/lib/big-script.ts: an application-sized script for the engine benchmark.',
    'local format, concat, sort, insert = string.format, table.concat, table.sort, table.insert',
    'local floor, max, min = math.floor, math.max, math.min',
    '',
    'local util = {}',
    'function util.clamp(x, lo, hi) return max(lo, min(hi, x)) end',
    'function util.round(x) return floor(x + 0.5) end',
    'function util.split(s, sep)',
    '  local parts = {}',
    '  for piece in (s .. sep):gmatch("(.-)" .. sep) do parts[#parts + 1] = piece end',
    '  return parts',
    'end',
    '',
  ];
  const mods = modulesFor(target, linesOf(out) + TAIL_LINES, luaModule);
  const modules = mods.length;
  out.push(...mods);
  out.push(
    '-- routing and the request itself',
    'local routes = {}',
    `for k, mod in ipairs({ ${Array.from({ length: modules }, (_, i) => `m${i + 1}`).join(', ')} }) do`,
    '  routes["/feature/" .. k] = mod',
    'end',
    'local items = {',
    '  { id = 1, name = "a", score = 5 }, { id = 2, name = "b", score = 1 },',
    '  { id = 3, name = "c", score = 9 }, { id = 4, name = "d", score = 3 },',
    '}',
    'local rows = m1.select_1(items, 3)',
    'local _, words = m2.count_1("the quick brown fox jumps over")',
    'local queue = m3.Queue3_1.new("jobs")',
    'queue:push(rows[1]); queue:push(rows[2])',
    'local fields = m4.merge_1(m4.defaults_1, { q = request.query.x })',
    'local _ = m5.render_1(fields) .. m6.escape_1("<b>")',
    'local route = routes["/feature/" .. util.clamp(2, 1, 3)] and "/x" or "/none"',
    `print(format("ok rows=%d words=%d queue=%d route=%s", #rows, words, queue.size, route))`,
    '',
  );
  return out.join('\n');
}

const jsModule = (k: number): string => {
  const m = `m${k}`;
  const lines: string[] = [`// module ${k}: helpers of feature ${k}`, `const ${m} = {};`, ''];
  for (let j = 1; j <= 2; j++) {
    const cls = `Queue${k}_${j}`;
    lines.push(
      `${m}.defaults${j} = {`,
      `  name: 'feature ${k}.${j}',`,
      `  retries: ${j + (k % 3)},`,
      `  timeoutMs: ${(k * 37 + j * 11) % 900 + 100},`,
      `  tags: ['edge', 'f${k}', 'v${j}'],`,
      `  limits: { min: ${j}, max: ${k + j * 10} },`,
      `};`,
      '',
      `${m}.select${j} = function (items, limit = ${5 + j}) {`,
      `  const out = [];`,
      `  for (const item of items) {`,
      `    if (item.score !== undefined && item.score > ${j}) {`,
      `      out.push({ id: item.id, name: item.name, score: item.score * ${k % 5 + 1} });`,
      `      if (out.length >= limit) break;`,
      `    }`,
      `  }`,
      `  return out;`,
      `};`,
      '',
      `${m}.render${j} = function (fields) {`,
      `  const keys = Object.keys(fields).sort();`,
      `  const parts = [];`,
      `  for (const key of keys) {`,
      `    parts.push(\`\${key}=\${String(fields[key])}\`);`,
      `  }`,
      `  return parts.join('&');`,
      `};`,
      '',
      `${m}.count${j} = function (text) {`,
      `  const counts = Object.create(null);`,
      `  let total = 0;`,
      `  for (const match of text.matchAll(/[a-z]+/gi)) {`,
      `    const word = match[0].toLowerCase();`,
      `    counts[word] = (counts[word] ?? 0) + 1;`,
      `    total++;`,
      `  }`,
      `  return [counts, total];`,
      `};`,
      '',
      `${m}.escape${j} = function (s) {`,
      `  return String(s).replace(/[<>&"]/g, (c) => {`,
      `    if (c === '<') return '&lt;';`,
      `    if (c === '>') return '&gt;';`,
      `    if (c === '&') return '&amp;';`,
      `    return '&quot;';`,
      `  });`,
      `};`,
      '',
      `${m}.merge${j} = function merge(a, b) {`,
      `  const out = { ...a };`,
      `  for (const [key, value] of Object.entries(b)) {`,
      `    if (value && typeof value === 'object' && out[key] && typeof out[key] === 'object') {`,
      `      out[key] = merge(out[key], value);`,
      `    } else {`,
      `      out[key] = value;`,
      `    }`,
      `  }`,
      `  return out;`,
      `};`,
      '',
      `class ${cls} {`,
      `  constructor(name, capacity = ${j * 8}) {`,
      `    this.name = name;`,
      `    this.items = [];`,
      `    this.capacity = capacity;`,
      `  }`,
      `  get size() {`,
      `    return this.items.length;`,
      `  }`,
      `  push(value) {`,
      `    if (this.items.length >= this.capacity) return false;`,
      `    this.items.push(value);`,
      `    return true;`,
      `  }`,
      `  pop() {`,
      `    return this.items.pop();`,
      `  }`,
      `  each(fn) {`,
      `    this.items.forEach(fn);`,
      `  }`,
      `}`,
      `${m}.${cls} = ${cls};`,
      '',
    );
  }
  return lines.join('\n');
};

/** A JavaScript application script of about `target` lines, the same program as {@link bigLuaScript}. */
export function bigJsScript(target = 2000): string {
  const out: string[] = [
    '// Generated by bench/lib/big-script.ts: an application-sized script for the engine benchmark.',
    'const util = {',
    '  clamp: (x, lo, hi) => Math.max(lo, Math.min(hi, x)),',
    '  round: (x) => Math.round(x),',
    "  split: (s, sep) => s.split(sep),",
    '};',
    '',
  ];
  const mods = modulesFor(target, linesOf(out) + TAIL_LINES, jsModule);
  const modules = mods.length;
  out.push(...mods);
  out.push(
    '// routing and the request itself',
    'const routes = {};',
    `[${Array.from({ length: modules }, (_, i) => `m${i + 1}`).join(', ')}].forEach((mod, i) => {`,
    "  routes['/feature/' + (i + 1)] = mod;",
    '});',
    'const items = [',
    "  { id: 1, name: 'a', score: 5 }, { id: 2, name: 'b', score: 1 },",
    "  { id: 3, name: 'c', score: 9 }, { id: 4, name: 'd', score: 3 },",
    '];',
    'const rows = m1.select1(items, 3);',
    "const [, words] = m2.count1('the quick brown fox jumps over');",
    "const queue = new m3.Queue3_1('jobs');",
    'queue.push(rows[0]);',
    'queue.push(rows[1]);',
    'const fields = m4.merge1(m4.defaults1, { q: request.query.x });',
    "void (m5.render1(fields) + m6.escape1('<b>'));",
    "const route = routes['/feature/' + util.clamp(2, 1, 3)] ? '/x' : '/none';",
    'print(`ok rows=${rows.length} words=${words} queue=${queue.size} route=${route}`);',
    '',
  );
  return out.join('\n');
}
