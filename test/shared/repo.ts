/**
 * The repository root, for the tests and the benchmark alike (this file runs from
 * dist/test/shared). test/shared/ holds what both use; it imports nothing from test/helpers/ or
 * bench/, and no package but Node's own, so the benchmark (its own npm package) can import it.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
