/**
 * The sleep() binding, over the host's run core (host/core.ts). A file of its own because it
 * belongs to no other capability: it only waits, and the waiting itself is lua/control.ts's.
 */
import { lauxlib, type LuaJsFunction } from 'fengari';
import { runOf } from '../core.js';
import { checkCanWait, hostWait } from '../control.js';

/** sleep(ms): yields to the driver until the host's timer fires. */
export const sleep: LuaJsFunction = (L) => {
  const ms = lauxlib.luaL_checknumber(L, 1);
  const run = runOf(L);
  checkCanWait(L, 'sleep()');
  return hostWait(L, run, run.host.sleep(ms), null);
};
