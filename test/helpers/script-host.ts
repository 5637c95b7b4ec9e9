/**
 * Builds a real Request, Response and ScriptHost for engine tests, without a socket: the params
 * are encoded and set as the connection would, the body is pushed into STDIN, and what the
 * response sends is decoded back into a CGI response. {@link serve} runs one request through an
 * engine on it the way the pipeline does: the one place engine tests call the run API.
 */
import assert from 'node:assert/strict';
import { runScript } from '../../runtime/engines/run.js';
import { encodePairs } from '../../runtime/fastcgi/pairs.js';
import { ScriptError, defaultScriptLimits, type CompiledScript, type ScriptEngine, type ScriptLimits } from '../../runtime/engines/engine.js';
import { ScriptHost, noServices, type HostServices } from '../../runtime/engines/host.js';
import { Logger } from '../../runtime/log.js';
import { SlowLog } from '../../runtime/engines/slow-log.js';
import type { ModuleSlot, ModuleSlots } from '../../runtime/engines/modules.js';
import { Request } from '../../runtime/fastcgi/server/request.js';
import { Response, type ResponseChannel } from '../../runtime/fastcgi/server/response.js';
import { Decoder, T, parseCgi, type Cgi } from './fcgi-client.js';

export interface HostOptions {
  params?: Record<string, string>;
  body?: string | Buffer;
  limits?: Partial<ScriptLimits>;
  scriptFilename?: string;
  documentRoot?: string;
  /** Cache, backends, files for the run (none by default). */
  services?: HostServices;
  /** Raw-output mode (the pipeline's `rawOutput`): the script prints its own CGI head. */
  raw?: boolean;
}

export interface TestHost {
  host: ScriptHost;
  request: Request;
  response: Response;
  /** Everything sent so far, decoded: the CGI response (ends the response first if asked). */
  result(end?: boolean): Cgi & { stderr: string; ended: boolean };
}

const noFlow = { pauseFor(): void {}, resumeFor(): void {} };

export function makeHost(opts: HostOptions = {}): TestHost {
  const request = new Request(1, 'RESPONDER', false, { id: 1, peer: undefined }, 1, noFlow);
  const params = {
    REQUEST_METHOD: 'GET',
    REQUEST_URI: '/test?x=1',
    QUERY_STRING: 'x=1',
    SCRIPT_FILENAME: opts.scriptFilename ?? '/srv/test.script',
    DOCUMENT_ROOT: opts.documentRoot ?? '/srv',
    REMOTE_ADDR: '127.0.0.1',
    ...opts.params,
  };
  request.setParams(encodePairs(Object.entries(params)));
  if (opts.body !== undefined && opts.body.length > 0) request.stdin.push(Buffer.from(opts.body));
  request.stdin.end();

  const decoder = new Decoder();
  const channel: ResponseChannel = {
    requestId: 1,
    open: true,
    send(data) {
      decoder.push(Buffer.isBuffer(data) ? data : Buffer.concat(data));
      return true;
    },
  };
  const response = new Response(channel);
  const host = new ScriptHost(
    request,
    response,
    { ...defaultScriptLimits, ...opts.limits },
    opts.scriptFilename ?? '/srv/test.script',
    opts.documentRoot ?? '/srv',
    opts.raw ?? false,
    opts.services,
  );
  return {
    host,
    request,
    response,
    result(end = true) {
      if (end && !response.finished) response.end();
      const mine = decoder.records;
      const stdout = Buffer.concat(mine.filter((r) => r.type === T.STDOUT).map((r) => r.content));
      const stderr = Buffer.concat(mine.filter((r) => r.type === T.STDERR).map((r) => r.content)).toString();
      return { ...parseCgi(stdout), stderr, ended: mine.some((r) => r.type === T.END_REQUEST) };
    },
  };
}

export interface ServeOptions extends HostOptions {
  /** Called once the run has started (it may be waiting): abort the request, watch the output. */
  during?: (t: TestHost) => void;
  /**
   * Modules the script may require, by name: each source is compiled as a module (file
   * `/srv/www/lib/<name as a path><extension>`) as the store would, for this request only; or
   * modules compiled already ({@link compileModules}), which the caller keeps and disposes, as
   * a worker keeps them from one request to the next.
   */
  modules?: Readonly<Record<string, string>> | ModuleSlots;
}

/** What one request served by {@link serve} came to. */
export interface Served {
  /** What the run resolved with (the status code the script returned), when it succeeded. */
  returned: number | undefined;
  /** The request's failure: compile, runtime, limit or exit; null when it succeeded. */
  error: ScriptError | null;
  /** The response as sent (on a failure: as the script left it, before the pipeline's 500 page). */
  status: number;
  headers: Record<string, string>;
  /** Every header line in order, names lower-cased (each Set-Cookie line). */
  headerLines: Array<[string, string]>;
  body: Buffer;
  text: string;
  /** What went to FCGI_STDERR (log()). */
  stderr: string;
}

/**
 * Compiles module sources by name as the store would (file `/srv/www/lib/<name as a
 * path><extension>`); one that does not compile is a slot with the store's problem text.
 */
export function compileModules(engine: ScriptEngine, sources: Readonly<Record<string, string>>): Map<string, ModuleSlot> {
  const modules = new Map<string, ModuleSlot>();
  for (const [name, source] of Object.entries(sources)) {
    const moduleFile = `/srv/www/lib/${name.split('.').join('/')}${engine.extension}`;
    try {
      modules.set(name, { script: engine.compile(source, moduleFile, 'module'), file: moduleFile });
    } catch (err) {
      // As the store reports a module that does not compile (script-store.ts: slotOf).
      assert.ok(err instanceof ScriptError, `compile threw a non-ScriptError: ${String(err)}`);
      modules.set(name, { problem: `does not compile: ${err.location}: ${err.message}` });
    }
  }
  return modules;
}

/**
 * Serves one request with `script` (source, compiled for it and disposed after, or a compiled
 * script) on `engine` through runScript, as runtime/handlers/pipeline.ts does. A compile error
 * is the request's error, as the store's lookup makes it, and so is an exit (a refusal, a
 * range) or a failure; an aborted run's error is the host's fatal one.
 * The script file is `/srv/www/test<extension>` unless `opts.scriptFilename` says otherwise.
 *
 * @example
 *   const out = await serve(new LuaEngine(), 'print("hello")');
 *   assert.equal(out.text, 'hello\n');
 */
export async function serve(engine: ScriptEngine, script: string | CompiledScript, opts: ServeOptions = {}): Promise<Served> {
  const file = opts.scriptFilename ?? `/srv/www/test${engine.extension}`;
  const t = makeHost({ documentRoot: '/srv/www', ...opts, scriptFilename: file });
  let compiled: CompiledScript | null = null;
  let returned: number | undefined;
  let error: ScriptError | null = null;
  const given = opts.modules instanceof Map ? (opts.modules as ModuleSlots) : null;
  const modules = given ?? compileModules(engine, (opts.modules ?? {}) as Readonly<Record<string, string>>);
  try {
    if (modules.size > 0) t.host.modules = modules;
    compiled = typeof script === 'string' ? engine.compile(script, file) : script;
  } catch (err) {
    assert.ok(err instanceof ScriptError, `compile threw a non-ScriptError: ${String(err)}`);
    error = err;
  }
  if (compiled !== null) {
    const ran = runScript(engine, compiled, t.host);
    opts.during?.(t);
    const outcome = ran instanceof Promise ? await ran : ran;
    switch (outcome.kind) {
      case 'done':
        returned = outcome.returned;
        break;
      case 'failed':
      case 'page':
      case 'range':
        error = outcome.error;
        break;
      case 'relay':
        // The engine tests have no backend to relay: a relay here is the test's own mistake.
        assert.fail('serve() cannot stream a relay');
        break;
      case 'aborted':
        error = t.host.fatal;
        break;
    }
    if (typeof script === 'string') compiled.dispose();
  }
  if (given === null) for (const slot of modules.values()) slot.script?.dispose();
  const out = t.result();
  return { returned, error, status: out.status, headers: out.headers, headerLines: out.headerLines, body: out.body, text: out.body.toString(), stderr: out.stderr };
}

/** Host services with an in-flight slow log of `ms` (slowRequestMs), its lines collected in `lines`. */
export function slowLogged(ms: number): { services: HostServices; lines: string[] } {
  const lines: string[] = [];
  return { services: { ...noServices, slowLog: new SlowLog(ms, new Logger('info', (line) => lines.push(line))) }, lines };
}
