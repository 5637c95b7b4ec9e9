/**
 * The script library's examples end to end (issue 21), in both languages: scripts/login.* (a
 * signed HMAC cookie: log in, be greeted, refused with a forged or edited cookie) through real
 * nginx, and scripts/auth-pass.* (fetch an auth service, then pass to PHP) through real nginx,
 * the real `lodestone` CLI, a local Node HTTP auth service and a real php-fpm pool.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import test from 'node:test';
import { startLodestone } from '../helpers/lodestone.js';
import { havePrograms, httpRequest, startNginx } from '../helpers/peers.js';
import { requirePhpFpm, startPhpFpm } from '../helpers/php-fpm.js';
import { repoRoot } from '../shared/repo.js';

const timeout = 90_000;
const scriptsDir = path.join(repoRoot, 'scripts');

/** The cookie a Set-Cookie header sets, as `name=value` for a Cookie header. */
function cookieOf(setCookie: string[] | undefined, name: string): string {
  const line = (setCookie ?? []).find((l) => l.startsWith(`${name}=`));
  assert.ok(line, `a Set-Cookie for ${name}: ${JSON.stringify(setCookie)}`);
  return line.split(';')[0]!;
}

for (const ext of ['lua', 'js'] as const) {
  test(`scripts/login.${ext}: a signed cookie logs in; a forged, edited or missing one is refused`, { timeout }, async (t) => {
    if (!havePrograms(t, 'nginx')) return;
    const lodestone = await startLodestone(t, { diagnostic: false, args: ['--root', scriptsDir] });
    const nginx = await startNginx(t, { fastcgiPass: `127.0.0.1:${lodestone.port}`, keepalive: 4, scriptRoot: scriptsDir });
    const url = nginx.url(`/login.${ext}`);
    const form = { 'Content-Type': 'application/x-www-form-urlencoded' };

    const login = await httpRequest(url, { method: 'POST', headers: form, body: 'user=ada_l' });
    assert.equal(login.status, 200, login.body.toString());
    assert.equal(login.body.toString(), 'logged in as ada_l\n');
    const setCookie = login.headers['set-cookie'];
    assert.match(String(setCookie), /; Max-Age=3600; Path=\/; HttpOnly; SameSite=Lax/);
    const session = cookieOf(setCookie, 'session');
    assert.match(session, /^session=YWRhX2w\.[0-9a-f]{64}$/, 'base64url(user) "." hex HMAC-SHA256');

    const hello = await httpRequest(url, { headers: { Cookie: session } });
    assert.equal(hello.status, 200);
    assert.equal(hello.body.toString(), 'hello ada_l\n');

    // Another user's name with Ada's MAC, a flipped MAC digit, no cookie: all refused.
    const [, value, mac] = /^session=([^.]+)\.(.+)$/.exec(session)!;
    const forged = `session=${Buffer.from('root').toString('base64url')}.${mac}`;
    const flipped = `session=${value}.${mac!.slice(0, -1)}${mac!.endsWith('0') ? '1' : '0'}`;
    for (const cookie of [forged, flipped, 'session=garbage', '']) {
      const refused = await httpRequest(url, { headers: cookie ? { Cookie: cookie } : {} });
      assert.equal(refused.status, 401, `cookie ${JSON.stringify(cookie)}`);
      assert.equal(refused.body.toString(), 'not logged in\n');
    }

    const bad = await httpRequest(url, { method: 'POST', headers: form, body: 'user=no%20spaces' });
    assert.equal(bad.status, 400);
  });

  test(`scripts/auth-pass.${ext}: an auth service answers, then PHP serves with REMOTE_USER; refusals and a dead service fail closed`, { timeout }, async (t) => {
    if (!havePrograms(t, 'nginx') || !requirePhpFpm(t)) return;
    let asked = 0;
    // The auth service: the cookie "token=good" is user ada; anything else 401.
    const auth = http.createServer((req, res) => {
      asked++;
      if (req.url === '/check' && /(^|; )token=good(;|$)/.test(req.headers.cookie ?? '')) {
        res.writeHead(200, { 'X-User': 'ada' }).end('ok');
      } else res.writeHead(401).end('no');
    });
    await new Promise<void>((resolve) => auth.listen(0, '127.0.0.1', resolve));
    let authOpen = true;
    const closeAuth = (): Promise<void> => {
      if (!authOpen) return Promise.resolve();
      authOpen = false;
      auth.closeAllConnections();
      return new Promise((resolve) => auth.close(() => resolve()));
    };
    t.after(closeAuth);
    const origin = `http://127.0.0.1:${(auth.address() as AddressInfo).port}`;

    const php = await startPhpFpm(t, {
      maxChildren: 2,
      scripts: { 'page.php': "<?php echo 'php page for ', $_SERVER['REMOTE_USER'] ?? '(nobody)', ' at ', $_SERVER['SCRIPT_NAME'];" },
    });
    const lodestone = await startLodestone(t, {
      diagnostic: false,
      args: ['--root', scriptsDir, '--script', path.join(scriptsDir, `auth-pass.${ext}`)],
      config: { backends: { php: { servers: [php.address] } }, fetch: { allow: [origin] } },
    });
    const nginx = await startNginx(t, {
      fastcgiPass: `127.0.0.1:${lodestone.port}`,
      keepalive: 4,
      scriptRoot: php.docRoot,
      location: `fastcgi_param AUTH_SERVICE ${origin}/check;`,
    });

    const allowed = await httpRequest(nginx.url('/page.php'), { headers: { Cookie: 'theme=dark; token=good' } });
    assert.equal(allowed.status, 200, allowed.body.toString());
    assert.equal(allowed.body.toString(), 'php page for ada at /page.php');
    const refused = await httpRequest(nginx.url('/page.php'), { headers: { Cookie: 'token=bad' } });
    assert.equal(refused.status, 401);
    assert.equal(refused.body.toString(), 'not allowed\n');
    assert.equal(asked, 2, 'the service was asked once per request');

    await closeAuth();
    const down = await httpRequest(nginx.url('/page.php'), { headers: { Cookie: 'token=good' } });
    assert.equal(down.status, 503);
    assert.equal(down.body.toString(), 'authentication is unavailable\n');
    assert.match(nginx.errorLog(), /auth service unavailable: .*LS_FETCH_FAILED/);
  });
}
