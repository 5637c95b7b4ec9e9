/** Limits enforced by the FastCGI layer: the config's `[limits]`. */
import { defaults, positive, section, type ValueOf } from '../../config-schema.js';

/**
 * Defaults sized for a web server in front: params well above what nginx or lighttpd send for
 * large cookies (nginx's large_client_header_buffers allow 32 KiB), a body like PHP's
 * post_max_size, nginx's 60 s upstream timeouts, and an idle timeout longer than nginx's 60 s
 * upstream keepalive_timeout so that nginx, which knows when it will reuse a connection, is
 * the side that closes it (closing first races with nginx picking the connection).
 */
export const limitsSection = section({
  maxParamsBytes: positive(128 * 1024, 'bytes of FastCGI params per request; over: 431'),
  maxParams: positive(1000, 'number of params per request; over: 431'),
  maxBodyBytes: positive(8 * 1024 * 1024, 'request body bytes (also checked against `CONTENT_LENGTH` up front); over: 413'),
  /** Multiplexing. */
  maxRequestsPerConnection: positive(64, 'concurrent requests on one connection; over: `FCGI_OVERLOADED` (`FCGI_CANT_MPX_CONN` when 1)'),
  maxRequests: positive(1024, 'concurrent requests in the process, advertised as `FCGI_MAX_REQS`; over: `FCGI_OVERLOADED`'),
  maxConnections: positive(1024, 'open connections, advertised as `FCGI_MAX_CONNS`; over: the connection is closed'),
  /** Kept connections only: a request in flight has requestTimeoutMs. */
  idleTimeoutMs: positive(
    75_000,
    "a connection with no request in flight is closed after this (longer than nginx's 60 s upstream `keepalive_timeout`, so nginx closes first)",
  ),
  requestTimeoutMs: positive(
    60_000,
    'from `BEGIN_REQUEST`; params not complete by then: connection closed; else 504 (or the response is cut short if output started)',
  ),
});

export type Limits = ValueOf<typeof limitsSection>;

export const defaultLimits: Limits = defaults(limitsSection);
