/**
 * Lodestone driven by libfcgi's own tools and systemd's: `cgi-fcgi -bind` as a FastCGI client
 * over TCP and a unix socket, `cgi-fcgi -start` and `systemd-socket-activate` as the process
 * managers that open the listening socket and hand it over (fd 0, resp. fd 3 with LISTEN_FDS),
 * and the one-line exit of `serve` on a bad --listen.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { parseCgi, type Cgi } from '../helpers/fcgi-client.js';
import { cliPath, complaints, run, startLodestone, tempDir } from '../helpers/lodestone.js';
import { findProgram } from '../shared/programs.js';
import { havePrograms, killAfter, pidsWithArg, startSocketActivate } from '../helpers/peers.js';
import { waitFor } from '../shared/poll.js';
import { parseReport, sha256, type Report } from '../helpers/diagnostic.js';

/** A hung peer fails its test instead of the whole run. */
const timeout = 60_000;

interface CgiReply extends Cgi {
  raw: Buffer;
  stderr: string;
}

/**
 * One request with `cgi-fcgi -bind -connect`, which sends its whole environment as the params
 * and CONTENT_LENGTH bytes of its stdin as the body, and prints the CGI response.
 */
function cgiFcgi(connect: string, env: Record<string, string>, body: Buffer = Buffer.alloc(0)): CgiReply {
  const program = findProgram('cgi-fcgi');
  assert.ok(program, 'cgi-fcgi is not installed');
  // A minimal environment, since every variable becomes a param.
  const r = run(program, ['-bind', '-connect', connect], { env, input: body, timeoutMs: 30_000 });
  assert.equal(r.status, 0, `cgi-fcgi exited with ${r.status}: ${r.stderr}`);
  return { ...parseCgi(r.stdout), raw: r.stdout, stderr: r.stderr };
}

function report(reply: CgiReply): Report {
  assert.equal(reply.headers['content-type'], 'application/json', reply.raw.toString());
  return parseReport(reply.body);
}

function get(connect: string, query: string): CgiReply {
  return cgiFcgi(connect, { REQUEST_METHOD: 'GET', QUERY_STRING: query, SCRIPT_NAME: '/cgi-fcgi.lua' });
}

/** Echo, params and status/header/stderr through cgi-fcgi to `connect`. */
function exercise(connect: string): void {
  const body = randomBytes(100 * 1024);
  const echoed = cgiFcgi(
    connect,
    {
      REQUEST_METHOD: 'POST',
      QUERY_STRING: 'echo',
      CONTENT_LENGTH: String(body.length),
      CONTENT_TYPE: 'application/octet-stream',
    },
    body,
  );
  // A CGI response: Status line first, then headers, a blank line and the body.
  assert.match(echoed.raw.subarray(0, 80).toString('latin1'), /^Status: 200 OK\r\nContent-Type: [^\r\n]+\r\n\r\n/);
  assert.equal(echoed.status, 200);
  assert.equal(echoed.headers['content-type'], 'application/octet-stream');
  assert.equal(echoed.body.length, body.length);
  assert.ok(echoed.body.equals(body), 'echoed body differs');

  const posted = report(
    cgiFcgi(
      connect,
      {
        REQUEST_METHOD: 'PUT',
        QUERY_STRING: 'a=1',
        CONTENT_LENGTH: String(body.length),
        SCRIPT_FILENAME: '/srv/x.lua',
      },
      body,
    ),
  );
  assert.equal(posted.role, 'RESPONDER');
  assert.equal(posted.params.REQUEST_METHOD, 'PUT');
  assert.equal(posted.params.QUERY_STRING, 'a=1');
  assert.equal(posted.params.SCRIPT_FILENAME, '/srv/x.lua');
  assert.equal(posted.params.CONTENT_LENGTH, String(body.length));
  assert.equal(posted.stdinBytes, body.length);
  assert.equal(posted.stdinSha256, sha256(body));

  const notFound = get(connect, 'status=404&header=X-Test:yes&stderr=hello-from-app');
  assert.match(notFound.raw.toString('latin1'), /^Status: 404 Not Found\r\n/);
  assert.equal(notFound.status, 404);
  assert.equal(notFound.headers['x-test'], 'yes');
  // cgi-fcgi copies FCGI_STDERR to its own stderr.
  assert.match(notFound.stderr, /hello-from-app/);
}

test('cgi-fcgi -bind -connect to lodestone over TCP', { timeout }, async (t) => {
  if (!havePrograms(t, 'cgi-fcgi')) return;
  const lodestone = await startLodestone(t);
  exercise(`127.0.0.1:${lodestone.port}`);
});

test('cgi-fcgi -bind -connect to lodestone over a unix socket', { timeout }, async (t) => {
  if (!havePrograms(t, 'cgi-fcgi')) return;
  const sock = path.join(tempDir(t), 'ls.sock');
  await startLodestone(t, { listen: `unix:${sock}` });
  exercise(sock);
});

function shellQuote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/**
 * `cgi-fcgi -start -connect SOCK APP` binds SOCK, starts APP with the listening socket on fd 0
 * (stdout and stderr closed) and exits. APP takes no arguments, so it is a wrapper script.
 */
async function startedByCgiFcgi(t: TestContext, extraArgs: string[]): Promise<void> {
  if (!havePrograms(t, 'cgi-fcgi')) return;
  const dir = tempDir(t);
  // The dir is in the wrapper's path and in lodestone's --root: the marker to find the process.
  killAfter(t, dir);
  const app = path.join(dir, 'app.sh');
  const command = [process.execPath, cliPath, 'serve', '--diagnostic', '--root', dir, ...extraArgs];
  fs.writeFileSync(app, `#!/bin/sh\nexec ${command.map(shellQuote).join(' ')}\n`, { mode: 0o755 });
  const sock = path.join(dir, 'ls.sock');

  const started = run(findProgram('cgi-fcgi')!, ['-start', '-connect', sock, app]);
  assert.equal(started.status, 0, started.stderr);
  // The process manager (--workers 2): the primary cgi-fcgi started and its two workers.
  const pids = await waitFor(
    () => {
      const found = pidsWithArg(dir);
      return found.length === 3 ? found : undefined;
    },
    15_000,
    () => `a primary and two workers started by cgi-fcgi -start (found ${pidsWithArg(dir).join(', ') || 'none'})`,
  );
  const primary = pids.find((p) => !pids.includes(parentPid(p)))!;
  const workers = pids.filter((p) => p !== primary);
  for (const w of workers) assert.equal(parentPid(w), primary);

  // The socket is listening already (cgi-fcgi bound it): requests wait in its backlog until
  // a worker accepts them, so no readiness poll is needed.
  const first = report(get(sock, 'first'));
  assert.equal(first.params.QUERY_STRING, 'first');
  exercise(sock);
  const last = report(get(sock, 'last'));
  for (const r of [first, last]) assert.ok(workers.includes(r.pid), `answered by ${r.pid}, workers ${workers.join(',')}`);
  assert.deepEqual(pidsWithArg(dir).sort(), pids.sort());
  // Once node runs (not the wrapper), its fd 0 is the socket cgi-fcgi handed over, and each
  // worker accepts on a copy of that very socket.
  assert.ok(fs.readFileSync(`/proc/${primary}/cmdline`, 'utf8').includes(cliPath));
  const socket = fs.readlinkSync(`/proc/${primary}/fd/0`);
  assert.match(socket, /^socket:/);
  for (const w of workers) assert.equal(fs.readlinkSync(`/proc/${w}/fd/4`), socket);
}

function parentPid(pid: number): number {
  // Field 4 of /proc/PID/stat, after the parenthesised command name.
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

test('cgi-fcgi -start hands lodestone a socket on fd 0, detected without --listen; two workers share it', { timeout }, (t) =>
  startedByCgiFcgi(t, ['--workers', '2']),
);

test('cgi-fcgi -start with --listen fd:0 and two workers', { timeout }, (t) => startedByCgiFcgi(t, ['--listen', 'fd:0', '--workers', '2']));

async function socketActivated(t: TestContext, extraArgs: string[]): Promise<void> {
  if (!havePrograms(t, 'systemd-socket-activate', 'cgi-fcgi')) return;
  const dir = tempDir(t);
  const activated = await startSocketActivate(t, [
    process.execPath,
    cliPath,
    'serve',
    '--diagnostic',
    '--root',
    dir,
    '--workers',
    '2',
    ...extraArgs,
  ]);
  const connect = `127.0.0.1:${activated.port}`;
  // The first connection makes systemd-socket-activate exec lodestone; it waits in the backlog.
  const first = report(get(connect, 'first'));
  assert.equal(first.params.QUERY_STRING, 'first');
  assert.match(await activated.waitForOutput(/lodestone listening/), / listen=fd:3 /);
  exercise(connect);
  const last = report(get(connect, 'last'));
  // Answered by the primary's workers, not by the process systemd started.
  assert.ok(last.pid !== activated.child.pid && first.pid !== activated.child.pid, `${first.pid}, ${last.pid}`);
  assert.deepEqual(complaints(activated.output()), []);
}

test('systemd-socket-activate with --listen systemd', { timeout }, (t) => socketActivated(t, ['--listen', 'systemd']));

test('systemd-socket-activate without --listen: LISTEN_FDS is detected', { timeout }, (t) => socketActivated(t, []));

/** Asserts a failed start: non-zero exit and exactly one line on stderr, no stack trace. */
function assertOneLineFailure(r: { status: number | null; stderr: string }, ...patterns: RegExp[]): void {
  assert.notEqual(r.status, null, `did not exit (timed out): ${r.stderr}`);
  assert.notEqual(r.status, 0);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  for (const p of patterns) assert.match(lines[0]!, p);
}

test('serve --listen bogus: exit 2, one line naming --listen, then the help hint', { timeout }, () => {
  const r = run(process.execPath, [cliPath, 'serve', '--listen', 'bogus', '--diagnostic']);
  assert.equal(r.status, 2);
  assert.deepEqual(r.stderr.trimEnd().split('\n').slice(1), ["try 'lodestone --help'"]);
  assertOneLineFailure({ status: r.status, stderr: r.stderr.split('\n')[0]! }, /^lodestone: LS_CONFIG_INVALID: --listen: /, /bogus/);
});

test('bad flags: one line naming the flag with LS_CONFIG_INVALID, the help hint, exit 2', { timeout }, () => {
  const cases: Array<[string[], RegExp]> = [
    [['--workers', '-1'], /^lodestone: LS_CONFIG_INVALID: --workers: must be an integer from 0 to \d+ \(got -1\)$/],
    [['--workers', 'abc'], /^lodestone: LS_CONFIG_INVALID: --workers: must be an integer \(got "abc"\)$/],
    [['--bogus'], /^lodestone: LS_CONFIG_INVALID: --bogus: unknown option$/],
    [['--workers'], /^lodestone: LS_CONFIG_INVALID: --workers: needs a value$/],
  ];
  for (const [args, pattern] of cases) {
    const r = run(process.execPath, [cliPath, 'serve', '--diagnostic', ...args]);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.deepEqual(r.stderr.trimEnd().split('\n').slice(1), ["try 'lodestone --help'"], r.stderr);
    assert.match(r.stderr.split('\n')[0]!, pattern);
  }
  const unknown = run(process.execPath, [cliPath, 'frob']);
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /^lodestone: LS_CONFIG_INVALID: unknown command "frob"\ntry 'lodestone --help'\n$/);
});

test('serve --listen fd:0 when fd 0 is not a listening socket: one clear line', { timeout }, async (t) => {
  const serve = [cliPath, 'serve', '--listen', 'fd:0', '--diagnostic'];
  const childTimeout = 15_000;
  const stdio = (stdin: 'ignore' | 'pipe'): ['ignore' | 'pipe', 'pipe', 'pipe'] => [stdin, 'pipe', 'pipe'];

  await t.test('stdin is /dev/null', () => {
    const r = spawnSync(process.execPath, serve, { stdio: stdio('ignore'), timeout: childTimeout, encoding: 'utf8' });
    assertOneLineFailure(r, /fd 0/, /not a listening socket/);
  });

  await t.test('stdin is a pipe', () => {
    // A shell pipeline gives a real pipe (node's own 'pipe' stdio is a socketpair).
    const r = spawnSync('/bin/sh', ['-c', ': | exec "$@"', 'sh', process.execPath, ...serve], {
      stdio: stdio('ignore'),
      timeout: childTimeout,
      encoding: 'utf8',
    });
    assertOneLineFailure(r, /fd 0/, /not a listening socket/);
  });

  await t.test('stdin is a connected socket', () => {
    const r = spawnSync(process.execPath, serve, {
      stdio: stdio('pipe'),
      input: '',
      timeout: childTimeout,
      encoding: 'utf8',
    });
    assertOneLineFailure(r, /fd 0/, /not a listening socket/);
  });
});
