/**
 * Builds a real Request, Response and ScriptHost for engine tests, without a socket: the params
 * are encoded and set as the connection would, the body is pushed into STDIN, and what the
 * response sends is decoded back into a CGI response.
 */
import { encodePairs } from '../../runtime/fastcgi/pairs.js';
import { defaultScriptLimits, type ScriptLimits } from '../../runtime/engines/engine.js';
import { ScriptHost, noServices, type HostServices } from '../../runtime/engines/host.js';
import { Logger } from '../../runtime/log.js';
import { SlowLog } from '../../runtime/slowlog.js';
import { Request } from '../../runtime/request.js';
import { Response, type ResponseChannel } from '../../runtime/response.js';
import { Decoder, T, parseCgi, type Cgi } from './fcgi-client.js';

export interface HostOptions {
  params?: Record<string, string>;
  body?: string | Buffer;
  limits?: Partial<ScriptLimits>;
  scriptFilename?: string;
  documentRoot?: string;
  /** Cache, backends, files for the run (none by default). */
  services?: HostServices;
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
    false,
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

/** Host services with an in-flight slow log of `ms` (slowRequestMs), its lines collected in `lines`. */
export function slowLogged(ms: number): { services: HostServices; lines: string[] } {
  const lines: string[] = [];
  return { services: { ...noServices, slowLog: new SlowLog(ms, new Logger('info', (line) => lines.push(line))) }, lines };
}
