/**
 * README's config reference stays the schema's: every field has its row, with the default and
 * the meaning the schema declares, and the table has no row for a field that does not exist.
 * The rows are written by hand (README is edited as prose); a failure prints the row expected.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { configFields } from '../../runtime/cli/config.js';
import { rows } from '../../runtime/config-schema.js';
import { repoRoot } from '../shared/repo.js';

function readmeRows(): Map<string, string> {
  const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
  const section = /^## Configuration\n([\s\S]*?)^## /m.exec(readme)?.[1] ?? '';
  const table = section.split('\n').filter((l) => /^\| `[A-Za-z]/.test(l));
  return new Map(table.map((line) => [/^\| `([^`]+)`/.exec(line)![1]!, line]));
}

const expected = [...rows(configFields)].map((r) => ({ name: r.name, line: `| \`${r.name}\` | ${r.shown} | ${r.doc} |` }));

test('the schema declares a default and a meaning for every field', () => {
  assert.ok(expected.length >= 60, `fields found: ${expected.length}`);
  for (const { name, line } of expected) assert.doesNotMatch(line, /\| {2}\|/, `${name} lacks its doc or default`);
});

test("every field has its row in README's config table, as the schema says", () => {
  const readme = readmeRows();
  const missing = expected.filter((r) => !readme.has(r.name)).map((r) => r.line);
  assert.deepEqual(missing, [], 'fields without a row; add these');
  const differ = expected.filter((r) => readme.has(r.name) && readme.get(r.name) !== r.line).map((r) => `README: ${readme.get(r.name)}\nschema: ${r.line}`);
  assert.deepEqual(differ, [], 'rows that differ from the schema (its doc and default are the source)');
});

test("README's config table has no row for a field that does not exist", () => {
  const known = new Set(expected.map((r) => r.name));
  assert.deepEqual([...readmeRows().keys()].filter((name) => !known.has(name)), []);
});
