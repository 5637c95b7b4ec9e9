/** lighttpd configurations of the benchmark: one small lighttpd per site, pinned like nginx. */
import path from 'node:path';

/** What the lighttpd answers with. */
export type LighttpdHandler =
  /** Serves the document root's files itself (a control). */
  | { kind: 'static' }
  /** Runs this Lua file in-core for every URL (mod_magnet). */
  | { kind: 'magnet'; script: string }
  /**
   * Passes every URL to a FastCGI backend (mod_fastcgi, a new connection per request: lighttpd
   * does not keep backend connections), as fcgi-stat-accel's page configures it.
   */
  | { kind: 'fastcgi'; socket?: string; port?: number; xSendfile?: boolean };

export interface LighttpdSite {
  /** Names its log and pid files in `dir`. */
  name: string;
  port: number;
  docRoot: string;
  handler: LighttpdHandler;
}

/** lighttpd.conf for `lighttpd -D -f FILE`; everything it writes stays in `dir`. */
export function lighttpdConfig(dir: string, site: LighttpdSite): string {
  const q = (s: string): string => JSON.stringify(s);
  const h = site.handler;
  let handler: string;
  switch (h.kind) {
    case 'static':
      handler = '# control: lighttpd serves the files itself';
      break;
    case 'magnet':
      handler = `server.modules += ( "mod_magnet" )\nmagnet.attract-raw-url-to = ( ${q(h.script)} )`;
      break;
    case 'fastcgi': {
      const where = h.socket !== undefined ? `"socket" => ${q(h.socket)}` : `"host" => "127.0.0.1", "port" => ${h.port ?? 0}`;
      handler =
        'server.modules += ( "mod_fastcgi" )\n' +
        `fastcgi.server = ( "" => ( "backend" => (\n  ${where},\n  "check-local" => "disable",\n` +
        `${h.xSendfile === true ? '  "x-sendfile" => "enable",\n' : ''})))`;
      break;
    }
  }
  return `# Written by the benchmark for one run: ${site.name}
server.document-root = ${q(site.docRoot)}
server.bind = "127.0.0.1"
server.port = ${site.port}
server.errorlog = ${q(path.join(dir, `${site.name}-error.log`))}
server.pid-file = ${q(path.join(dir, `${site.name}.pid`))}
server.upload-dirs = ( ${q(dir)} )
server.max-connections = 2048
server.max-fds = 8192
# wrk's connections stay open for the whole run (the default closes them every 1000 requests).
server.max-keep-alive-requests = 65535
${handler}
`;
}
