/**
 * `lodestone serve --http` as `npm start` runs it: the banner names the URL, scripts answer
 * over plain HTTP through the private FastCGI socket, and a stop removes that socket's dir.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { cliPath, repoRoot } from '../helpers/lodestone.js';
import { httpRequest } from '../helpers/peers.js';

test('serve --http: banner URL, scripts over HTTP, clean stop', { timeout: 30_000 }, async (t) => {
  const child = spawn(process.execPath, [cliPath, 'serve', '--http', '127.0.0.1:0', '--root', path.join(repoRoot, 'scripts')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => child.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const deadline = Date.now() + 15_000;
  while (!/http:\/\/127\.0\.0\.1:\d+\//.test(stdout)) {
    assert.ok(Date.now() < deadline && child.exitCode === null, `no banner: ${stdout}\n${stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const url = /http:\/\/127\.0\.0\.1:\d+/.exec(stdout)![0];
  assert.match(stdout, /^Lodestone development server: http:\/\/127\.0\.0\.1:\d+\/ \(scripts from .*scripts\)/);

  const hello = await httpRequest(`${url}/hello.lua`);
  assert.equal(hello.status, 200);
  assert.equal(hello.body.toString(), 'Hello from Lua\n');
  const api = await httpRequest(`${url}/api.js?name=Ada`);
  assert.deepEqual(JSON.parse(api.body.toString()), { greeting: 'Hello, Ada', method: 'GET' });

  const socketLine = /listen=unix:(\S+)/.exec(stderr);
  assert.ok(socketLine, stderr);
  const socketDir = path.dirname(socketLine[1]!);
  assert.ok(fs.existsSync(socketLine[1]!));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
  assert.equal(fs.existsSync(socketDir), false, 'the private socket dir is removed');
});

test('serve --http with a TCP --listen: one clear config line, exit 2', { timeout: 30_000 }, async () => {
  const child = spawn(process.execPath, [cliPath, 'serve', '--http', '127.0.0.1:0', '--listen', 'tcp:127.0.0.1:0', '--root', repoRoot], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  assert.equal(code, 2);
  assert.match(stderr, /LS_CONFIG_INVALID: --http: needs FastCGI on a unix socket/);
});
