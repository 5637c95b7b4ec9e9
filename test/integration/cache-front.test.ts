/**
 * scripts/cache-front.lua and .js end to end: real nginx -> the real `lodestone` CLI running the
 * front script for every request -> a real php-fpm pool over FastCGI, with the embedded cache
 * and with a real Redis shared by two Lodestone processes. Hits, misses, bypasses, expiry,
 * HEAD, streaming pass-through, backend down (502), Redis down (still served).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { startLodestone, tempDir, type Lodestone } from '../helpers/lodestone.js';
import { repoRoot } from '../shared/repo.js';
import { havePrograms, httpRequest, startNginx, type WebServer } from '../helpers/peers.js';
import { requirePhpFpm, startPhpFpm, type PhpFpm } from '../helpers/php-fpm.js';
import { startRedis } from '../helpers/redis.js';

const timeout = 120_000;
const scriptsDir = path.join(repoRoot, 'scripts');

const PHP = {
  'page.php': `<?php header('Cache-Control: public, max-age=60'); echo 'page ', uniqid('', true), ' ', $_SERVER['REQUEST_METHOD'], ' ', $_SERVER['SCRIPT_NAME'];`,
  'short.php': `<?php header('Cache-Control: max-age=1'); echo uniqid('', true);`,
  'cookie.php': `<?php setcookie('flavour', 'oat'); header('Cache-Control: max-age=60'); echo uniqid('', true);`,
  'private.php': `<?php header('Cache-Control: private, max-age=60'); echo uniqid('', true);`,
  'accel.php': `<?php header('X-Accel-Expires: 60'); echo uniqid('', true);`,
  'post.php': `<?php echo 'got ', $_SERVER['REQUEST_METHOD'], ' ', file_get_contents('php://input');`,
  'large.php': `<?php header('Cache-Control: max-age=60'); header('Content-Type: text/plain'); echo uniqid('', true), "\\n", str_repeat("0123456789abcdef\\n", 100000);`,
  'big.php': `<?php header('Content-Type: application/octet-stream'); for ($i = 0; $i < 48; $i++) echo str_repeat(chr(65 + $i % 26), 65536);`,
};

async function stack(
  t: TestContext,
  ext: 'lua' | 'js',
  php: PhpFpm,
  opts: { args?: string[]; servers?: string[] } = {},
): Promise<{ lodestone: Lodestone; nginx: WebServer }> {
  const lodestone = await startLodestone(t, {
    diagnostic: false,
    args: ['--root', scriptsDir, '--script', path.join(scriptsDir, `cache-front.${ext}`), ...(opts.args ?? [])],
    config: { backends: { php: { servers: opts.servers ?? [php.address], maxConnections: 2 } } },
  });
  const nginx = await startNginx(t, { fastcgiPass: `127.0.0.1:${lodestone.port}`, keepalive: 4, scriptRoot: php.docRoot });
  return { lodestone, nginx };
}

for (const ext of ['lua', 'js'] as const) {
  test(`cache-front.${ext}: hit, miss, bypass, expiry, HEAD and streaming through nginx and php-fpm`, { timeout }, async (t) => {
    if (!havePrograms(t, 'nginx') || !requirePhpFpm(t)) return;
    const php = await startPhpFpm(t, { maxChildren: 4, scripts: PHP });
    const { nginx, lodestone } = await stack(t, ext, php);

    const miss = await httpRequest(nginx.url('/page.php'));
    assert.equal(miss.status, 200, miss.body.toString());
    assert.equal(miss.headers['x-cache'], 'MISS');
    assert.match(miss.body.toString(), /^page \S+ GET \/page\.php$/, 'PHP ran its own file from the forwarded params');
    const hit = await httpRequest(nginx.url('/page.php'));
    assert.equal(hit.headers['x-cache'], 'HIT');
    assert.equal(hit.body.toString(), miss.body.toString());
    assert.equal(hit.headers['cache-control'], 'public, max-age=60', "the backend's headers are kept");
    assert.match(String(hit.headers.age), /^\d+$/);
    const otherQuery = await httpRequest(nginx.url('/page.php?v=2'));
    assert.equal(otherQuery.headers['x-cache'], 'MISS', 'the key includes the query');

    const session = await httpRequest(nginx.url('/page.php'), { headers: { Cookie: 'PHPSESSID=abc' } });
    assert.equal(session.headers['x-cache'], 'BYPASS');
    assert.notEqual(session.body.toString(), miss.body.toString());

    const posted = await httpRequest(nginx.url('/post.php'), { method: 'POST', body: 'hello php' });
    assert.equal(posted.headers['x-cache'], 'BYPASS');
    assert.equal(posted.body.toString(), 'got POST hello php');

    for (const page of ['/cookie.php', '/private.php']) {
      const a = await httpRequest(nginx.url(page));
      const b = await httpRequest(nginx.url(page));
      assert.deepEqual([a.headers['x-cache'], b.headers['x-cache']], ['MISS', 'MISS'], `${page} is not cacheable`);
      assert.notEqual(a.body.toString(), b.body.toString());
    }
    const cookie = await httpRequest(nginx.url('/cookie.php'));
    assert.match(String(cookie.headers['set-cookie']), /flavour=oat/);
    const accel = [await httpRequest(nginx.url('/accel.php')), await httpRequest(nginx.url('/accel.php'))];
    assert.deepEqual(
      accel.map((r) => r.headers['x-cache']),
      ['MISS', 'HIT'],
      'X-Accel-Expires gives a TTL',
    );

    const short = await httpRequest(nginx.url('/short.php'));
    assert.equal((await httpRequest(nginx.url('/short.php'))).body.toString(), short.body.toString());
    await new Promise((resolve) => setTimeout(resolve, 1300));
    const expired = await httpRequest(nginx.url('/short.php'));
    assert.equal(expired.headers['x-cache'], 'MISS', 'expired after its max-age');
    assert.notEqual(expired.body.toString(), short.body.toString());

    const head = await httpRequest(nginx.url('/page.php?head=1'), { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['x-cache'], 'MISS');
    const afterHead = await httpRequest(nginx.url('/page.php?head=1'));
    assert.equal(afterHead.headers['x-cache'], 'MISS', 'a HEAD response (no body) is not cached');
    assert.match(afterHead.body.toString(), /^page \S+ GET/);

    // POST goes through pass(..., emit): streamed, 3 MiB, every byte in order.
    const big = await httpRequest(nginx.url('/big.php'), { method: 'POST', body: 'x' });
    assert.equal(big.status, 200);
    assert.equal(big.headers['content-type'], 'application/octet-stream');
    assert.equal(big.body.length, 48 * 65536);
    for (let i = 0; i < 48; i++) assert.equal(big.body[i * 65536 + 100], 65 + (i % 26), `chunk ${i}`);

    assert.doesNotMatch(lodestone.log(), /LS_SCRIPT_ERROR|LS_BACKEND/);
  });
}

test('failover between two php-fpm pools when one stops; both down: 502 with a log line', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx') || !requirePhpFpm(t)) return;
  const pid = { 'pid.php': `<?php echo getmypid();` };
  const first = await startPhpFpm(t, { maxChildren: 2, scripts: { ...PHP, ...pid } });
  const second = await startPhpFpm(t, { maxChildren: 2, scripts: { ...PHP, ...pid } });
  // Both php-fpm serve the same docroot paths: SCRIPT_FILENAME is the first one's.
  const { nginx, lodestone } = await stack(t, 'lua', first, { servers: [first.address, second.address] });
  const served = new Set<string>();
  for (let i = 0; i < 6; i++) {
    const r = await httpRequest(nginx.url(`/pid.php?i=${i}`));
    assert.equal(r.status, 200);
    served.add(r.body.toString());
  }
  assert.ok(served.size >= 2, 'least-load with round-robin ties spreads over both pools');

  await first.stop();
  for (let i = 0; i < 6; i++) {
    const r = await httpRequest(nginx.url(`/page.php?after-stop=${i}`));
    assert.equal(r.status, 200, `request ${i} after one pool stopped`);
  }
  await lodestone.waitForLog(/LS_BACKEND_DISABLED/);

  await second.stop();
  const down = await httpRequest(nginx.url('/page.php?all-down'));
  assert.equal(down.status, 502);
  assert.doesNotMatch(down.body.toString(), /php|sock/i, 'no backend detail for the client');
  await lodestone.waitForLog(/LS_BACKEND_UNAVAILABLE/);
  await first.start();
  await new Promise((resolve) => setTimeout(resolve, 1100)); // past disableTimeMs
  const back = await httpRequest(nginx.url('/page.php?back'));
  assert.equal(back.status, 200, 'a restarted pool serves again');
});

test('Redis shared by two Lodestone processes; Redis down: requests still served', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx') || !requirePhpFpm(t)) return;
  const php = await startPhpFpm(t, { maxChildren: 4, scripts: PHP });
  const redis = await startRedis(t);
  if (!redis) return;
  const args = ['--cache', `unix:${redis.socket}`];
  const one = await stack(t, 'lua', php, { args });
  const two = await stack(t, 'js', php, { args });

  const filled = await httpRequest(one.nginx.url('/page.php?shared'));
  assert.equal(filled.headers['x-cache'], 'MISS');
  const fromOther = await httpRequest(two.nginx.url('/page.php?shared'));
  assert.equal(fromOther.headers['x-cache'], 'HIT', 'the other process (and engine) sees the cached page');
  assert.equal(fromOther.body.toString(), filled.body.toString());

  await redis.stop();
  for (const stackUp of [one, two]) {
    const r = await httpRequest(stackUp.nginx.url('/page.php?while-down'));
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-cache'], 'MISS');
    await stackUp.lodestone.waitForLog(/LS_CACHE_UNAVAILABLE/);
  }
  assert.doesNotMatch(one.lodestone.log() + two.lodestone.log(), /LS_SCRIPT_ERROR/);
});

test('large bodies are cached as files and sent by nginx (X-Accel-Redirect); a lost file is a miss', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx') || !requirePhpFpm(t)) return;
  const php = await startPhpFpm(t, { maxChildren: 2, scripts: PHP });
  const filesRoot = fs.realpathSync(tempDir(t, 'lodestone-cachefiles-'));
  const fileDir = path.join(filesRoot, 'bodies');
  fs.mkdirSync(fileDir);
  const lodestone = await startLodestone(t, {
    diagnostic: false,
    args: ['--root', scriptsDir, '--script', path.join(scriptsDir, 'cache-front.lua')],
    config: {
      backends: { php: { servers: [php.address] } },
      files: { roots: [filesRoot], accel: { [filesRoot]: '/cached' } },
      cache: { fileDir, fileMinBytes: 100_000 },
    },
  });
  const nginx = await startNginx(t, {
    fastcgiPass: `127.0.0.1:${lodestone.port}`,
    keepalive: 2,
    scriptRoot: php.docRoot,
    server: `location /cached/ { internal; alias ${filesRoot}/; }`,
  });

  const miss = await httpRequest(nginx.url('/large.php'));
  assert.equal(miss.status, 200);
  assert.equal(miss.headers['x-cache'], 'MISS');
  assert.ok(miss.body.length > 1_600_000);
  const stored = fs.readdirSync(fileDir);
  assert.equal(stored.length, 1, 'one body file, no temp files left');
  assert.deepEqual(fs.readFileSync(path.join(fileDir, stored[0]!)), miss.body);

  const hit = await httpRequest(nginx.url('/large.php'));
  assert.equal(hit.status, 200);
  assert.deepEqual(hit.body, miss.body, 'the same page, from the file, not from PHP again');
  assert.equal(hit.headers['content-type'], miss.headers['content-type'], 'the cached Content-Type, kept by nginx');
  assert.equal(hit.headers['cache-control'], 'max-age=60');
  const range = await httpRequest(nginx.url('/large.php'), { headers: { Range: 'bytes=0-9' } });
  assert.equal(range.status, 206, 'nginx serves ranges of the cached file');
  assert.deepEqual(range.body, miss.body.subarray(0, 10));

  fs.rmSync(path.join(fileDir, stored[0]!));
  // Noticed through the stat cache, as sendfile() would: within files.statCacheMs (1 s).
  await new Promise((resolve) => setTimeout(resolve, 1100));
  const lost = await httpRequest(nginx.url('/large.php'));
  assert.equal(lost.headers['x-cache'], 'MISS', 'a cached reference to a missing file is a miss');
  assert.notDeepEqual(lost.body, miss.body, 'PHP rendered it again');
  assert.doesNotMatch(lodestone.log(), /LS_SCRIPT_ERROR|LS_FILE/);
});
