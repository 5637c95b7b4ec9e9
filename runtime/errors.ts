/**
 * Stable error and log codes. Every line Lodestone logs about a refused request, a closed
 * connection or a bad configuration carries one of these codes, so operators can grep and alert
 * on them. Codes are never reused or renamed; `test/unit/errors.test.ts` fails when one is
 * missing from the README's table.
 */
export const codes = {
  LS_CONFIG_INVALID: 'a configuration field or CLI flag has a bad value',
  LS_LISTEN_FAILED: 'the listening socket could not be opened',
  LS_RUNNING_AS_ROOT: 'started as root with no user set: scripts run as root (set user/group, or --user, to run them unprivileged)',
  LS_PROTOCOL_VERSION: 'a record had a FastCGI version other than 1; connection closed',
  LS_RECORD_MALFORMED: 'a record was malformed (wrong fixed length, unexpected type); connection closed',
  LS_PARAMS_MALFORMED: 'a name-value pair ran past the end of the PARAMS stream; connection closed',
  LS_PARAMS_TOO_LARGE: 'the PARAMS stream exceeded limits.maxParamsBytes; request refused with 431',
  LS_TOO_MANY_PARAMS: 'the request had more than limits.maxParams parameters; request refused with 431',
  LS_BODY_TOO_LARGE: 'the request body exceeded limits.maxBodyBytes; request refused with 413',
  LS_OVERLOADED: 'a request was refused with FCGI_OVERLOADED (limits.maxRequests or maxRequestsPerConnection)',
  LS_UNKNOWN_ROLE: 'BEGIN_REQUEST named a role other than RESPONDER, AUTHORIZER or FILTER',
  LS_CONNECTION_LIMIT: 'a connection was dropped because limits.maxConnections were open',
  LS_PEER_REFUSED: 'a TCP peer not in FCGI_WEB_SERVER_ADDRS was refused',
  LS_IDLE_TIMEOUT: 'a connection without an active request was closed after limits.idleTimeoutMs',
  LS_REQUEST_TIMEOUT: 'a request ran longer than limits.requestTimeoutMs; 504 if nothing was sent yet',
  LS_REQUEST_ABORTED: 'the web server aborted a request (ABORT_REQUEST or closed socket); nobody is answered (499, as nginx logs it)',
  LS_HANDLER_FAILED: 'the request handler threw; the client got a 500',
  LS_SOCKET_ERROR: 'a socket error on a connection to the web server',
  LS_SCRIPT_NOT_FOUND: 'SCRIPT_FILENAME names no file; 404',
  LS_SCRIPT_FORBIDDEN: 'SCRIPT_FILENAME is outside the root, not .lua/.js, or not a regular file; 403',
  LS_SCRIPT_COMPILE: 'a script does not compile; 500, with file:line on FCGI_STDERR',
  LS_SCRIPT_ERROR: 'a script raised an error; 500, with file:line on FCGI_STDERR',
  LS_SCRIPT_LIMIT: 'a script hit a limit (CPU, memory, wall time, output); 500',
  LS_SCRIPT_TOO_LARGE: 'SCRIPT_FILENAME is larger than scriptCache.maxScriptBytes; refused before reading it, 500',
  LS_FILE_FORBIDDEN: 'stat(), sendfile() or stat-accel named a path outside files.roots, a directory, or (sendfile, stat-accel) not a regular file; 403',
  LS_FILE_NOT_FOUND: 'sendfile() or stat-accel named a missing file; 404',
  LS_SENDFILE_NO_MAPPING: 'X-Accel-Redirect was needed but no files.accel entry covers the file; 500',
  LS_BACKEND_UNAVAILABLE: 'no server of a backend pool could be reached (refused, connect timeout, closed, disabled); 502',
  LS_BACKEND_TIMEOUT: 'a backend did not answer within its pool\'s responseTimeoutMs; 504',
  LS_BACKEND_PROTOCOL: 'a backend sent a malformed FastCGI stream or CGI header block; its connection closed, 502',
  LS_BACKEND_DISABLED: 'a backend server failed and is left out for its pool\'s disableTimeMs',
  LS_BACKEND_STDERR: 'a backend wrote to FCGI_STDERR (like nginx\'s "FastCGI sent in stderr")',
  LS_CACHE_UNAVAILABLE: 'the shared cache (Redis) cannot be reached or timed out; cache calls miss until it is back',
  LS_SLOW_REQUEST: 'a request went past slowRequestMs: logged while its script still runs (where it is: its stack, or the host call it waits in) and when it ends (script, URI and total time)',
  LS_CACHE_RECOVERED: 'the shared cache is reachable again',
  LS_WATCHDOG: 'a worker\'s event loop was stuck longer than watchdogMs (a script in an uninterruptible call); the worker was killed and replaced',
  LS_WORKER_DIED: 'a worker exited unexpectedly (a crash, a kill, the watchdog); the manager forks a new one',
  LS_WORKER_CRASH_LOOP: 'workers exited unexpectedly more often than there are workers within 10 s; each next fork waits (1 s, doubling to 30 s)',
  LS_RELOAD_IN_PROGRESS: 'a reload signal came while a reload was under way; no second reload was started',
  LS_FORCED_STOP: 'a second stop signal during a graceful stop: the requests in flight were cut (workers killed, or the process exited)',
  LS_SOCKET_NOT_REMOVED: 'the unix socket file could not be removed on stop (the next start removes a stale one)',
  LS_CACHE_RECORD_INVALID: 'a cached response record does not decode (corrupt, or written by another version); the call misses',
  LS_CACHE_COMMAND_FAILED: 'Redis refused a cache command (OOM, WRONGTYPE, NOPERM, a read-only replica) or replied unexpectedly; the call misses',
  LS_SENDFILE_UNSUPPORTED: 'the development server got X-Accel-Redirect, which only nginx follows (set files.sendfile to auto or x-sendfile); 502',
  LS_FETCH_DENIED: 'a script\'s fetch() named an origin (or was redirected to one) not in fetch.allow; refused before any connection, an error the script can catch',
  LS_FETCH_TIMEOUT: 'a script\'s fetch() took longer than its timeoutMs (fetch.timeoutMs by default); an error the script can catch',
  LS_FETCH_TOO_LARGE: 'a response to a script\'s fetch() was larger than fetch.maxResponseBytes; reading stopped, an error the script can catch',
  LS_FETCH_FAILED: 'a script\'s fetch() could not get a response (connection refused or reset, DNS, TLS, a malformed response); an error the script can catch',
  LS_FETCH_REDIRECTS: 'a script\'s fetch() was redirected more than fetch.maxRedirects times; an error the script can catch',
} as const;

/** A stable code from {@link codes}. */
export type Code = keyof typeof codes;

/**
 * The HTTP status Lodestone answers with when it refuses or fails a request itself, by the code
 * it logs: the one place a code is paired with a status (the README's table says the same).
 * 499 is nginx's "client closed request": nobody receives it, it is what a backend request that
 * the client abandoned reports (`BackendError.status`).
 */
export const httpStatus = {
  LS_PARAMS_TOO_LARGE: 431,
  LS_TOO_MANY_PARAMS: 431,
  LS_BODY_TOO_LARGE: 413,
  LS_REQUEST_TIMEOUT: 504,
  LS_REQUEST_ABORTED: 499,
  LS_HANDLER_FAILED: 500,
  LS_SCRIPT_NOT_FOUND: 404,
  LS_SCRIPT_FORBIDDEN: 403,
  LS_SCRIPT_COMPILE: 500,
  LS_SCRIPT_ERROR: 500,
  LS_SCRIPT_LIMIT: 500,
  LS_SCRIPT_TOO_LARGE: 500,
  LS_FILE_FORBIDDEN: 403,
  LS_FILE_NOT_FOUND: 404,
  LS_SENDFILE_NO_MAPPING: 500,
  LS_SENDFILE_UNSUPPORTED: 502,
  LS_BACKEND_UNAVAILABLE: 502,
  LS_BACKEND_TIMEOUT: 504,
  LS_BACKEND_PROTOCOL: 502,
} as const satisfies Partial<Record<Code, number>>;

/** A code Lodestone answers a request with; its status is {@link httpStatus}`[code]`. */
export type AnswerCode = keyof typeof httpStatus;

/** An error that carries a stable {@link Code}. */
export class LodestoneError extends Error {
  readonly code: Code;

  constructor(code: Code, message: string = codes[code]) {
    super(message);
    this.name = 'LodestoneError';
    this.code = code;
  }
}
