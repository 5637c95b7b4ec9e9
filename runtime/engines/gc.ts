/**
 * A forced full garbage collection, for the two engines' rare moments that need one: the Lua
 * memory guard confirming an apparent overrun (garbage not yet collected would fail runs that
 * keep little), and the JS engine freeing a replaced wasm module (V8 does not count wasm memory
 * as pressure on its heap, so a dropped module stayed resident until some unrelated collection).
 *
 * Node exposes gc() only with --expose-gc; the flag can be set at run time and is then read from
 * a fresh vm context's global.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

// Undefined: not looked up yet; null: not available.
let gc: (() => void) | null | undefined;

/** Runs a full collection; false when this Node offers no way to (then nothing happened). */
export function forceGc(): boolean {
  if (gc === undefined) {
    const exposed = (globalThis as { gc?: () => void }).gc;
    if (typeof exposed === 'function') gc = exposed;
    else {
      try {
        v8.setFlagsFromString('--expose-gc');
        gc = vm.runInNewContext('gc') as () => void;
      } catch {
        gc = null;
      }
    }
  }
  if (!gc) return false;
  gc();
  return true;
}
