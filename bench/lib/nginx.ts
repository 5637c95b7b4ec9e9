/** The nginx configuration of the benchmark: one server block per backend and FastCGI mode. */
import fs from 'node:fs';
import path from 'node:path';
import { SERVER_CPU } from './harness.js';
import { start, stop, waitForListen, type Managed } from './procs.js';

export interface Site {
  /** Port nginx listens on (127.0.0.1) for this backend and mode. */
  listen: number;
  /**
   * Backend FastCGI port (127.0.0.1) or Unix socket path; null for a site nginx answers itself
   * ({@link returnBody}, {@link luaFile}).
   */
  backend: number | string | null;
  /** nginx answers `return 200 BODY` (text/plain) itself: the front end's ceiling. */
  returnBody?: string;
  /**
   * nginx runs this Lua file for every request itself (`content_by_lua_file`, lua-nginx-module:
   * pass its `load_module` paths to {@link nginxConfig}).
   */
  luaFile?: string;
  /** Upstream keep-alive pool size, or null for a new FastCGI connection per request. */
  keepalive: number | null;
  /** Unique name, used for the upstream block. */
  name: string;
  /**
   * Document root of this server block (default: the http block's `dir/www`). A script backend
   * gets its script directory here, so SCRIPT_FILENAME (`$document_root$fastcgi_script_name`)
   * names the file to run. Not a `fastcgi_param SCRIPT_FILENAME` in the server block: nginx
   * would then inherit none of the http block's fastcgi_param lines.
   */
  root?: string;
}

// Debian's /etc/nginx/fastcgi_params plus SCRIPT_FILENAME, inlined so the benchmark does not
// depend on the distribution's files: what a typical site sends, the same to every backend.
const FASTCGI_PARAMS = `
  fastcgi_param QUERY_STRING      $query_string;
  fastcgi_param REQUEST_METHOD    $request_method;
  fastcgi_param CONTENT_TYPE      $content_type;
  fastcgi_param CONTENT_LENGTH    $content_length;
  fastcgi_param SCRIPT_NAME       $fastcgi_script_name;
  fastcgi_param SCRIPT_FILENAME   $document_root$fastcgi_script_name;
  fastcgi_param REQUEST_URI       $request_uri;
  fastcgi_param DOCUMENT_URI      $document_uri;
  fastcgi_param DOCUMENT_ROOT     $document_root;
  fastcgi_param SERVER_PROTOCOL   $server_protocol;
  fastcgi_param REQUEST_SCHEME    $scheme;
  fastcgi_param HTTPS             $https if_not_empty;
  fastcgi_param GATEWAY_INTERFACE CGI/1.1;
  fastcgi_param SERVER_SOFTWARE   nginx/$nginx_version;
  fastcgi_param REMOTE_ADDR       $remote_addr;
  fastcgi_param REMOTE_PORT       $remote_port;
  fastcgi_param SERVER_ADDR       $server_addr;
  fastcgi_param SERVER_PORT       $server_port;
  fastcgi_param SERVER_NAME       $server_name;
  fastcgi_param REDIRECT_STATUS   200;`;

/** A backend as nginx names it: a port on 127.0.0.1, or `unix:PATH`. */
const address = (backend: number | string): string => (typeof backend === 'number' ? `127.0.0.1:${backend}` : `unix:${backend}`);

/**
 * nginx.conf for `nginx -p dir -c dir/nginx.conf`; everything nginx writes stays in `dir`.
 * `modules`: dynamic modules to load (absolute paths, in order), e.g. lua-nginx-module's.
 */
export function nginxConfig(dir: string, sites: readonly Site[], asRoot: boolean, modules: readonly string[] = []): string {
  const p = (name: string): string => path.join(dir, name);
  const upstreams = sites
    .filter((s) => s.keepalive !== null && s.backend !== null)
    .map(
      (s) => `
  upstream ${s.name} {
    server ${address(s.backend!)};
    keepalive ${s.keepalive};
    # The default (1000) would close and reopen the kept connections during a run.
    keepalive_requests 100000000;
  }`,
    )
    .join('\n');
  const servers = sites
    .map((s) => {
      const pass =
        s.backend === null && s.luaFile !== undefined
          ? `content_by_lua_file ${s.luaFile};`
          : s.backend === null
          ? `default_type text/plain;\n      return 200 ${JSON.stringify(s.returnBody ?? '')};`
          : s.keepalive !== null
          ? `fastcgi_pass ${s.name};\n      fastcgi_keep_conn on;`
          : `fastcgi_pass ${address(s.backend)};`;
      return `
  server {
    listen 127.0.0.1:${s.listen};${s.root !== undefined ? `\n    root ${s.root};` : ''}
    location / {
      ${pass}
    }
  }`;
    })
    .join('\n');
  return `# Written by the benchmark for one run; see bench/lib/nginx.ts.
${modules.map((m) => `load_module ${m};\n`).join('')}daemon off;
master_process on;
worker_processes 1;
${asRoot ? 'user root;\n' : ''}error_log ${p('error.log')} warn;
pid ${p('nginx.pid')};

events {
  worker_connections 4096;
}

http {
  access_log off;
  client_body_temp_path ${p('client_body')};
  fastcgi_temp_path ${p('fastcgi')};
  proxy_temp_path ${p('proxy')};
  uwsgi_temp_path ${p('uwsgi')};
  scgi_temp_path ${p('scgi')};
  root ${p('www')};
  # wrk's connections stay open for the whole run (default: closed every 1000 requests).
  keepalive_requests 100000000;
${FASTCGI_PARAMS}
${upstreams}
${servers}
}
`;
}

/** An nginx a scenario started: its process group and its error log. */
export interface NginxFront {
  readonly proc: Managed;
  readonly errorLog: string;
}

/**
 * Writes `dir/nginx.conf` for `sites` (through `configure`, which may add to its text), starts
 * nginx pinned to the server CPU with its error log in `dir` (`-e`: nginx opens it before it
 * reads the config, so even that one stays in `dir`), and waits until every site listens. One
 * that does not stops it again before the error goes up.
 */
export async function startNginxFront(
  nginxBin: string,
  dir: string,
  sites: readonly Site[],
  opts: { name?: string; logFile?: string; modules?: readonly string[]; configure?: (conf: string) => string } = {},
): Promise<NginxFront> {
  const name = opts.name ?? 'nginx';
  const conf = path.join(dir, 'nginx.conf');
  const text = nginxConfig(dir, sites, process.getuid?.() === 0, opts.modules ?? []);
  fs.writeFileSync(conf, opts.configure ? opts.configure(text) : text);
  const errorLog = path.join(dir, 'error.log');
  const proc = start(name, nginxBin, ['-p', dir, '-c', conf, '-e', errorLog], opts.logFile ?? path.join(dir, `${name}.log`), { cpus: SERVER_CPU });
  try {
    for (const s of sites) await waitForListen(s.listen, proc);
  } catch (err) {
    await stop(proc);
    throw err;
  }
  return { proc, errorLog };
}
