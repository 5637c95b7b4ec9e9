/**
 * `lodestone config SERVER` through real web servers: the printed snippet, dropped into a
 * minimal config whose only change to it is the listen address (a free loopback port instead of
 * 80), must route a .lua and a .js request to a real Lodestone serving a temp root, and let the
 * web server send a file for sendfile() where the snippet sets that up. Apache and Caddy run
 * for real when installed (Debian packages apache2 and caddy).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { cliPath, run, startLodestone, tempDir, type Lodestone } from '../helpers/lodestone.js';
import { freePort, havePrograms, httpRequest, signalPid, within } from '../helpers/peers.js';

const timeout = 60_000;

/** A Lodestone root with one script per engine and a file a script hands to the web server. */
interface Site {
  root: string;
  files: string;
  payload: string;
  configFile: string;
  lodestone: Lodestone;
  /** `--listen` value of the running Lodestone, for `lodestone config`. */
  listen: string;
}

async function startSite(t: TestContext, transport: 'tcp' | 'unix'): Promise<Site> {
  const dir = tempDir(t, 'lodestone-site-');
  // A space in the root: every snippet must quote it, or the web server reads two arguments.
  const root = path.join(dir, 'my www');
  const files = path.join(dir, 'files');
  fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
  fs.mkdirSync(files);
  fs.writeFileSync(path.join(root, 'hello.lua'), 'response.headers["Content-Type"] = "text/plain"\nprint("lua " .. request.query.x)\n');
  fs.writeFileSync(path.join(root, 'sub/hello.js'), "response.headers['Content-Type'] = 'text/plain';\nprint('js ' + request.query.x);\n");
  fs.writeFileSync(path.join(root, 'file.lua'), `sendfile(${JSON.stringify(path.join(files, 'data.txt'))})\n`);
  fs.writeFileSync(path.join(root, 'index.lua'), 'response.headers["Content-Type"] = "text/plain"\nprint("index")\n');
  // Browser JavaScript: a web server must send it, never hand it to Lodestone to run.
  fs.mkdirSync(path.join(root, 'assets'));
  fs.writeFileSync(path.join(root, 'assets/app.js'), "print('ran as a script');\n");
  const payload = `payload ${randomBytes(8).toString('hex')}\n`;
  fs.writeFileSync(path.join(files, 'data.txt'), payload);
  const configFile = path.join(dir, 'lodestone.json');
  fs.writeFileSync(configFile, JSON.stringify({ root, files: { roots: [files], accel: { [files]: '/protected/' } } }));
  const listen = transport === 'unix' ? `unix:${path.join(dir, 'lodestone.sock')}` : 'tcp:127.0.0.1:0';
  const lodestone = await startLodestone(t, { listen, diagnostic: false, args: ['--config', configFile] });
  return { root, files, payload, configFile, lodestone, listen: transport === 'unix' ? listen : `tcp:127.0.0.1:${lodestone.port}` };
}

function snippet(server: string, site: Site): string {
  const r = run(process.execPath, [cliPath, 'config', server, '--config', site.configFile, '--listen', site.listen]);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.toString();
}

/** Polls `url` until it serves `token`: 'ready', or 'exited' when `alive()` turns false. */
async function untilReady(url: string, token: string, alive: () => boolean): Promise<'ready' | 'exited'> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (!alive()) return 'exited';
    try {
      const reply = await httpRequest(url, { timeoutMs: 2_000 });
      if (reply.status === 200 && reply.body.toString() === token) return 'ready';
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no answer on ${url} within 30 s`);
}

/**
 * Runs `program` in its own process group on a free port (retried when another process takes
 * it first) until `/ready.txt` serves `token`; stopped, with its group, after the test.
 * `setup(port)` writes the config and returns the arguments.
 */
async function startServer(
  t: TestContext,
  program: string,
  setup: (port: number) => string[],
  token: string,
  logs: () => string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child = spawn(program, setup(port), { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.once('error', () => {});
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const stop = async (): Promise<void> => {
      if (child.pid === undefined) return;
      if (child.exitCode === null && child.signalCode === null) signalPid(child.pid, 'SIGTERM');
      if (!(await within(exited, 10_000))) signalPid(-child.pid, 'SIGKILL');
      await exited;
      signalPid(-child.pid, 'SIGKILL'); // anything the leader forked and left behind
    };
    t.after(stop);
    const alive = (): boolean => child.exitCode === null && child.signalCode === null;
    let state: 'ready' | 'exited';
    try {
      state = await untilReady(`http://127.0.0.1:${port}/ready.txt`, token, alive);
    } catch (err) {
      await stop();
      throw new Error(`${program}: ${(err as Error).message}\n${output}\n${logs()}`, { cause: err });
    }
    if (state === 'ready') return port;
    await stop();
    if (!/in use/i.test(output + logs()) || attempt >= 3) throw new Error(`${program} exited:\n${output}\n${logs()}`);
  }
}

/** A .lua and a .js script answer through the web server; their query arrives. */
async function assertScripts(port: number, site: Site): Promise<void> {
  const lua = await httpRequest(`http://127.0.0.1:${port}/hello.lua?x=1`);
  assert.equal(lua.status, 200, `${lua.body.toString()}\n${site.lodestone.log()}`);
  assert.equal(lua.body.toString(), 'lua 1\n');
  const js = await httpRequest(`http://127.0.0.1:${port}/sub/hello.js?x=2`);
  assert.equal(js.status, 200, `${js.body.toString()}\n${site.lodestone.log()}`);
  assert.equal(js.body.toString(), 'js 2\n');
}

function readyToken(dir: string): string {
  const token = `ready ${randomBytes(8).toString('hex')}\n`;
  fs.writeFileSync(path.join(dir, 'ready.txt'), token);
  return token;
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

test('nginx: the snippet, included in http {}, serves .lua and .js and sends files (unix socket)', { timeout }, async (t) => {
  if (!havePrograms(t, 'nginx')) return;
  const site = await startSite(t, 'unix');
  const text = snippet('nginx', site);
  assert.match(text, /^upstream lodestone \{$/m);
  assert.match(text, /keepalive \d+;/);
  assert.match(text, /fastcgi_keep_conn on;/);
  assert.match(text, /^server \{$/m);
  assert.ok(text.includes(`root "${site.root}";`), 'the root, with its space, is one quoted argument');
  const dir = tempDir(t, 'lodestone-nginx-');
  // The snippet's relative "include fastcgi_params" resolves next to nginx.conf, as in /etc/nginx.
  fs.copyFileSync('/etc/nginx/fastcgi_params', path.join(dir, 'fastcgi_params'));
  // The static readiness file is served from the snippet's root (not a script: nginx's own).
  const token = readyToken(site.root);
  const errorLog = path.join(dir, 'error.log');
  const port = await startServer(
    t,
    'nginx',
    (p) => {
      assert.match(text, /^ {4}listen 80;$/m);
      fs.writeFileSync(path.join(dir, 'lodestone.conf'), text.replace(/^ {4}listen 80;$/m, `    listen 127.0.0.1:${p};`));
      fs.writeFileSync(
        path.join(dir, 'nginx.conf'),
        `daemon off;
worker_processes 1;
${process.getuid?.() === 0 ? 'user root;' : ''}
error_log ${errorLog} warn;
pid ${dir}/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  fastcgi_temp_path ${dir}/fastcgi;
  proxy_temp_path ${dir}/proxy;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  include ${dir}/lodestone.conf;
}
`,
      );
      return ['-p', dir, '-e', errorLog, '-c', path.join(dir, 'nginx.conf')];
    },
    token,
    () => readText(errorLog),
  );
  await assertScripts(port, site);
  // sendfile() -> X-Accel-Redirect -> the snippet's internal location -> nginx sends the file.
  const file = await httpRequest(`http://127.0.0.1:${port}/file.lua`);
  assert.equal(file.status, 200, file.body.toString());
  assert.equal(file.body.toString(), site.payload);
  // The internal location is not reachable from outside.
  assert.equal((await httpRequest(`http://127.0.0.1:${port}/protected/data.txt`)).status, 404);
  // "/" runs index.lua (the dev server's index); browser JavaScript under the ^~ prefix is sent as it is.
  const index = await httpRequest(`http://127.0.0.1:${port}/`);
  assert.equal(index.status, 200, index.body.toString());
  assert.equal(index.body.toString(), 'index\n');
  const asset = await httpRequest(`http://127.0.0.1:${port}/assets/app.js`);
  assert.equal(asset.status, 200);
  assert.equal(asset.body.toString(), "print('ran as a script');\n");
  assert.doesNotMatch(site.lodestone.log(), /app\.js/);
});

test('lighttpd: the fragment in a minimal lighttpd.conf serves .lua and .js and sends files (TCP)', { timeout }, async (t) => {
  if (!havePrograms(t, 'lighttpd')) return;
  const site = await startSite(t, 'tcp');
  const text = snippet('lighttpd', site);
  assert.match(text, /"x-sendfile-docroot" => \( "[^"]+" \)/);
  const dir = tempDir(t, 'lodestone-lighttpd-');
  const docRoot = path.join(dir, 'www');
  fs.mkdirSync(docRoot);
  const token = readyToken(docRoot);
  const errorLog = path.join(dir, 'error.log');
  const port = await startServer(
    t,
    'lighttpd',
    (p) => {
      fs.writeFileSync(path.join(dir, 'lodestone.conf'), text);
      fs.writeFileSync(
        path.join(dir, 'lighttpd.conf'),
        `server.document-root = "${docRoot}"
server.bind = "127.0.0.1"
server.port = ${p}
server.errorlog = "${errorLog}"
server.pid-file = "${dir}/lighttpd.pid"
server.upload-dirs = ( "${dir}" )
include "${dir}/lodestone.conf"
`,
      );
      return ['-D', '-f', path.join(dir, 'lighttpd.conf')];
    },
    token,
    () => readText(errorLog),
  );
  await assertScripts(port, site);
  // sendfile() -> X-Sendfile, within the fragment's x-sendfile-docroot.
  const file = await httpRequest(`http://127.0.0.1:${port}/file.lua`);
  assert.equal(file.status, 200, file.body.toString());
  assert.equal(file.body.toString(), site.payload);
});

test('apache: the VirtualHost with mod_proxy_fcgi serves .lua and .js (TCP)', { timeout }, async (t) => {
  if (!havePrograms(t, 'apache2')) return;
  const site = await startSite(t, 'tcp');
  const text = snippet('apache', site);
  assert.match(text, /enablereuse=on/);
  assert.match(text, /SetHandler "proxy:fcgi:\/\/127\.0\.0\.1:\d+\/"/);
  const dir = tempDir(t, 'lodestone-apache-');
  // Apache serves the readiness file from the snippet's DocumentRoot.
  const token = readyToken(site.root);
  const errorLog = path.join(dir, 'error.log');
  const modules = '/usr/lib/apache2/modules';
  const port = await startServer(
    t,
    'apache2',
    (p) => {
      assert.match(text, /^<VirtualHost \*:80>$/m);
      fs.writeFileSync(path.join(dir, 'lodestone.conf'), text.replace(/^<VirtualHost \*:80>$/m, `<VirtualHost 127.0.0.1:${p}>`));
      fs.writeFileSync(
        path.join(dir, 'httpd.conf'),
        `ServerRoot ${dir}
ServerName 127.0.0.1
LoadModule mpm_event_module ${modules}/mod_mpm_event.so
LoadModule authz_core_module ${modules}/mod_authz_core.so
LoadModule proxy_module ${modules}/mod_proxy.so
LoadModule proxy_fcgi_module ${modules}/mod_proxy_fcgi.so
${process.getuid?.() === 0 ? 'User nobody\nGroup nogroup' : ''}
Listen 127.0.0.1:${p}
PidFile ${dir}/httpd.pid
DefaultRuntimeDir ${dir}
Mutex file:${dir} default
ErrorLog ${errorLog}
Include ${dir}/lodestone.conf
`,
      );
      return ['-DFOREGROUND', '-f', path.join(dir, 'httpd.conf')];
    },
    token,
    () => readText(errorLog),
  );
  await assertScripts(port, site);
});

test('caddy: the Caddyfile site block serves .lua and .js (unix socket) and sends files', { timeout }, async (t) => {
  if (!havePrograms(t, 'caddy')) return;
  const site = await startSite(t, 'unix');
  const text = snippet('caddy', site);
  assert.match(text, /transport fastcgi/);
  assert.ok(text.includes(`root * "${site.root}"`), 'the root, with its space, is one quoted token');
  const dir = tempDir(t, 'lodestone-caddy-');
  const token = readyToken(site.root);
  const port = await startServer(
    t,
    'caddy',
    (p) => {
      assert.match(text, /^:80 \{$/m);
      // No admin endpoint (a fixed port shared by every caddy), and only loopback.
      const file = path.join(dir, 'Caddyfile');
      fs.writeFileSync(file, `{\n    admin off\n}\n${text.replace(/^:80 \{$/m, `:${p} {\n    bind 127.0.0.1`)}`);
      return ['run', '--config', file, '--adapter', 'caddyfile'];
    },
    token,
    () => '',
    // Caddy keeps its state under HOME / XDG dirs: the temp dir, not the user's.
    { ...process.env, HOME: dir, XDG_DATA_HOME: dir, XDG_CONFIG_HOME: dir },
  );
  await assertScripts(port, site);
  const file = await httpRequest(`http://127.0.0.1:${port}/file.lua`);
  assert.equal(file.status, 200, file.body.toString());
  assert.equal(file.body.toString(), site.payload);
});
