/** One version everywhere: the CLI and the development server report package.json's. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { version } from '../../runtime/version.js';
import { cliPath, run } from '../helpers/lodestone.js';
import { repoRoot } from '../shared/repo.js';

const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string };

test('version() is package.json version, and lodestone --version prints it', () => {
  assert.match(pkg.version, /^\d+\.\d+\.\d+/);
  assert.equal(version(), pkg.version);
  const r = run(process.execPath, [cliPath, '--version']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.toString(), `lodestone ${pkg.version}\n`);
});
