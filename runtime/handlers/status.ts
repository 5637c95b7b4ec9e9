/**
 * The status page, like php-fpm's `pm.status_path`: a request whose SCRIPT_NAME is the
 * configured path is answered with the server's counters instead of running a script, as text
 * (default), JSON (`?json`) or Prometheus/OpenMetrics text (`?openmetrics`, `?prometheus`).
 *
 * Under the process manager the worker that gets the request asks the primary for every
 * worker's {@link StatusSnapshot} (over IPC) and shows their sum.
 */
import type { Handler, Stats } from '../fastcgi/server/connection.js';
import type { Logger } from '../log.js';
import type { Request } from '../fastcgi/server/request.js';

/** Counters the script pipeline adds to (limit hits, errors); see createScriptHandler. */
export interface RunCounters {
  limitHits: number;
  scriptErrors: number;
}

/** What the status page shows, for one process (or summed over workers). */
export interface StatusSnapshot {
  readonly pool: string;
  readonly processManager: string;
  /** ms since the epoch. */
  readonly startTime: number;
  readonly acceptedRequests: number;
  readonly activeRequests: number;
  readonly maxActiveRequests: number;
  readonly slowRequests: number;
  readonly limitHits: number;
  readonly scriptErrors: number;
  readonly connectionsAccepted: number;
  readonly protocolErrors: number;
  /** Requests in the kernel's accept queue; null: not known (Node does not expose it). */
  readonly listenQueue: number | null;
  readonly workers: ReadonlyArray<{ readonly pid: number; readonly requests: number; readonly active: number }>;
}

export interface StatusOptions {
  /** SCRIPT_NAME that gets the status page, e.g. "/status"; null: no page. */
  readonly path: string | null;
  /**
   * A request that takes longer than this (ms) is counted and logged as slow when it ends; 0:
   * never. (The line written while it is still running is the SlowLog's, slowlog.ts.)
   */
  readonly slowMs: number;
  readonly log: Logger;
  /** The handler for every other request. */
  readonly inner: Handler;
  /** The FastCGI server's counters and requests in flight. */
  readonly server: () => { readonly stats: Stats; readonly activeRequests: number };
  readonly counters: RunCounters;
  readonly pool?: string;
  /**
   * Under the process manager: every worker's snapshot, asked of the primary; the page shows
   * their sum. Absent: this process alone.
   */
  readonly gather?: () => Promise<StatusSnapshot[]>;
  /** Receives this process's snapshot function (the manager's workers answer the primary with it). */
  readonly provide?: (snapshot: () => StatusSnapshot) => void;
}

/**
 * Wraps `inner`: serves the status page at `path`, and times every other request (slow ones
 * are counted) and tracks the most requests in flight at once.
 *
 * @example
 *   const handler = createStatusHandler({ path: '/status', slowMs: 1000, inner, server: () => server, counters });
 */
export function createStatusHandler(options: StatusOptions): Handler {
  const { path, slowMs, inner, server, counters, log } = options;
  const startTime = Date.now();
  let maxActive = 0;
  let slow = 0;
  const snapshot = (): StatusSnapshot => {
    const s = server();
    return {
      pool: options.pool ?? 'lodestone',
      processManager: options.gather ? 'static' : 'single',
      startTime,
      acceptedRequests: s.stats.requestsAccepted,
      activeRequests: s.activeRequests,
      maxActiveRequests: Math.max(maxActive, s.activeRequests),
      slowRequests: slow,
      limitHits: counters.limitHits,
      scriptErrors: counters.scriptErrors,
      connectionsAccepted: s.stats.connectionsAccepted,
      protocolErrors: s.stats.protocolErrors,
      listenQueue: null,
      workers: [{ pid: process.pid, requests: s.stats.requestsAccepted, active: s.activeRequests }],
    };
  };
  options.provide?.(snapshot);
  return (req, res) => {
    const active = server().activeRequests;
    if (active > maxActive) maxActive = active;
    if (path !== null && req.param('SCRIPT_NAME') === path) {
      const query = req.param('QUERY_STRING') ?? '';
      const format = /(^|&)json(=|&|$)/.test(query) ? 'json' : /(^|&)(openmetrics|prometheus)(=|&|$)/.test(query) ? 'metrics' : 'text';
      const answer = (s: StatusSnapshot): void => {
        res.setHeader('Content-Type', format === 'json' ? 'application/json' : format === 'metrics' ? 'text/plain; version=0.0.4' : 'text/plain');
        res.setHeader('Cache-Control', 'no-store');
        res.end(render(s, format));
      };
      const own = snapshot();
      if (!options.gather) return answer(own);
      return options.gather().then(
        (all) => answer(sum(all)),
        // The primary did not answer (it is stopping): this worker's numbers are still true.
        () => answer(own),
      );
    }
    if (slowMs === 0) return inner(req, res);
    const started = performance.now();
    const done = inner(req, res);
    if (done === undefined) return timed(req, started);
    return done.finally(() => timed(req, started));
  };

  // The request's total time, once it ended: where its script was while slow is the line the
  // SlowLog wrote then (slowlog.ts), which names the request by the same conn and request.
  function timed(req: Request, started: number): void {
    const ms = performance.now() - started;
    if (ms <= slowMs) return;
    slow++;
    log.warn('LS_SLOW_REQUEST', 'slow request', {
      conn: req.connection.id,
      request: req.id,
      script: req.param('SCRIPT_FILENAME'),
      uri: req.param('REQUEST_URI'),
      ms: Math.round(ms),
    });
  }
}

/**
 * Sums worker snapshots into one page: counters and gauges add up, the start time is the
 * earliest, the worker rows are listed. (The max of requests in flight is the sum of each
 * worker's max, an upper bound: the workers' peaks need not have coincided.)
 */
export function sum(all: readonly StatusSnapshot[]): StatusSnapshot {
  const first = all[0]!;
  const add = (f: (s: StatusSnapshot) => number): number => all.reduce((n, s) => n + f(s), 0);
  return {
    pool: first.pool,
    processManager: first.processManager,
    startTime: Math.min(...all.map((s) => s.startTime)),
    acceptedRequests: add((s) => s.acceptedRequests),
    activeRequests: add((s) => s.activeRequests),
    maxActiveRequests: add((s) => s.maxActiveRequests),
    slowRequests: add((s) => s.slowRequests),
    limitHits: add((s) => s.limitHits),
    scriptErrors: add((s) => s.scriptErrors),
    connectionsAccepted: add((s) => s.connectionsAccepted),
    protocolErrors: add((s) => s.protocolErrors),
    listenQueue: null,
    workers: all.flatMap((s) => s.workers).sort((a, b) => a.pid - b.pid),
  };
}

/** The snapshot in one of the page's formats. */
export function render(s: StatusSnapshot, format: 'text' | 'json' | 'metrics'): string {
  const since = Math.max(0, Math.floor((Date.now() - s.startTime) / 1000));
  if (format === 'json') {
    return JSON.stringify({
      pool: s.pool,
      'process manager': s.processManager,
      'start time': Math.floor(s.startTime / 1000),
      'start since': since,
      'accepted requests': s.acceptedRequests,
      'active requests': s.activeRequests,
      'max active requests': s.maxActiveRequests,
      'slow requests': s.slowRequests,
      'limit hits': s.limitHits,
      'script errors': s.scriptErrors,
      'accepted connections': s.connectionsAccepted,
      'protocol errors': s.protocolErrors,
      'listen queue': s.listenQueue,
      workers: s.workers.map((w) => ({ pid: w.pid, requests: w.requests, active: w.active })),
    });
  }
  if (format === 'metrics') {
    const lines: string[] = [];
    const metric = (name: string, type: 'counter' | 'gauge', help: string, value: number, labels = ''): void => {
      lines.push(`# HELP lodestone_${name} ${help}`, `# TYPE lodestone_${name} ${type}`, `lodestone_${name}{pool="${s.pool}"${labels}} ${value}`);
    };
    metric('start_since_seconds', 'gauge', 'Seconds since the server started.', since);
    metric('accepted_requests_total', 'counter', 'Requests accepted.', s.acceptedRequests);
    metric('active_requests', 'gauge', 'Requests in flight.', s.activeRequests);
    metric('max_active_requests', 'gauge', 'Most requests in flight at once since start.', s.maxActiveRequests);
    metric('slow_requests_total', 'counter', 'Requests slower than the slow threshold.', s.slowRequests);
    metric('limit_hits_total', 'counter', 'Script runs stopped by a limit.', s.limitHits);
    metric('script_errors_total', 'counter', 'Scripts that failed to compile or raised an error.', s.scriptErrors);
    metric('accepted_connections_total', 'counter', 'FastCGI connections accepted.', s.connectionsAccepted);
    metric('protocol_errors_total', 'counter', 'Connections closed for malformed records.', s.protocolErrors);
    lines.push('# HELP lodestone_worker_requests_total Requests accepted per worker.', '# TYPE lodestone_worker_requests_total counter');
    for (const w of s.workers) lines.push(`lodestone_worker_requests_total{pool="${s.pool}",pid="${w.pid}"} ${w.requests}`);
    return lines.join('\n') + '\n';
  }
  const rows: Array<[string, string | number]> = [
    ['pool', s.pool],
    ['process manager', s.processManager],
    ['start time', new Date(s.startTime).toISOString()],
    ['start since', since],
    ['accepted requests', s.acceptedRequests],
    ['active requests', s.activeRequests],
    ['max active requests', s.maxActiveRequests],
    ['slow requests', s.slowRequests],
    ['limit hits', s.limitHits],
    ['script errors', s.scriptErrors],
    ['accepted connections', s.connectionsAccepted],
    ['protocol errors', s.protocolErrors],
    ['listen queue', s.listenQueue ?? '-'],
  ];
  for (const w of s.workers) rows.push([`worker ${w.pid}`, `${w.requests} requests, ${w.active} active`]);
  return rows.map(([k, v]) => `${`${k}:`.padEnd(22)}${v}`).join('\n') + '\n';
}
