/**
 * Shared set-up for the raw protocol tests: an in-process FastcgiServer on port 0 (or a unix
 * socket) with a logger whose lines the test can search, and RawClients that are always closed
 * before the server is. Not a test file itself; the raw-*.test.ts files import it.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import type { TestContext } from 'node:test';
import type { Handler } from '../../runtime/fastcgi/server/connection.js';
import { defaultLimits, type Limits } from '../../runtime/fastcgi/server/limits.js';
import { FastcgiServer } from '../../runtime/fastcgi/server/server.js';
import { diagnostic } from '../../runtime/handlers/diagnostic.js';
import { Logger } from '../../runtime/log.js';
import {
  RawClient,
  T,
  parseCgi,
  request,
  type Cgi,
  type Rec,
  type Reply,
  type RequestOptions,
} from './fcgi-client.js';
import { tempDir } from './lodestone.js';
import { waitFor } from '../shared/poll.js';
import { parseReport, type Report } from './diagnostic.js';

export type { Report };

export interface HarnessOptions {
  limits?: Partial<Limits>;
  handler?: Handler;
  webServerAddrs?: readonly string[] | null;
  /** Listen on a unix socket in a temp dir instead of 127.0.0.1:0. */
  unix?: boolean;
}

export type Target = { port: number; host: string } | { path: string };

export interface Harness {
  server: FastcgiServer;
  target: Target;
  /** Every log line, debug level included. */
  logs: string[];
  /** A client connection, closed (if still open) before the server at the end of the test. */
  connect(): Promise<RawClient>;
  /** Log lines with this code. */
  logged(code: string): string[];
  /** Resolves with the first log line with this code; rejects after `timeoutMs`. */
  waitForLog(code: string, timeoutMs?: number): Promise<string>;
  /** One request on a fresh connection, answered and parsed. */
  get(params: Record<string, string>, opts?: RequestOptions): Promise<{ reply: Reply; cgi: Cgi; client: RawClient }>;
  /** Proves the server still serves: a fresh connection gets the diagnostic `hello` page. */
  assertAlive(): Promise<void>;
}

/** CGI params as a web server would send them for `GET /diag?query`. */
export function cgiParams(query: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    GATEWAY_INTERFACE: 'CGI/1.1',
    REQUEST_METHOD: 'GET',
    SCRIPT_FILENAME: '/srv/diag',
    SCRIPT_NAME: '/diag',
    REQUEST_URI: query ? `/diag?${query}` : '/diag',
    QUERY_STRING: query,
    SERVER_PROTOCOL: 'HTTP/1.1',
    ...extra,
  };
}

export async function startServer(t: TestContext, opts: HarnessOptions = {}): Promise<Harness> {
  const logs: string[] = [];
  const log = new Logger('debug', (line) => logs.push(line));
  const server = new FastcgiServer({
    limits: { ...defaultLimits, ...opts.limits },
    handler: opts.handler ?? diagnostic,
    log,
    webServerAddrs: opts.webServerAddrs ?? null,
  });
  let target: Target;
  if (opts.unix) {
    const file = path.join(tempDir(t, 'lodestone-raw-'), 'fcgi.sock');
    await server.listen({ kind: 'unix', path: file });
    target = { path: file };
  } else {
    await server.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
    const address = server.address();
    assert.ok(address !== null && typeof address === 'object', 'server bound to a TCP address');
    target = { port: address.port, host: '127.0.0.1' };
  }

  const clients = new Set<RawClient>();
  // One hook, so the order is certain: clients first (aborting whatever they left in flight),
  // then the server, whose close() would otherwise wait out its grace period for them.
  t.after(async () => {
    for (const c of clients) c.close();
    await server.close();
  });

  const logged = (code: string): string[] => logs.filter((line) => line.split(' ')[2] === code);

  const h: Harness = {
    server,
    target,
    logs,
    async connect() {
      const client = await RawClient.connect(target);
      clients.add(client);
      return client;
    },
    logged,
    async waitForLog(code, timeoutMs = 3000) {
      await waitFor(() => logged(code).length > 0, timeoutMs, `log code ${code}`);
      return logged(code)[0]!;
    },
    async get(params, reqOpts = {}) {
      const client = await h.connect();
      await client.write(request(1, params, reqOpts));
      const reply = await client.reply(1);
      return { reply, cgi: parseCgi(reply.stdout), client };
    },
    async assertAlive() {
      const { reply, cgi } = await h.get(cgiParams('hello'));
      assert.equal(reply.protocolStatus, 0);
      assert.equal(cgi.status, 200);
      assert.equal(cgi.body.toString(), '123');
    },
  };
  return h;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves when the server has closed `client`; rejects if it is still open after `timeoutMs`. */
export async function expectClosed(
  client: RawClient,
  timeoutMs = 3000,
  what = 'the server to close the connection',
): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  try {
    await Promise.race([client.closed, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Every record the server sent is well framed: content fits the 16-bit length, and content plus
 * padding is a multiple of 8 (the spec recommends 8-byte alignment; our encoder promises it).
 */
export function assertAligned(records: readonly Rec[]): void {
  assert.ok(records.length > 0, 'records to check');
  for (const r of records) {
    assert.ok(r.content.length <= 65535, `record of type ${r.type} with ${r.content.length} bytes of content`);
    assert.ok(r.padding !== undefined, 'decoder keeps the padding length');
    const framed = r.content.length + r.padding;
    assert.equal(framed % 8, 0, `type ${r.type}: ${r.content.length} + ${r.padding} bytes not 8-aligned`);
  }
}

/** A reply's records must end: ..., STDOUT(empty), [STDERR(empty)], END_REQUEST. */
export function assertStreamsClosed(reply: Reply): void {
  const types = reply.records.map((r) => r.type);
  assert.equal(types.at(-1), T.END_REQUEST, 'END_REQUEST comes last');
  const emptyStdout = reply.records.findIndex((r) => r.type === T.STDOUT && r.content.length === 0);
  assert.ok(emptyStdout >= 0, 'STDOUT stream closed by an empty record');
  assert.ok(
    reply.records.slice(emptyStdout + 1).every((r) => r.type !== T.STDOUT),
    'no STDOUT after the empty one',
  );
}

/** The JSON body of the diagnostic responder's report. */
export function report(cgi: Cgi): Report {
  assert.equal(cgi.headers['content-type'], 'application/json');
  return parseReport(cgi.body);
}
