/**
 * The Lua 5.4 engine (README, "Lua engines") behind real web servers: lighttpd spawning nothing,
 * Lodestone on a TCP port with `luaEngine = "lua54"` and a front controller, so every request
 * runs one script: the version, a mod_magnet script unchanged, bytecode from the cache dir after
 * a restart. (scripts.test.ts runs the shipped examples through nginx on both engines;
 * sandbox-limits.test.ts the attacks; watchdog.test.ts the pattern no hook stops.)
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { startLodestone, tempDir } from '../helpers/lodestone.js';
import { havePrograms, httpRequest, startLighttpd } from '../helpers/peers.js';

const timeout = 60_000;

const FRONT = `-- a mod_magnet-style script
if lighty.r.req_attr["uri.path"] == "/app/private" then
  lighty.r.resp_header["Content-Type"] = "text/plain"
  lighty.r.resp_body.set({ "no entry\\n" })
  return 403
end
local n <const> = 3 // 2
print(_VERSION, math.type(n), os.date("!%Y", 0), request.query.q or "-")
`;

test('lua54 behind lighttpd: Lua 5.4, a mod_magnet script, bytecode reused after a restart', { timeout }, async (t) => {
  if (!havePrograms(t, 'lighttpd')) return;
  const dir = tempDir(t);
  const cacheDir = path.join(dir, 'cache');
  fs.mkdirSync(cacheDir);
  const front = path.join(dir, 'front.lua');
  fs.writeFileSync(front, FRONT);
  const config = { luaEngine: 'lua54', script: front, cacheDir };
  for (const round of [1, 2]) {
    const ls = await startLodestone(t, { diagnostic: false, args: ['--root', dir, '--workers', '0'], config });
    const lighttpd = await startLighttpd(t, { backend: { host: '127.0.0.1', port: ls.port } });
    const page = await httpRequest(lighttpd.url('/app/page?q=x'));
    assert.equal(page.status, 200, page.body.toString());
    assert.equal(page.body.toString(), 'Lua 5.4\tinteger\t1970\tx\n');
    const denied = await httpRequest(lighttpd.url('/app/private'));
    assert.equal(denied.status, 403);
    assert.equal(denied.body.toString(), 'no entry\n');
    assert.equal(denied.headers['content-type'], 'text/plain');
    const cached = fs.readdirSync(cacheDir, { recursive: true, encoding: 'utf8' }).filter((f) => !fs.statSync(path.join(cacheDir, f)).isDirectory());
    assert.equal(cached.length, 1, `one bytecode file in the cache dir after round ${round}: ${cached.join(', ')}`);
    await ls.stop();
    await lighttpd.stop();
  }
});
