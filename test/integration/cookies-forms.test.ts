/**
 * Cookies and forms end to end: real nginx in front of the `lodestone` CLI, on both Lua engines
 * and JS. The shipped example (scripts/upload.*) gets a multipart upload made by Node's own
 * FormData (as a browser makes it), answers with what it saw and a Set-Cookie line that a
 * later GET sends back; a script in a temp root echoes a binary file part, so its bytes are
 * checked as they went through nginx; several Set-Cookie lines reach the client; an oversized
 * form is refused with 400 by the script's own handling.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { FORM_MAX_PARTS } from '../../runtime/engines/host.js';
import { startLodestone, tempDir } from '../helpers/lodestone.js';
import { havePrograms, startNginx } from '../helpers/peers.js';
import { repoRoot } from '../shared/repo.js';

const timeout = 90_000;

// Every byte value, several times: NUL, CR LF, boundary-like dashes, bytes that are no UTF-8.
const BINARY = Buffer.concat([Buffer.from('--\r\n--'), Buffer.from([...Array(1024).keys()].map((i) => (i * 7) % 256))]);

for (const [ext, luaEngine] of [['lua', 'fengari'], ['lua', 'lua54'], ['js', 'fengari']] as const) {
  test(`cookies and forms through nginx: ${ext}${ext === 'lua' ? ` (${luaEngine})` : ''}`, { timeout }, async (t) => {
    if (!havePrograms(t, 'nginx')) return;
    // The shipped examples and a temp root side by side: one root holds both.
    const root = tempDir(t);
    for (const name of ['upload.lua', 'upload.js']) fs.copyFileSync(path.join(repoRoot, 'scripts', name), path.join(root, name));
    fs.writeFileSync(
      path.join(root, 'echo.lua'),
      'local f = request.form()\nresponse.cookie("a", "1")\nresponse.cookie("b", "x y", { path = "/p", secure = true })\nwrite(f.files.bin.data)',
    );
    fs.writeFileSync(
      path.join(root, 'echo.js'),
      'const f = await request.form();\nresponse.cookie("a", "1");\nresponse.cookie("b", "x y", { path: "/p", secure: true });\nwrite(f.files.bin.size, " ", f.files.bin.data.length)',
    );
    const lodestone = await startLodestone(t, { diagnostic: false, args: ['--root', root], config: { luaEngine } });
    const nginx = await startNginx(t, { fastcgiPass: `127.0.0.1:${lodestone.port}`, keepalive: 4, scriptRoot: root });

    // A browser's upload: Node's FormData encodes it (its own boundary, Content-Type, CRLFs).
    const form = new FormData();
    form.append('name', 'Ada Lovelace');
    form.append('doc', new Blob([BINARY], { type: 'application/x-thing' }), 'notes.bin');
    form.append('tag', 'a');
    form.append('pic', new Blob(['GIF89a'], { type: 'image/gif' }), 'dot.gif');
    const up = await fetch(nginx.url(`/upload.${ext}`), { method: 'POST', body: form });
    assert.equal(up.status, 200);
    assert.equal(
      await up.text(),
      `hello Ada Lovelace\nfile doc: notes.bin, ${BINARY.length} bytes, application/x-thing\nfile pic: dot.gif, 6 bytes, image/gif\n`,
    );
    const cookie = up.headers.getSetCookie();
    assert.deepEqual(cookie, ['name=Ada%20Lovelace; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax']);

    // The browser sends the cookie back: the script reads it decoded.
    const back = await fetch(nginx.url(`/upload.${ext}`), { headers: { Cookie: cookie[0]!.split(';')[0]! } });
    assert.equal(await back.text(), 'last upload by Ada Lovelace\n');
    assert.equal(await (await fetch(nginx.url(`/upload.${ext}`))).text(), 'last upload by nobody\n');

    // A urlencoded form goes the same way.
    const plain = await fetch(nginx.url(`/upload.${ext}`), { method: 'POST', body: new URLSearchParams({ name: 'Grace €' }) });
    assert.equal(await plain.text(), 'hello Grace €\n');

    // One field too many: the example answers 400 with the refusal.
    const many = new URLSearchParams();
    for (let i = 0; i <= FORM_MAX_PARTS; i++) many.append(`f${i}`, 'x');
    const refused = await fetch(nginx.url(`/upload.${ext}`), { method: 'POST', body: many });
    assert.equal(refused.status, 400);
    assert.equal(await refused.text(), `request.form(): more than ${FORM_MAX_PARTS} fields and files\n`);

    // The file's bytes as the script got them, and two Set-Cookie lines through nginx.
    const bin = new FormData();
    bin.append('bin', new Blob([BINARY]), 'b.bin');
    const echoed = await fetch(nginx.url(`/echo.${ext}`), { method: 'POST', body: bin });
    assert.equal(echoed.status, 200);
    const body = Buffer.from(await echoed.arrayBuffer());
    if (ext === 'lua') assert.deepEqual(body, BINARY, 'the exact bytes');
    else assert.equal(body.toString(), `${BINARY.length} ${BINARY.toString('utf8').length}`, 'size in bytes, the data decoded as UTF-8');
    assert.deepEqual(echoed.headers.getSetCookie(), ['a=1', 'b=x%20y; Path=/p; Secure']);
  });
}
