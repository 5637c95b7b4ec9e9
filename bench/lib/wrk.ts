/** Runs wrk and parses its report (wrk 4.x text output with --latency). */
import { start, stop, type Managed } from './procs.js';

export interface WrkResult {
  requests: number;
  rps: number;
  /** Latency percentiles in milliseconds. */
  p50: number;
  p99: number;
  /** wrk's "Socket errors" line; absent from the report means all zero. */
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  /** wrk's "Non-2xx or 3xx responses" count. */
  non2xx: number;
  /** The report as wrk printed it. */
  raw: string;
}

export interface WrkOptions {
  url: string;
  connections: number;
  seconds: number;
  /** CPU list to pin wrk to. */
  cpus: string;
  logFile: string;
  /** A wrk Lua script (`-s`), e.g. to vary the URL per request. */
  script?: string;
  /** Called with the running wrk, e.g. to sample CPU use while it runs. */
  onStart?: (m: Managed) => void;
}

const UNITS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A wrk duration such as "812.00us", "1.23ms" or "2.01s", in milliseconds. */
export function parseDuration(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text);
  if (!m) throw new Error(`unexpected wrk duration ${JSON.stringify(text)}`);
  return Number(m[1]) * UNITS[m[2]!]!;
}

/** Parses wrk's report; throws when a field the benchmark needs is missing. */
export function parseWrk(raw: string): WrkResult {
  const need = (re: RegExp, what: string): RegExpExecArray => {
    const m = re.exec(raw);
    if (!m) throw new Error(`wrk output has no ${what}:\n${raw}`);
    return m;
  };
  const requests = Number(need(/^\s*(\d+) requests in /m, 'request count')[1]);
  const rps = Number(need(/^Requests\/sec:\s*([\d.]+)/m, 'Requests/sec')[1]);
  const p50 = parseDuration(need(/^\s*50%\s+(\S+)/m, '50% latency (was --latency given?)')[1]!);
  const p99 = parseDuration(need(/^\s*99%\s+(\S+)/m, '99% latency')[1]!);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(raw);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(raw);
  return {
    requests,
    rps,
    p50,
    p99,
    socketErrors: {
      connect: Number(sock?.[1] ?? 0),
      read: Number(sock?.[2] ?? 0),
      write: Number(sock?.[3] ?? 0),
      timeout: Number(sock?.[4] ?? 0),
    },
    non2xx: Number(non2xx?.[1] ?? 0),
    raw,
  };
}

/** The problems in a result that make a measurement invalid (empty when it is clean). */
export function wrkProblems(r: WrkResult): string[] {
  const out: string[] = [];
  const s = r.socketErrors;
  if (s.connect + s.read + s.write + s.timeout > 0) {
    out.push(`socket errors: connect ${s.connect}, read ${s.read}, write ${s.write}, timeout ${s.timeout}`);
  }
  if (r.non2xx > 0) out.push(`${r.non2xx} non-2xx/3xx responses`);
  if (r.requests === 0) out.push('no requests completed');
  return out;
}

/** Runs `wrk -t1 -cN -dS --latency [-s SCRIPT] URL` pinned to `cpus` and parses its report. */
export async function runWrk(opts: WrkOptions): Promise<WrkResult> {
  const args = ['-t1', `-c${opts.connections}`, `-d${opts.seconds}s`, '--latency', ...(opts.script ? ['-s', opts.script] : []), opts.url];
  const m = start('wrk', 'wrk', args, opts.logFile, { cpus: opts.cpus, captureStdout: true });
  let out = '';
  m.child.stdout!.setEncoding('utf8');
  m.child.stdout!.on('data', (s: string) => (out += s));
  try {
    opts.onStart?.(m);
    // wrk stops itself after -d; the margin only matters if it hangs.
    const timeout = new Promise<'timeout'>((resolve) => setTimeout(resolve, (opts.seconds + 30) * 1000, 'timeout').unref());
    if ((await Promise.race([m.exited, timeout])) === 'timeout') throw new Error(`wrk did not finish:\n${out}`);
    // 'exit' can come before the last stdout chunk; 'close' means stdio is drained.
    if (m.child.stdout!.readable) await new Promise((resolve) => m.child.stdout!.once('close', resolve));
  } finally {
    await stop(m, 'SIGKILL', 0);
  }
  if (m.exitInfo() !== 'code 0') throw new Error(`wrk failed (${m.exitInfo() ?? '?'}):\n${out}`);
  return parseWrk(out);
}
