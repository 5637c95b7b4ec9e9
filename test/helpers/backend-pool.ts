/** A BackendPool for tests, logging into an array, closed when the test ends. */
import type { TestContext } from 'node:test';
import { BackendPool, defaultPoolOptions, type PoolOptions } from '../../runtime/fastcgi/client/pool.js';
import { Logger } from '../../runtime/log.js';

export interface PoolSetup {
  pool: BackendPool;
  logs: string[];
  /** The log lines carrying `code`. */
  readonly logged: (code: string) => string[];
}

/** A pool named `name` over `servers`, closed (with `graceMs`) in `t.after`. */
export function makePool(t: TestContext, name: string, servers: string[], opts: Partial<PoolOptions> = {}, graceMs = 1000): PoolSetup {
  const logs: string[] = [];
  const pool = new BackendPool({ ...defaultPoolOptions, name, servers, ...opts }, new Logger('debug', (line) => logs.push(line)));
  t.after(() => pool.close(graceMs));
  return { pool, logs, logged: (code) => logs.filter((l) => l.includes(` ${code} `)) };
}
