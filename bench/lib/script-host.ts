/**
 * One script request without a socket, for the micro and big-script benchmarks: a real Request (params set the way
 * the connection sets them), a real Response whose channel counts and drops the framed bytes,
 * and a ScriptHost, run the way runtime/handlers/pipeline.ts runs a script (start, run, endOutput, the
 * default Content-Type, end, finish). The same idea as test/helpers/script-host.ts, kept apart
 * so that the benchmark does not depend on test code.
 */
import { runScript } from '../../runtime/engines/run.js';
import type { ModuleSlots } from '../../runtime/engines/modules.js';
import type { CompiledScript, ScriptEngine } from '../../runtime/engines/engine.js';
import { defaultScriptLimits } from '../../runtime/engines/engine.js';
import { ScriptHost } from '../../runtime/engines/host.js';
import { encodePairs } from '../../runtime/fastcgi/pairs.js';
import { Request } from '../../runtime/fastcgi/server/request.js';
import { Response, type ResponseChannel } from '../../runtime/fastcgi/server/response.js';

const noFlow = { pauseFor(): void {}, resumeFor(): void {} };

/** What a request sends: a typical nginx param set for `GET /<name>?x=1`, encoded once. */
export function nginxParams(scriptFilename: string, documentRoot: string): Buffer {
  const uri = scriptFilename.slice(documentRoot.length);
  return encodePairs(
    Object.entries({
      QUERY_STRING: 'x=1',
      REQUEST_METHOD: 'GET',
      CONTENT_TYPE: '',
      CONTENT_LENGTH: '',
      SCRIPT_NAME: uri,
      SCRIPT_FILENAME: scriptFilename,
      REQUEST_URI: `${uri}?x=1`,
      DOCUMENT_URI: uri,
      DOCUMENT_ROOT: documentRoot,
      SERVER_PROTOCOL: 'HTTP/1.1',
      REQUEST_SCHEME: 'http',
      GATEWAY_INTERFACE: 'CGI/1.1',
      SERVER_SOFTWARE: 'nginx/1.22.1',
      REMOTE_ADDR: '127.0.0.1',
      REMOTE_PORT: '40000',
      SERVER_ADDR: '127.0.0.1',
      SERVER_PORT: '8080',
      SERVER_NAME: 'localhost',
      REDIRECT_STATUS: '200',
      HTTP_HOST: 'localhost:8080',
      HTTP_USER_AGENT: 'bench',
    }),
  );
}

/** Where the framed response bytes of the requests go. */
export class Sink implements ResponseChannel {
  readonly requestId = 1;
  readonly open = true;
  /** Bytes sent so far, all requests together. */
  bytes = 0;
  /** When set, the bytes are kept too (for a correctness check before timing). */
  kept: Buffer[] | null = null;

  send(data: Buffer | Buffer[], _last: boolean): boolean {
    const chunks = Buffer.isBuffer(data) ? [data] : data;
    for (const c of chunks) {
      this.bytes += c.length;
      this.kept?.push(Buffer.from(c));
    }
    return true;
  }
}

/** A fresh Request + Response + ScriptHost for one run, as the pipeline builds them. */
export function makeHost(params: Buffer, sink: Sink, scriptFilename: string, documentRoot: string): ScriptHost {
  const request = new Request(1, 'RESPONDER', true, { id: 1, peer: undefined }, 1, noFlow);
  request.setParams(params);
  request.stdin.end();
  return new ScriptHost(request, new Response(sink), defaultScriptLimits, scriptFilename, documentRoot);
}

/**
 * Serves one request with `script` through runScript, as runtime/handlers/pipeline.ts does; throws the script's error.
 * With `engine` null only the host is built, started, ended and finished (the baseline).
 */
export async function serveOnce(
  engine: ScriptEngine | null,
  script: CompiledScript | null,
  params: Buffer,
  sink: Sink,
  scriptFilename: string,
  documentRoot: string,
  /** The modules the script may require (as the store's lease gives them); none by default. */
  modules: ModuleSlots | null = null,
): Promise<void> {
  const host = makeHost(params, sink, scriptFilename, documentRoot);
  host.modules = modules;
  if (!engine || !script) {
    // The baseline: the host's own start, end and finish, no engine.
    host.start();
    host.end(undefined);
    host.finish();
    return;
  }
  const ran = runScript(engine, script, host);
  const outcome = ran instanceof Promise ? await ran : ran;
  if (outcome.kind === 'failed') throw outcome.error;
  if (outcome.kind !== 'done') throw new Error(`the bench's script ended with ${outcome.kind}`);
}
