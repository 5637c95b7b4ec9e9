/**
 * Log files: the error log (the Logger's lines) and the access log, appended to by every worker
 * (O_APPEND, whole lines per write, so workers' lines never interleave) and reopened by path on
 * SIGUSR2 so logrotate can rename them.
 */
import fs from 'node:fs';
import type { Handler } from '../fastcgi/server/connection.js';
import type { Sink } from '../log.js';
import type { Request } from '../fastcgi/server/request.js';
import type { Response } from '../fastcgi/server/response.js';

/** A file opened for appending, reopened by path on {@link reopenLogFiles}. */
export class LogFile {
  private fd: number;
  private failed = false;

  constructor(readonly path: string) {
    this.fd = fs.openSync(path, 'a', 0o640);
    open.add(this);
  }

  /**
   * Appends whole lines with one write(2). Synchronous on purpose, like nginx's logs: an append
   * to the page cache costs microseconds and keeps lines in order. A failing disk loses lines,
   * never the server; the first failure is said once on stderr.
   */
  write(text: string): void {
    try {
      fs.writeSync(this.fd, text);
      this.failed = false;
    } catch (err) {
      if (!this.failed) process.stderr.write(`lodestone: cannot write ${this.path}: ${(err as Error).message}\n`);
      this.failed = true;
    }
  }

  /** Opens the path again (after logrotate renamed the file) and closes the old descriptor. */
  reopen(): void {
    let fd: number;
    try {
      fd = fs.openSync(this.path, 'a', 0o640);
    } catch (err) {
      process.stderr.write(`lodestone: cannot reopen ${this.path}: ${(err as Error).message}\n`);
      return;
    }
    const old = this.fd;
    this.fd = fd;
    fs.closeSync(old);
  }

  close(): void {
    open.delete(this);
    fs.closeSync(this.fd);
  }
}

const open = new Set<LogFile>();
const flushers = new Set<() => void>();

/** Reopens every log file of this process (SIGUSR2; the manager forwards it to workers). */
export function reopenLogFiles(): void {
  for (const flush of flushers) flush();
  for (const file of open) file.reopen();
}

/** A Logger sink: `stderr`, or a file path. */
export function logSink(target: string): Sink {
  if (target === 'stderr') return (line) => process.stderr.write(line + '\n');
  const file = new LogFile(target);
  return (line) => file.write(line + '\n');
}

/** Lines buffered before a write: one write per event-loop turn, or sooner past this size. */
const FLUSH_BYTES = 64 * 1024;

/**
 * Wraps `inner` so that each request ends with one access-log line, nginx's `combined` format
 * built from the FastCGI params plus the request time and the script:
 *   REMOTE_ADDR - REMOTE_USER [time] "METHOD URI PROTOCOL" status bytes "referer" "agent" ms script
 * Lines are buffered and written once per event-loop turn, so a busy worker makes one write(2)
 * for many requests.
 */
export function accessLogged(inner: Handler, target: string): Handler {
  const file = target === 'stderr' ? null : new LogFile(target);
  let buffer = '';
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    if (buffer === '') return;
    const text = buffer;
    buffer = '';
    if (file) file.write(text);
    else process.stderr.write(text);
  };
  flushers.add(flush);
  const done = (req: Request, res: Response, started: number): void => {
    buffer += accessLine(req, res, performance.now() - started, new Date());
    if (buffer.length >= FLUSH_BYTES) flush();
    else if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
  return (req, res) => {
    const started = performance.now();
    const result = inner(req, res);
    if (result === undefined) return done(req, res, started);
    return result.finally(() => done(req, res, started));
  };
}

/** One access-log line (with its newline). */
export function accessLine(req: Request, res: Response, ms: number, now: Date): string {
  const p = (name: string): string => {
    const v = req.param(name);
    return v === undefined || v === '' ? '-' : escape(v);
  };
  return (
    `${p('REMOTE_ADDR')} - ${p('REMOTE_USER')} [${clf(now)}] "${p('REQUEST_METHOD')} ${p('REQUEST_URI')} ${p('SERVER_PROTOCOL')}" ` +
    `${res.status} ${res.bodyBytes} "${p('HTTP_REFERER')}" "${p('HTTP_USER_AGENT')}" ${ms.toFixed(3)} ${p('SCRIPT_FILENAME')}\n`
  );
}

// nginx's escape=default: '"', '\' and bytes outside printable ASCII become \xHH, so a client
// cannot forge lines or fields.
function escape(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/["\\\x00-\x1f\x7f-\uffff]/.test(value)) return value;
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    out += byte === 0x22 || byte === 0x5c || byte < 0x20 || byte > 0x7e ? `\\x${byte.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(byte);
  }
  return out;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** The Common Log Format time, in UTC: 22/Nov/2026:10:11:12 +0000. */
function clf(d: Date): string {
  const two = (n: number): string => (n < 10 ? '0' : '') + n;
  return `${two(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} +0000`;
}
