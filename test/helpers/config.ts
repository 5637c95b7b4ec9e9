/** Shared by the config tests: the message of the LS_CONFIG_INVALID error `fn` must throw. */
import assert from 'node:assert/strict';
import { LodestoneError } from '../../runtime/errors.js';

export function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof LodestoneError, String(err));
    assert.equal(err.code, 'LS_CONFIG_INVALID');
    return err.message;
  }
  assert.fail('expected a config error');
}
