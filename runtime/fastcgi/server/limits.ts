/** Limits enforced by the FastCGI layer. All are configurable under `limits` in the config. */
export interface Limits {
  /** Bytes of PARAMS per request (all name-value pairs together). Over: 431. */
  readonly maxParamsBytes: number;
  /** Number of params per request. Over: 431. */
  readonly maxParams: number;
  /** Bytes of request body (STDIN). Over: 413. */
  readonly maxBodyBytes: number;
  /** Concurrent requests on one connection (multiplexing). Over: FCGI_OVERLOADED. */
  readonly maxRequestsPerConnection: number;
  /** Concurrent requests in this process, advertised as FCGI_MAX_REQS. Over: FCGI_OVERLOADED. */
  readonly maxRequests: number;
  /** Open connections in this process, advertised as FCGI_MAX_CONNS. Over: dropped. */
  readonly maxConnections: number;
  /** A connection with no request in flight is closed after this long (kept connections). */
  readonly idleTimeoutMs: number;
  /** A request is ended after this long, from BEGIN_REQUEST: 504 if no output was sent yet. */
  readonly requestTimeoutMs: number;
}

/**
 * Defaults sized for a web server in front: params well above what nginx or lighttpd send for
 * large cookies (nginx's large_client_header_buffers allow 32 KiB), a body like PHP's
 * post_max_size, nginx's 60 s upstream timeouts, and an idle timeout longer than nginx's 60 s
 * upstream keepalive_timeout so that nginx, which knows when it will reuse a connection, is
 * the side that closes it (closing first races with nginx picking the connection).
 */
export const defaultLimits: Limits = Object.freeze({
  maxParamsBytes: 128 * 1024,
  maxParams: 1000,
  maxBodyBytes: 8 * 1024 * 1024,
  maxRequestsPerConnection: 64,
  maxRequests: 1024,
  maxConnections: 1024,
  idleTimeoutMs: 75_000,
  requestTimeoutMs: 60_000,
});
