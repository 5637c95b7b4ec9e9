/**
 * The render scenario's pure parts: the page every peer must send, the check that compares it
 * byte for byte, the peers' scripts doing the same steps, and the nginx Lua site.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { firstDifference } from '../lib/harness.js';
import { nginxConfig } from '../lib/nginx.js';
import { installHint, missingOf, nginxLuaModules, type Programs } from '../lib/prereq.js';
import { computeOutput, peerScript, renderPage, RENDER_ROWS } from '../lib/render.js';

test('the render page: 200 rows, names escaped, prices with two decimals, print\'s newline', () => {
  const page = renderPage();
  assert.equal(Buffer.byteLength(page), 12_313);
  assert.ok(page.startsWith('<table><tr><td>1</td><td>item 1 &amp; co</td><td>1.25</td></tr>\n<tr><td>2</td>'));
  assert.ok(page.endsWith('<tr><td>200</td><td>item 200 &amp; co</td><td>250.00</td></tr></table>\n'));
  assert.equal(page.split('\n').length, RENDER_ROWS + 1);
  assert.ok(!/&(?!amp;)/.test(page), 'every & escaped');
});

test('every peer script formats the row the same way and escapes from a table', () => {
  const row = '<tr><td>%d</td><td>%s</td><td>%.2f</td></tr>';
  for (const lua of ['render.lua', 'render-magnet.lua', 'render-nginx-lua.lua']) {
    const src = peerScript(lua);
    assert.ok(src.includes(`string.format("${row}"`), lua);
    assert.ok(src.includes(':gsub("[&<>\\"\']", escapes)'), lua);
    assert.ok(src.includes('table.concat(rows, "\\n")'), lua);
  }
  assert.ok(peerScript('render.php').includes(`sprintf('${row}'`));
  assert.ok(peerScript('render.php').includes('strtr('));
  assert.ok(peerScript('render.js').includes(".replace(/[&<>\"']/g, (c) => escapes[c])"));
});

test('the compute loop prints the same digits as Lua integer arithmetic would', () => {
  // (x * 31 + i) % 1000003 stays below 2^31: doubles are exact, so this is Lua's answer too.
  let x = 0;
  for (let i = 1; i <= 20_000; i++) x = Number((BigInt(x) * 31n + BigInt(i)) % 1000003n);
  assert.equal(computeOutput(), `${x}\n`);
});

test('firstDifference: -1 when equal, else the first differing offset (or the shorter length)', () => {
  const a = Buffer.from('<table>abc</table>\n');
  assert.equal(firstDifference(a, Buffer.from(a)), -1);
  assert.equal(firstDifference(a, Buffer.from('<table>abd</table>\n')), 9);
  assert.equal(firstDifference(a, a.subarray(0, 5)), 5);
  assert.equal(firstDifference(Buffer.alloc(0), a), 0);
});

test('nginx config: a Lua site runs its file in-core, and the modules load first', () => {
  const mods = ['/m/ndk_http_module.so', '/m/ngx_http_lua_module.so'];
  const conf = nginxConfig('/tmp/x', [{ listen: 8001, backend: null, keepalive: null, name: 'lua', luaFile: '/b/render-nginx-lua.lua' }], false, mods);
  assert.ok(conf.includes('load_module /m/ndk_http_module.so;\nload_module /m/ngx_http_lua_module.so;\ndaemon off;'));
  assert.match(conf, /location \/ \{\n\s+content_by_lua_file \/b\/render-nginx-lua\.lua;\n\s+\}/);
  assert.ok(!conf.includes('upstream lua') && !conf.includes('return 200'));
  assert.ok(!nginxConfig('/tmp/x', [], false).includes('load_module'));
});

test('the nginx Lua module is found where Debian puts it, or named by its package', () => {
  const mods = nginxLuaModules();
  const programs = { nginx: '/usr/sbin/nginx' } as Programs;
  const missing = missingOf(['nginx-lua'], programs, '/nonexistent');
  assert.equal(missing.length === 0, mods !== null);
  if (mods !== null) assert.ok(mods[0]!.endsWith('ndk_http_module.so') && mods[1]!.endsWith('ngx_http_lua_module.so'));
  assert.equal(installHint([{ what: 'nginx-lua', pkg: 'libnginx-mod-http-lua' }]), 'apt-get install -y libnginx-mod-http-lua');
});
