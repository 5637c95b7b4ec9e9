/** Every stable code is documented in the README, and the README lists no code we lack. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { codes, httpStatus } from '../../runtime/errors.js';
import { repoRoot } from '../shared/repo.js';

test('the README documents every error code, and only real ones', () => {
  const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
  for (const code of Object.keys(codes)) {
    assert.match(readme, new RegExp(`^\\| \`${code}\` \\|`, 'm'), `${code} is missing from README's code table`);
  }
  const documented = [...readme.matchAll(/^\| `(LS_[A-Z_]+)` \|/gm)].map((m) => m[1]!);
  for (const code of documented) assert.ok(code in codes, `README documents unknown code ${code}`);
});

test("the README's row of a code Lodestone answers with names its HTTP status", () => {
  const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
  for (const [code, status] of Object.entries(httpStatus)) {
    const row = new RegExp(`^\\| \`${code}\` \\|.*\\b${status}\\b`, 'm');
    assert.match(readme, row, `README's row of ${code} does not name ${status}`);
    assert.match(codes[code as keyof typeof codes], new RegExp(`\\b${status}\\b`), `the meaning of ${code} does not name ${status}`);
  }
});

test('codes are used in the source', () => {
  const sources = ['runtime']
    .flatMap((dir) =>
      fs
        .readdirSync(path.join(repoRoot, dir), { recursive: true, encoding: 'utf8' })
        .filter((f) => f.endsWith('.ts') && f !== 'errors.ts')
        .map((f) => fs.readFileSync(path.join(repoRoot, dir, f), 'utf8')),
    )
    .join('\n');
  for (const code of Object.keys(codes)) assert.ok(sources.includes(`'${code}'`), `${code} is never raised`);
});
