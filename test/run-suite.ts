/**
 * `npm test`'s entry: finds the compiled test files and hands them to `node --test` by name.
 *
 * Why not `node --test dist/test/`: Node 20 takes directories there, Node 21 and later take only
 * files and glob patterns ("Cannot find module .../dist/test"), and Node 20 does not expand
 * globs. A list of files means the same thing to every version, so this is the one place that
 * knows the difference.
 *
 * Usage: node dist/test/run-suite.js [DIR_OR_FILE...]   (default: dist/test dist/bench/test)
 * Extra `node --test` flags go in NODE_TEST_FLAGS (e.g. "--test-name-pattern=sandbox").
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Every `*.test.js` under `target` (a file is taken as it is), sorted for a stable order. */
function testFiles(target: string): string[] {
  const stat = fs.statSync(target);
  if (!stat.isDirectory()) return [target];
  const found = fs.readdirSync(target, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.test.js'));
  return found.map((f) => path.join(target, f)).sort();
}

const args = process.argv.slice(2);
const targets = args.length > 0 ? args : [path.join(dist, 'test'), path.join(dist, 'bench', 'test')];
const files = targets.flatMap(testFiles);
if (files.length === 0) {
  console.error(`run-suite: no *.test.js files under ${targets.join(', ')}`);
  process.exit(1);
}
const flags = (process.env.NODE_TEST_FLAGS ?? '').split(/\s+/).filter(Boolean);
const child = spawn(process.execPath, ['--test', '--test-concurrency=2', ...flags, ...files], { stdio: 'inherit' });
// Pass Ctrl-C and CI's SIGTERM on, so no test server outlives the run.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
