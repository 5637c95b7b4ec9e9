/**
 * The output side: the response status and headers, the body (write, flush, end), raw CGI mode
 * (lua-fastcgi-magnet scripts print their own header block), emit() of a whole response value,
 * and log() to the web server's error log with its UTF-8 cutting helpers. Apart from the
 * request view because this is what a script changes, bounded by the output and log limits.
 */
import { parseCgiHead } from '../../cgi.js';
import type { HostCore } from './core.js';
import { sendfile } from './files.js';
import { bodyFile, checkResponse, type ScriptResponse } from './script-response.js';

/** Response content type when a script sets none (mod_magnet and PHP do the same). */
export const DEFAULT_CONTENT_TYPE = 'text/html; charset=utf-8';

/** Sets the response status; a TypeError for anything but an integer 100-999. */
export function setStatus(host: HostCore, code: number): void {
  if (!Number.isInteger(code) || code < 100 || code > 999) throw new TypeError(`invalid status ${String(code)}`);
  host.response.status = code;
}

/** Sets a response header; null or undefined removes it. Throws TypeError on CR/LF. */
export function setHeader(host: HostCore, name: string, value: string | number | null | undefined): void {
  if (value === null || value === undefined) host.response.removeHeader(name);
  else host.response.setHeader(name, value);
}

/**
 * Adds a header line, keeping earlier ones of the same name (Set-Cookie). Throws TypeError on
 * CR/LF, and an Error once the headers are sent.
 */
export function addHeader(host: HostCore, name: string, value: string): void {
  host.response.addHeader(name, value);
}

/** Appends to the body; past limits.outputBytes the run is stopped. */
export function write(host: HostCore, chunk: string | Uint8Array): void {
  const bytes = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
  host.outputBytes += bytes;
  if (host.outputBytes > host.limits.outputBytes) throw host.abort('limit', `output over ${host.limits.outputBytes} bytes`);
  if (host.rawHead) host.rawHead.push(typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk));
  else host.response.write(chunk);
}

/**
 * Ends the script's output: in raw mode, applies the CGI header block it printed. A missing
 * or malformed block is a script error (recorded in host.fatal).
 */
export function endOutput(host: HostCore): void {
  if (host.rawHead && !applyRawHead(host)) {
    host.abort('runtime', 'raw output mode: the script printed no complete CGI header block');
  }
}

// Moves a complete printed header block into the response; false while it is incomplete.
function applyRawHead(host: HostCore): boolean {
  const printed = Buffer.concat(host.rawHead!);
  const head = parseCgiHead(printed);
  if (head === 'incomplete') return false;
  if ('error' in head) {
    host.abort('runtime', `raw output mode: ${head.error}`);
    return true;
  }
  host.rawHead = null;
  host.response.status = head.status;
  for (const [name, value] of head.headers) host.response.addHeader(name, value);
  if (head.bodyOffset < printed.length) host.response.write(printed.subarray(head.bodyOffset));
  return true;
}

/** Sends the headers and body so far (streaming), adding the default Content-Type if unset. */
export function flush(host: HostCore): void {
  // In raw mode nothing can be sent before the script has printed its whole header block.
  if (host.rawHead && !applyRawHead(host)) return;
  if (host.fatal) return;
  defaultContentType(host);
  host.response.flush();
}

/**
 * Ends a run that succeeded: a returned status applies (unless headers were already sent),
 * the default Content-Type is added if unset, and the response is sent.
 */
export function end(host: HostCore, status: number | undefined): void {
  if (status !== undefined && !host.response.headersSent) setStatus(host, status);
  defaultContentType(host);
  host.response.end();
}

function defaultContentType(host: HostCore): void {
  if (!host.response.headersSent && host.response.getHeader('Content-Type') === undefined) {
    host.response.setHeader('Content-Type', DEFAULT_CONTENT_TYPE);
  }
}

/**
 * emit(response): the response a script got from pass() or the cache becomes this request's:
 * its status, its headers (replacing any of the same name set so far) and its body.
 */
export function emit(host: HostCore, value: ScriptResponse): void | Promise<never> {
  const checked = checkResponse(value, false);
  if (host.response.headersSent) throw new Error('emit() after flush(): the headers are already sent');
  const { headers, file } = bodyFile(checked);
  setStatus(host, checked.status);
  const seen = new Set<string>();
  for (const [name, v] of headers) {
    const lower = name.toLowerCase();
    if (lower === 'status') continue;
    if (seen.has(lower)) host.response.addHeader(name, v);
    else {
      seen.add(lower);
      host.response.setHeader(name, v);
    }
  }
  // A body in a file: the web server sends it (and handles Range); the run ends there.
  if (file !== undefined) return sendfile(host, file);
  write(host, checked.body);
}

/**
 * How many bytes of log text the next log() line may keep: the per-line bound, or less when
 * the run's log budget is nearly spent; 0 once it is spent. Engines cut a long line to this
 * inside the VM, so a huge string is never copied out only to be dropped.
 */
export function logRoom(host: HostCore): number {
  if (host.logDropping) return 0;
  return Math.max(0, Math.min(host.limits.logLineBytes, host.limits.logBytes - host.logged));
}

/**
 * A line for the web server's error log (FCGI_STDERR), bounded by limits.logLineBytes per line
 * and limits.logBytes per run. A longer line is cut (at a UTF-8 character boundary) and ends
 * with a marker saying how much was cut; `cut` is what the engine already cut off before the
 * call (see {@link logRoom}), in `unit`s. The first line past the run's budget is replaced
 * by one marker; later lines are dropped silently. Never stops the run.
 */
export function log(host: HostCore, message: string, cut = 0, unit: 'bytes' | 'characters' = 'bytes'): void {
  if (host.logDropping) return;
  const room = logRoom(host);
  if (room === 0) {
    host.logDropping = true;
    host.response.log(`lodestone: log budget of this run spent (scriptLimits.logBytes = ${host.limits.logBytes}): this and later log lines dropped`);
    return;
  }
  let line = message;
  let bytes = Buffer.byteLength(line);
  if (bytes > room) {
    const kept = utf8Prefix(line, room);
    cut += unit === 'bytes' ? bytes - kept.length : line.length - kept.text.length;
    line = kept.text;
    bytes = kept.length;
  }
  host.logged += bytes;
  if (cut > 0) line += ` [lodestone: log line cut, ${cut} more ${unit} not logged]`;
  host.response.log(line);
}

/**
 * The longest prefix of `text` whose UTF-8 form fits in `max` bytes, never splitting a character
 * (a surrogate pair is one character); `length` is its size in bytes.
 */
export function utf8Prefix(text: string, max: number): { text: string; length: number } {
  // Every UTF-16 unit encodes to at least one byte, so the prefix lies within the first `max`
  // units; a high surrogate cut from its pair there would encode as U+FFFD, so it goes too.
  let units = Math.min(text.length, max);
  if (units < text.length && units > 0 && (text.charCodeAt(units - 1) & 0xfc00) === 0xd800) units--;
  const head = Buffer.from(units < text.length ? text.slice(0, units) : text, 'utf8');
  if (head.length <= max) return { text: head.toString('utf8'), length: head.length };
  const end = utf8Boundary(head, max);
  return { text: head.subarray(0, end).toString('utf8'), length: end };
}

/**
 * Where UTF-8 `bytes` can be cut to at most `max` bytes without splitting a character: backs up
 * over continuation bytes (10xxxxxx) to the start of the character that did not fit.
 */
export function utf8Boundary(bytes: Uint8Array, max: number): number {
  let end = Math.min(max, bytes.length);
  while (end > 0 && end < bytes.length && (bytes[end]! & 0xc0) === 0x80) end--;
  return end;
}
