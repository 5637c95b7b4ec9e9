/**
 * README's command line section stays in step with `lodestone --help`: every flag the help
 * lists is in the synopsis and has a row in the option table, and the table lists no flag the
 * CLI does not have.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { cliPath, run } from '../helpers/lodestone.js';
import { repoRoot } from '../shared/repo.js';

const helpFlags = (): string[] => {
  const r = run(process.execPath, [cliPath, '--help']);
  assert.equal(r.status, 0, r.stderr);
  const options = r.stdout.toString().split('\nOptions:\n')[1] ?? '';
  const flags = new Set([...options.matchAll(/^\s+(?:-\w, )?(--[a-z][a-z-]*)/gm)].map((m) => m[1]!));
  return [...flags].filter((f) => f !== '--help' && f !== '--version');
};

function commandLineSection(): { synopsis: string; table: string } {
  const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
  const section = /^## Command line\n([\s\S]*?)^## /m.exec(readme)?.[1] ?? '';
  const synopsis = /```\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
  const table = section.split('\n').filter((l) => l.startsWith('| `--')).join('\n');
  return { synopsis, table };
}

test("every flag of --help is in README's synopsis and option table", () => {
  const flags = helpFlags();
  assert.ok(flags.length >= 15, `flags found in --help: ${flags.join(' ')}`);
  const { synopsis, table } = commandLineSection();
  const missingSynopsis = flags.filter((f) => !new RegExp(`\\[${f}[\\] =]`).test(synopsis));
  const missingTable = flags.filter((f) => !table.includes(`| \`${f}`));
  assert.deepEqual(missingSynopsis, [], `not in the synopsis:\n${synopsis}`);
  assert.deepEqual(missingTable, [], 'no row in the option table');
});

test("README's option table names no flag the CLI lacks", () => {
  const flags = new Set(helpFlags());
  const { table } = commandLineSection();
  const documented = new Set([...table.matchAll(/^\| `(--[a-z][a-z-]*)/gm)].map((m) => m[1]!));
  assert.deepEqual([...documented].filter((f) => !flags.has(f)), []);
});
