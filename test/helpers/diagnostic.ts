/** What tests read from the diagnostic responder (runtime/handlers/diagnostic.ts). */
import { createHash } from 'node:crypto';

/** Its JSON report. */
export interface Report {
  role: string;
  /** The answering process (under the manager: a worker). */
  pid: number;
  requestId: number;
  keepConn: boolean;
  connection: number;
  sequence: number;
  params: Record<string, string>;
  stdinBytes: number;
  stdinSha256: string;
}

export function parseReport(body: Buffer): Report {
  return JSON.parse(body.toString('utf8')) as Report;
}

/** What `?size=N` must produce: "0123456789" repeated, cut at N bytes. */
export function pattern(n: number): Buffer {
  return Buffer.from('0123456789'.repeat(Math.ceil(n / 10)).slice(0, n));
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}
