/**
 * File access: stat() and sendfile(), confined to files.roots by the server's Files service.
 * Separate because it is the one capability that refuses a script outright (403/404 ends the
 * run) and hands the response body to the web server (an escalation header) or to a range
 * sent after the run.
 */
import { httpStatus, type AnswerCode } from '../../errors.js';
import type { FileInfo, Files, SendOptions } from '../../files/files.js';
import type { ExitRest, ScriptError } from '../script-error.js';
import type { HostCore } from './core.js';

function fileAccess(host: HostCore): Files {
  if (!host.services.files) throw new Error('file access is not configured on this server');
  return host.services.files;
}

/** Ends the run with the error page of `code`'s status, logged with `code` (a refused file access). */
function refuse(host: HostCore, code: AnswerCode, message: string): ScriptError {
  return host.exit(httpStatus[code], true, code, message);
}

/**
 * stat(path): null when missing. A path outside the configured roots ends the run with 403
 * (a script probing the filesystem is refused, not answered).
 */
export async function stat(host: HostCore, path: string): Promise<FileInfo | null> {
  const found = await host.guard(fileAccess(host).lookup(path), 'stat()');
  if (found.kind === 'refused') throw refuse(host, 'LS_FILE_FORBIDDEN', `stat(${JSON.stringify(path)}): ${found.reason}`);
  return found.kind === 'missing' ? null : found.info;
}

/**
 * sendfile(path[, offset, length]): ends the run with the web server sending the file (an
 * escalation header), or with Lodestone sending a range the web server cannot take. Missing
 * gives 404; a directory, anything else not a regular file (a FIFO) or a path outside the
 * roots 403. Never resolves: the run ends.
 */
export async function sendfile(host: HostCore, path: string, options: SendOptions = {}): Promise<never> {
  const files = fileAccess(host);
  for (const [name, v] of [['offset', options.offset], ['length', options.length]] as const) {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) throw new TypeError(`sendfile(): ${name} must be a non-negative integer`);
  }
  if (host.response.headersSent) throw new Error('sendfile() after flush(): the headers are already sent');
  const found = await host.guard(files.lookup(path), 'sendfile()');
  const what = `sendfile(${JSON.stringify(path)})`;
  if (found.kind === 'refused') throw refuse(host, 'LS_FILE_FORBIDDEN', `${what}: ${found.reason}`);
  if (found.kind === 'missing') throw refuse(host, 'LS_FILE_NOT_FOUND', `${what}: no such file`);
  if (found.kind === 'dir') throw refuse(host, 'LS_FILE_FORBIDDEN', `${what}: a directory`);
  // A FIFO, socket or device: the web server (or Lodestone) would block opening or reading it.
  if (found.kind === 'special') throw refuse(host, 'LS_FILE_FORBIDDEN', `${what}: not a regular file`);
  // Raw-output mode: a header block half printed before sendfile() is dropped with the body.
  host.rawHead = null;
  const delivery = files.deliver(host.request, host.response, found, options);
  if (delivery.kind === 'no-mapping') {
    throw refuse(host, 'LS_SENDFILE_NO_MAPPING', `${what}: no files.accel mapping covers ${found.path}`);
  }
  // The bytes are the server's to send, after the run: the script's limits (wall time,
  // output) cover the script, not a large range streaming out to a slow client.
  const rest: ExitRest | null = delivery.kind === 'direct' ? { kind: 'range', path: found.path, start: delivery.start, end: delivery.end } : null;
  throw host.exit(host.response.status, false, null, 'exit', rest);
}
