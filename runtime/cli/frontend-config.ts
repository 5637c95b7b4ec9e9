/**
 * `lodestone config nginx|lighttpd|apache|caddy`: a ready front-end snippet from the loaded
 * configuration, so the web server's idea of the Lodestone address, the script root and the
 * sendfile roots cannot drift from Lodestone's own. Pure text generation: nothing is opened.
 *
 * Two shapes, as the modes need: scripts mode sends `*.lua` and `*.js` to Lodestone with
 * SCRIPT_FILENAME under the root and serves everything else itself; front-controller mode
 * (`--script`, `--stat-accel`, `--diagnostic`) sends every request, with SCRIPT_FILENAME as
 * PHP-FPM setups send it (document root + path), so a script can pass() it on unchanged.
 */
import type { Config } from './config.js';

/** The web servers `lodestone config` writes for. */
export const frontEnds = ['nginx', 'lighttpd', 'apache', 'caddy'] as const;
export type FrontEnd = (typeof frontEnds)[number];

/** True when `name` is one of {@link frontEnds}. */
export function isFrontEnd(name: string): name is FrontEnd {
  return (frontEnds as readonly string[]).includes(name);
}

/** Where the web server connects: Lodestone's listen address as a client sees it. */
type Upstream =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string }
  /** An inherited socket (fd:N, systemd): its address is not in the config. */
  | { readonly kind: 'inherited'; readonly fd: number };

function upstream(config: Config): Upstream {
  const listen = config.listen ?? { kind: 'tcp', host: '127.0.0.1', port: 9000 };
  if (listen.kind === 'unix') return listen;
  if (listen.kind === 'fd') return { kind: 'inherited', fd: listen.fd };
  // A wildcard bind is reached on loopback from a web server on the same host.
  const host = listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host === '::' ? '::1' : listen.host;
  return { kind: 'tcp', host, port: listen.port };
}

/**
 * A path as one token of an nginx or Caddyfile directive: as it is when it has nothing either
 * parser would split on or read specially, else double-quoted with `\` and `"` escaped (both
 * take that form). A path with spaces unquoted would be read as two arguments.
 */
function token(value: string): string {
  return /^[^\s"'{};#\\]+$/.test(value) ? value : quoted(value);
}

/** A double-quoted string with `\` and `"` escaped: lighttpd's and Apache's string syntax. */
function quoted(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function hostPort(u: { host: string; port: number }): string {
  return u.host.includes(':') ? `[${u.host}]:${u.port}` : `${u.host}:${u.port}`;
}

/** Every request goes to Lodestone (a front controller), not only `*.lua` / `*.js`. */
function frontController(config: Config): boolean {
  return config.script !== null || config.statAccel || config.diagnostic;
}

function modeComment(config: Config): string {
  if (config.script !== null) return `front controller: every request runs ${config.script}`;
  if (config.statAccel) return 'stat-accel: every request is stat()ed, then sent by the web server';
  if (config.diagnostic) return 'diagnostic responder: every request is answered by it';
  return `scripts: *.lua and *.js under ${config.root}; everything else is served by the web server`;
}

/**
 * Who runs the scripts, and who may connect to a unix socket: the web server's user needs write
 * permission on it (php-fpm's listen.owner / listen.mode advice).
 */
function userNote(config: Config, u: Upstream): string {
  const r = config.runAs;
  const who = r
    ? `# Lodestone runs scripts as ${r.user}:${r.group} (user/group), started as root.`
    : '# Lodestone runs scripts as the user that starts it: started as root, set user/group (--user).';
  if (u.kind !== 'unix') return who;
  const owner = config.socketOwner ?? (r ? { uid: r.uid, gid: r.gid } : null);
  const ids =
    owner === null
      ? 'the user that starts Lodestone'
      : r && owner.uid === r.uid && owner.gid === r.gid
        ? `${r.user}:${r.group}`
        : `uid ${owner.uid === -1 ? '(unchanged)' : owner.uid}, gid ${owner.gid === -1 ? '(unchanged)' : owner.gid}`;
  const mode = config.socketMode === null ? 'from the umask' : `0${config.socketMode.toString(8)}`;
  return `${who}\n# The socket belongs to ${ids} (socketOwner), mode ${mode} (socketMode): this server's user must be able to write to it.`;
}

function inheritedNote(u: Upstream): string {
  return u.kind === 'inherited' ? `Lodestone listens on an inherited socket (fd ${u.fd}): put that socket's address here` : '';
}

/**
 * The snippet for `server`.
 *
 * @example
 *   process.stdout.write(frontendConfig('nginx', loadConfig({ root: '/srv/www' })));
 */
export function frontendConfig(server: FrontEnd, config: Config): string {
  switch (server) {
    case 'nginx':
      return nginx(config);
    case 'lighttpd':
      return lighttpd(config);
    case 'apache':
      return apache(config);
    case 'caddy':
      return caddy(config);
  }
}

/**
 * An `upstream` block plus a `server` block, to be `include`d inside `http { }`. The `listen 80;`
 * line is the one to adapt (tests rewrite it to a free loopback port).
 */
function nginx(config: Config): string {
  const u = upstream(config);
  const address = token(u.kind === 'tcp' ? hostPort(u) : u.kind === 'unix' ? `unix:${u.path}` : 'unix:/run/lodestone.sock');
  const note = inheritedNote(u);
  const accel = config.files.accel.map(([dir, prefix]) => {
    const alias = prefix.endsWith('/') ? `${dir}/` : dir;
    return [
      `    location ${prefix} {`,
      `        internal;                   # only reachable through X-Accel-Redirect from Lodestone`,
      `        alias ${token(alias)};`,
      `    }`,
    ].join('\n');
  });
  if (accel.length === 0) {
    accel.push(
      '    # sendfile(): nginx needs files.accel (root -> internal URI prefix) to send files itself;\n' +
        '    # without it Lodestone answers such requests with 500 (LS_SENDFILE_NO_MAPPING).',
    );
  }
  const front = frontController(config);
  const location = front ? 'location /' : 'location ~ \\.(lua|js)$';
  // A regex location wins over plain prefix locations, so in scripts mode every .js under the
  // root would run in Lodestone: browser JavaScript needs a ^~ prefix (matched first).
  const scoping = front
    ? ''
    : `    index index.lua index.js index.html;

    # Every *.lua and *.js under this root runs in Lodestone; none is sent as a file. Browser
    # JavaScript (and anything else to send as is) goes under a ^~ prefix, which nginx matches
    # before the script location: adapt or add prefixes.
    location ^~ /assets/ {
    }

`;
  return `# Lodestone behind nginx (${modeComment(config)}).
${userNote(config, u)}
# Include this file inside http { }; adapt "listen".
upstream lodestone {
    server ${address};${note ? `  # ${note}` : ''}
    keepalive 16;                   # idle FastCGI connections nginx keeps open for reuse
}

server {
    listen 80;
    root ${token(config.root)};
${scoping ? '\n' + scoping : '\n'}    ${location} {
        include fastcgi_params;
        # As PHP-FPM setups send it: Lodestone runs (or, with --script, passes on) this file.
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        fastcgi_pass lodestone;
        fastcgi_keep_conn on;       # FCGI_KEEP_CONN: reuse connections (needs keepalive above)
    }

${accel.join('\n\n')}
}
`;
}

/** A fragment for lighttpd.conf (`include` it, or paste it): mod_fastcgi and one backend. */
function lighttpd(config: Config): string {
  const u = upstream(config);
  const where =
    u.kind === 'tcp'
      ? `"host" => ${quoted(u.host)}, "port" => ${u.port},`
      : u.kind === 'unix'
        ? `"socket" => ${quoted(u.path)},`
        : `"socket" => "/run/lodestone.sock",  # ${inheritedNote(u)}`;
  const backend = `( "lodestone" => (
        ${where}
        # lighttpd 1.4 opens a connection per request (no FCGI_KEEP_CONN): nothing to tune.
        "check-local" => "disable",      # the script is Lodestone's to find, not lighttpd's
        # sendfile(): lighttpd sends the file itself, only from these (real) directories
        "x-sendfile" => "enable",
        "x-sendfile-docroot" => ( ${config.files.roots.map(quoted).join(', ')} ),
    ) )`;
  if (frontController(config)) {
    return `# Lodestone behind lighttpd (${modeComment(config)}).
${userNote(config, u)}
# For lighttpd.conf. SCRIPT_FILENAME is server.document-root + path, as for PHP-FPM.
server.modules += ( "mod_fastcgi" )
fastcgi.server = ( "" => ${backend} )
`;
  }
  return `# Lodestone behind lighttpd (${modeComment(config)}).
${userNote(config, u)}
# For lighttpd.conf. Script URLs get the Lodestone root as document root, so SCRIPT_FILENAME
# (document root + path) names the file under it.
server.modules += ( "mod_fastcgi" )
$HTTP["url"] =~ "\\.(lua|js)$" {
    server.document-root = ${quoted(config.root)}
    fastcgi.server = ( "" => ${backend} )
}
`;
}

/** Apache httpd 2.4 with mod_proxy_fcgi: a VirtualHost (adapt `*:80`). */
function apache(config: Config): string {
  const u = upstream(config);
  // mod_proxy_fcgi's forms: fcgi://host:port/, or unix:/path|fcgi://localhost/ for a socket.
  const proxy = u.kind === 'tcp' ? `fcgi://${hostPort(u)}/` : 'fcgi://localhost/';
  const handler =
    u.kind === 'tcp' ? `proxy:${proxy}` : `proxy:unix:${u.kind === 'unix' ? u.path : '/run/lodestone.sock'}|${proxy}`;
  const note = inheritedNote(u);
  const route = frontController(config)
    ? `    <Location "/">
        SetHandler ${quoted(handler)}
    </Location>`
    : `    <FilesMatch "\\.(lua|js)$">
        SetHandler ${quoted(handler)}
    </FilesMatch>`;
  return `# Lodestone behind Apache httpd 2.4 (${modeComment(config)}).
${userNote(config, u)}
# Needs mod_proxy and mod_proxy_fcgi (a2enmod proxy_fcgi); sendfile() needs mod_xsendfile.
${note ? `# ${note}\n` : ''}<VirtualHost *:80>
    DocumentRoot ${quoted(config.root)}
    <Directory ${quoted(config.root)}>
        Require all granted
    </Directory>

    # enablereuse: keep FastCGI connections open (FCGI_KEEP_CONN) instead of one per request
    <Proxy "${proxy}" enablereuse=on max=16>
    </Proxy>

    # SetHandler (not ProxyPass) maps the URL to a file under DocumentRoot; GENERIC sends its path
    # as SCRIPT_FILENAME (the default, FPM, prefixes "proxy:fcgi://..." for PHP-FPM to strip)
    ProxyFCGIBackendType GENERIC
${route}

    <IfModule mod_xsendfile.c>
        # sendfile(): Apache sends the file itself, only from these directories
        XSendFile On
${config.files.roots.map((dir) => `        XSendFilePath ${quoted(dir)}`).join('\n')}
    </IfModule>
</VirtualHost>
`;
}

/** A Caddyfile site block (adapt `:80`). */
function caddy(config: Config): string {
  const u = upstream(config);
  const address = token(u.kind === 'tcp' ? hostPort(u) : `unix/${u.kind === 'unix' ? u.path : '/run/lodestone.sock'}`);
  const note = inheritedNote(u);
  const front = frontController(config);
  return `# Lodestone behind Caddy (${modeComment(config)}).
${userNote(config, u)}
# Caddy's FastCGI transport opens a connection per request (no FCGI_KEEP_CONN).
${note ? `# ${note}\n` : ''}:80 {
    root * ${token(config.root)}
${front ? '' : '    @scripts path *.lua *.js\n'}    reverse_proxy ${front ? '' : '@scripts '}${address} {
        # SCRIPT_FILENAME is root + path, as php_fastcgi sends it
        transport fastcgi {
            split .lua .js
        }
        # sendfile(): Lodestone answers X-Sendfile with a file's path; Caddy sends it itself
        @sendfile header X-Sendfile *
        handle_response @sendfile {
            root * /
            rewrite * {rp.header.X-Sendfile}
            file_server
        }
    }
${front ? '' : '    file_server\n'}}
`;
}
