/**
 * lighttpd mod_magnet's names for what Lodestone gives: the request attributes
 * (`lighty.r.req_attr[key]`, `lighty.env[key]`) mapped to what a FastCGI request carries, and
 * lighty.stat()'s field names beside stat()'s. The same for every Lua engine, so it lives
 * beside them.
 */
import type { ScriptHost } from './host.js';

/** The names of a file table's size, mtime and content type (the other fields are shared). */
export interface FileFields {
  readonly size: string;
  readonly mtime: string;
  readonly contentType: string;
}

/** stat()'s names. */
export const STAT_FIELDS: FileFields = { size: 'size', mtime: 'mtime', contentType: 'content_type' };

/** mod_magnet's names, in lighty.stat()'s table. */
export const LIGHTY_FIELDS: FileFields = { size: 'st_size', mtime: 'st_mtime', contentType: 'content-type' };

/** mod_magnet request attributes mapped to what a FastCGI request carries. */
export function attribute(host: ScriptHost, key: string): string | number | undefined {
  const param = (name: string): string | undefined => host.request.param(name);
  switch (key) {
    case 'request.method': return host.method;
    case 'request.uri':
    case 'request.orig-uri': return host.uri;
    case 'request.path-info': return param('PATH_INFO');
    case 'request.protocol': return param('SERVER_PROTOCOL');
    case 'request.server-name': return param('SERVER_NAME');
    case 'request.remote-addr':
    case 'request.remote-ip': return host.remoteAddr;
    case 'request.remote-port': return param('REMOTE_PORT');
    case 'request.server-addr': return param('SERVER_ADDR');
    case 'request.server-port': return param('SERVER_PORT');
    case 'uri.scheme': return param('REQUEST_SCHEME') ?? (param('HTTPS') === 'on' ? 'https' : 'http');
    case 'uri.authority': return param('HTTP_HOST') ?? param('SERVER_NAME');
    case 'uri.path': return host.path;
    case 'uri.path-raw': return host.uri.split('?', 1)[0];
    case 'uri.query': return host.queryString;
    case 'physical.path': return host.scriptFilename;
    case 'physical.doc-root':
    case 'physical.basedir': return host.documentRoot;
    case 'physical.rel-path': return param('SCRIPT_NAME');
    case 'response.http-status': return host.status;
    default: return undefined;
  }
}

