/**
 * confine() against real directories: `..` traversal, absolute and sibling-prefix paths outside
 * the roots, NUL bytes, symlinks pointing in (followed) and out (refused), missing files and
 * directories, relative paths, the root itself, and names with spaces, '%', ',', '?', '#' and
 * non-ASCII characters.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { confine, type Confined } from '../../runtime/files/confine.js';
import { tempDir } from '../helpers/lodestone.js';

const ODD = 'a b%20c,d?e#f é 😀.txt';

interface Tree {
  /** The temp dir holding everything (real path). */
  top: string;
  /** The one file root: top/files. */
  root: string;
  /** top/files2, a sibling whose name starts with the root's. */
  sibling: string;
  /** top/outside, with secret.txt. */
  outside: string;
}

/**
 * top/files/{a.txt, sub/ODD, link-in -> sub/ODD, link-out -> outside/secret.txt,
 * dir-out -> outside, dir-in -> sub, loop-a <-> loop-b}, top/files2/x.txt, top/outside/secret.txt.
 */
async function tree(t: TestContext): Promise<Tree> {
  const top = await fs.realpath(tempDir(t));
  const root = path.join(top, 'files');
  const sibling = path.join(top, 'files2');
  const outside = path.join(top, 'outside');
  await fs.mkdir(path.join(root, 'sub'), { recursive: true });
  await fs.mkdir(sibling);
  await fs.mkdir(outside);
  await fs.writeFile(path.join(root, 'a.txt'), 'a');
  await fs.writeFile(path.join(root, 'sub', ODD), 'odd');
  await fs.writeFile(path.join(sibling, 'x.txt'), 'x');
  await fs.writeFile(path.join(outside, 'secret.txt'), 'secret');
  await fs.symlink(path.join(root, 'sub', ODD), path.join(root, 'link-in'));
  await fs.symlink(path.join(outside, 'secret.txt'), path.join(root, 'link-out'));
  await fs.symlink(outside, path.join(root, 'dir-out'));
  await fs.symlink('sub', path.join(root, 'dir-in'));
  await fs.symlink('loop-b', path.join(root, 'loop-a'));
  await fs.symlink('loop-a', path.join(root, 'loop-b'));
  return { top, root, sibling, outside };
}

function assertRefused(got: Confined, why: string): void {
  assert.equal(got.kind, 'refused', `${why}: ${JSON.stringify(got)}`);
}

test('a file inside the root is ok, with its real path', async (t) => {
  const { root } = await tree(t);
  assert.deepEqual(await confine(path.join(root, 'a.txt'), [root], root), { kind: 'ok', path: path.join(root, 'a.txt') });
  const odd = path.join(root, 'sub', ODD);
  assert.deepEqual(await confine(odd, [root], root), { kind: 'ok', path: odd });
});

test('a relative path resolves against the base', async (t) => {
  const { root, top } = await tree(t);
  assert.deepEqual(await confine('a.txt', [root], root), { kind: 'ok', path: path.join(root, 'a.txt') });
  assert.deepEqual(await confine(`sub/${ODD}`, [root], root), { kind: 'ok', path: path.join(root, 'sub', ODD) });
  assert.deepEqual(await confine('./sub/../a.txt', [root], root), { kind: 'ok', path: path.join(root, 'a.txt') });
  // The base decides where a relative path starts, not the current directory.
  assert.deepEqual(await confine('files/a.txt', [root], top), { kind: 'ok', path: path.join(root, 'a.txt') });
});

test('../ traversal out of the root is refused, even when the target exists', async (t) => {
  const { root, outside } = await tree(t);
  assertRefused(await confine('../outside/secret.txt', [root], root), 'relative ..');
  assertRefused(await confine('sub/../../outside/secret.txt', [root], root), 'nested ..');
  assertRefused(await confine(`${root}/../outside/secret.txt`, [root], root), 'absolute ..');
  assertRefused(await confine('../../../../../../../../etc/passwd', [root], root), 'many ..');
  assertRefused(await confine('..', [root], root), 'parent of the root');
  await fs.access(path.join(outside, 'secret.txt'));
});

test('an absolute path outside the roots is refused', async (t) => {
  const { root, outside } = await tree(t);
  assertRefused(await confine(path.join(outside, 'secret.txt'), [root], root), 'outside');
  assertRefused(await confine('/etc/passwd', [root], root), '/etc/passwd');
  assertRefused(await confine('/', [root], root), '/');
});

test('a sibling directory whose name starts with the root is outside it', async (t) => {
  const { root, sibling } = await tree(t);
  assertRefused(await confine(path.join(sibling, 'x.txt'), [root], root), 'files2/x.txt');
  assertRefused(await confine(sibling, [root], root), 'files2');
  assertRefused(await confine('../files2/x.txt', [root], root), 'relative files2');
  // With both roots configured it is fine.
  assert.equal((await confine(path.join(sibling, 'x.txt'), [root, sibling], root)).kind, 'ok');
});

test('empty input and NUL bytes are refused before touching the disk', async (t) => {
  const { root } = await tree(t);
  assertRefused(await confine('', [root], root), 'empty');
  assertRefused(await confine(`${root}/a.txt\0.jpg`, [root], root), 'NUL in the middle');
  assertRefused(await confine('a.txt\0', [root], root), 'NUL at the end');
  assertRefused(await confine('\0', [root], root), 'only NUL');
});

test('a symlink pointing out of the root is refused; one pointing in is followed', async (t) => {
  const { root } = await tree(t);
  assertRefused(await confine(path.join(root, 'link-out'), [root], root), 'file link out');
  assertRefused(await confine('dir-out/secret.txt', [root], root), 'directory link out');
  assertRefused(await confine('dir-out', [root], root), 'the directory link itself');
  assert.deepEqual(await confine('link-in', [root], root), { kind: 'ok', path: path.join(root, 'sub', ODD) });
  assert.deepEqual(await confine(`dir-in/${ODD}`, [root], root), { kind: 'ok', path: path.join(root, 'sub', ODD) });
});

test('a root reached through a symlink elsewhere still confines to the real root', async (t) => {
  const { root, top } = await tree(t);
  const alias = path.join(top, 'alias');
  await fs.symlink(root, alias);
  // The lexical check runs on the path as given: the alias is not a configured root.
  assertRefused(await confine(path.join(alias, 'a.txt'), [root], root), 'through an alias');
  assert.deepEqual(await confine(path.join(alias, 'a.txt'), [root, alias], root), { kind: 'ok', path: path.join(root, 'a.txt') });
});

test('a missing file, or one under a missing directory or a file, is missing', async (t) => {
  const { root } = await tree(t);
  assert.deepEqual(await confine('nope.txt', [root], root), { kind: 'missing', path: path.join(root, 'nope.txt') });
  assert.deepEqual(await confine('no/such/dir/x.txt', [root], root), { kind: 'missing', path: path.join(root, 'no/such/dir/x.txt') });
  assert.deepEqual(await confine('a.txt/x', [root], root), { kind: 'missing', path: path.join(root, 'a.txt/x') });
  assert.deepEqual(await confine(`sub/${ODD}.gone`, [root], root), { kind: 'missing', path: path.join(root, 'sub', `${ODD}.gone`) });
});

test('a missing file behind a symlink that points out is refused, not missing', async (t) => {
  const { root } = await tree(t);
  // Else missing (stat: nil) versus refused (403) would tell whether a file exists outside.
  assertRefused(await confine('dir-out/nope.txt', [root], root), 'missing behind dir-out');
  assertRefused(await confine('dir-out/no/such/x.txt', [root], root), 'deep behind dir-out');
  assert.equal((await confine('dir-in/nope.txt', [root], root)).kind, 'missing');
});

test('the root itself is inside, with or without a trailing slash', async (t) => {
  const { root } = await tree(t);
  assert.deepEqual(await confine(root, [root], root), { kind: 'ok', path: root });
  assert.deepEqual(await confine(`${root}/`, [root], root), { kind: 'ok', path: root });
  assert.deepEqual(await confine('.', [root], root), { kind: 'ok', path: root });
  assert.deepEqual(await confine('sub/..', [root], root), { kind: 'ok', path: root });
});

test('any root of several will do; "/" as a root contains everything', async (t) => {
  const { root, sibling, outside } = await tree(t);
  const roots = [root, outside];
  assert.equal((await confine(path.join(outside, 'secret.txt'), roots, root)).kind, 'ok');
  assert.equal((await confine('link-out', roots, root)).kind, 'ok');
  assertRefused(await confine(path.join(sibling, 'x.txt'), roots, root), 'sibling');
  assert.deepEqual(await confine(path.join(sibling, 'x.txt'), ['/'], '/'), { kind: 'ok', path: path.join(sibling, 'x.txt') });
});

test('a symlink loop is refused, not reported missing', async (t) => {
  const { root } = await tree(t);
  const got = await confine('loop-a', [root], root);
  assertRefused(got, 'loop');
  assert.match(got.kind === 'refused' ? got.reason : '', /ELOOP/);
});

test('a relative path with no absolute base is refused', async () => {
  assertRefused(await confine('a.txt', ['/srv/files'], 'relative/base'), 'relative base');
});
