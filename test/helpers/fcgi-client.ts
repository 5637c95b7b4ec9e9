/**
 * A raw FastCGI client for tests. It has its own small encoder and decoder, written from the
 * spec and independent of runtime/fastcgi, so a bug in the server's codec cannot hide behind the
 * same bug in the client.
 */
import net from 'node:net';

export const T = {
  BEGIN_REQUEST: 1,
  ABORT_REQUEST: 2,
  END_REQUEST: 3,
  PARAMS: 4,
  STDIN: 5,
  STDOUT: 6,
  STDERR: 7,
  DATA: 8,
  GET_VALUES: 9,
  GET_VALUES_RESULT: 10,
  UNKNOWN_TYPE: 11,
} as const;

export const ROLE = { RESPONDER: 1, AUTHORIZER: 2, FILTER: 3 } as const;

export interface Rec {
  type: number;
  id: number;
  content: Buffer;
  /** paddingLength from the record header, as the server sent it. */
  padding?: number;
  /** Date.now() when the chunk that completed this record arrived (for ordering checks). */
  at?: number;
}

/** One record with padding to 8 bytes (or `padding` bytes when given). */
export function record(type: number, id: number, content: Buffer | string = Buffer.alloc(0), padding?: number): Buffer {
  const body = typeof content === 'string' ? Buffer.from(content) : content;
  const pad = padding ?? (8 - (body.length % 8)) % 8;
  const header = Buffer.from([1, type, id >> 8, id & 0xff, body.length >> 8, body.length & 0xff, pad, 0]);
  return Buffer.concat([header, body, Buffer.alloc(pad)]);
}

/**
 * One record whose padding is the given bytes (at most 255), not zeros: tests put bytes there
 * that look like valid records, so a server that parses padding as records gets caught.
 */
export function recordPadded(type: number, id: number, content: Buffer | string, padBytes: Buffer): Buffer {
  if (padBytes.length > 255) throw new RangeError('padding over 255 bytes');
  const body = typeof content === 'string' ? Buffer.from(content) : content;
  const header = Buffer.from([1, type, id >> 8, id & 0xff, body.length >> 8, body.length & 0xff, padBytes.length, 0]);
  return Buffer.concat([header, body, padBytes]);
}

/** Records for a whole stream: content split at `chunk` bytes, then the empty closing record. */
export function stream(type: number, id: number, content: Buffer | string, chunk = 65535): Buffer {
  const body = typeof content === 'string' ? Buffer.from(content) : content;
  const parts: Buffer[] = [];
  for (let i = 0; i < body.length; i += chunk) parts.push(record(type, id, body.subarray(i, i + chunk)));
  parts.push(record(type, id));
  return Buffer.concat(parts);
}

function lengthBytes(n: number): Buffer {
  if (n < 128) return Buffer.from([n]);
  const b = Buffer.alloc(4);
  b.writeUInt32BE((n | 0x80000000) >>> 0);
  return b;
}

/** Name-value pairs encoded as in the spec (1- or 4-byte lengths). */
export function pairs(entries: Record<string, string> | Array<[string, string]>): Buffer {
  const list = Array.isArray(entries) ? entries : Object.entries(entries);
  return Buffer.concat(
    list.flatMap(([name, value]) => {
      const n = Buffer.from(name, 'latin1');
      const v = Buffer.from(value, 'utf8');
      return [lengthBytes(n.length), lengthBytes(v.length), n, v];
    }),
  );
}

export function beginRequest(id: number, role: number = ROLE.RESPONDER, keepConn = false): Buffer {
  return record(T.BEGIN_REQUEST, id, Buffer.from([role >> 8, role & 0xff, keepConn ? 1 : 0, 0, 0, 0, 0, 0]));
}

export interface RequestOptions {
  role?: number;
  keepConn?: boolean;
  body?: Buffer | string;
  data?: Buffer | string;
  /** Split PARAMS content into records of this many bytes. */
  paramsChunk?: number;
}

/** A complete request: BEGIN_REQUEST, PARAMS, STDIN (and DATA for FILTER). */
export function request(id: number, params: Record<string, string>, opts: RequestOptions = {}): Buffer {
  const parts = [
    beginRequest(id, opts.role ?? ROLE.RESPONDER, opts.keepConn ?? false),
    stream(T.PARAMS, id, pairs(params), opts.paramsChunk),
    stream(T.STDIN, id, opts.body ?? ''),
  ];
  if (opts.data !== undefined) parts.push(stream(T.DATA, id, opts.data));
  return Buffer.concat(parts);
}

/** Decodes records from a byte stream; throws on anything off-spec the server must never send. */
export class Decoder {
  private buf = Buffer.alloc(0);
  readonly records: Rec[] = [];

  push(chunk: Buffer): void {
    const at = Date.now();
    this.buf = Buffer.concat([this.buf, chunk]);
    while (this.buf.length >= 8) {
      if (this.buf[0] !== 1) throw new Error(`server sent version ${this.buf[0]}`);
      const len = this.buf.readUInt16BE(4);
      const pad = this.buf[6]!;
      if (this.buf.length < 8 + len + pad) return;
      this.records.push({
        type: this.buf[1]!,
        id: this.buf.readUInt16BE(2),
        content: this.buf.subarray(8, 8 + len),
        padding: pad,
        at,
      });
      this.buf = this.buf.subarray(8 + len + pad);
    }
  }
}

/** What one request got back. */
export interface Reply {
  stdout: Buffer;
  stderr: string;
  appStatus: number;
  protocolStatus: number;
  /** Records for this id in arrival order. */
  records: Rec[];
}

/** The parsed CGI response in a reply's stdout. */
export interface Cgi {
  status: number;
  /** Headers by lower-case name; a repeated header: its last line. */
  headers: Record<string, string>;
  /** Every header line in order, names lower-cased (repeated ones, such as Set-Cookie, each). */
  headerLines: Array<[string, string]>;
  body: Buffer;
}

export function parseCgi(stdout: Buffer): Cgi {
  const sep = stdout.indexOf('\r\n\r\n');
  if (sep < 0) throw new Error(`no CGI header block in ${JSON.stringify(stdout.toString().slice(0, 200))}`);
  const headers: Record<string, string> = {};
  const headerLines: Array<[string, string]> = [];
  for (const line of stdout.subarray(0, sep).toString('latin1').split('\r\n')) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = value;
    headerLines.push([name, value]);
  }
  const status = Number((headers.status ?? '200').split(' ')[0]);
  return { status, headers, headerLines, body: stdout.subarray(sep + 4) };
}

/** A connection to a FastCGI server that collects everything it receives. */
export class RawClient {
  readonly decoder = new Decoder();
  readonly closed: Promise<void>;
  private waiters: Array<() => void> = [];
  isClosed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.decoder.push(chunk);
      this.wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true;
        this.wake();
        resolve();
      }),
    );
  }

  static connect(target: { port: number; host?: string } | { path: string }): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket =
        'path' in target ? net.connect(target.path) : net.connect(target.port, target.host ?? '127.0.0.1');
      socket.once('connect', () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  write(data: Buffer): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.write(data, () => resolve());
    });
  }

  get records(): Rec[] {
    return this.decoder.records;
  }

  /** Resolves when `pred` holds (checked on every arrival); rejects after `timeoutMs`. */
  async until(pred: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 100));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits for END_REQUEST of `id` and gathers that request's records. */
  async reply(id: number, timeoutMs = 5000): Promise<Reply> {
    await this.until(
      () => this.records.some((r) => r.type === T.END_REQUEST && r.id === id) || this.isClosed,
      timeoutMs,
      `END_REQUEST for request ${id}`,
    );
    const mine = this.records.filter((r) => r.id === id);
    const end = mine.find((r) => r.type === T.END_REQUEST);
    if (!end) throw new Error(`connection closed before END_REQUEST for request ${id}`);
    return {
      stdout: Buffer.concat(mine.filter((r) => r.type === T.STDOUT).map((r) => r.content)),
      stderr: Buffer.concat(mine.filter((r) => r.type === T.STDERR).map((r) => r.content)).toString(),
      appStatus: end.content.readUInt32BE(0),
      protocolStatus: end.content[4]!,
      records: mine,
    };
  }

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

/** Decodes the pairs of a GET_VALUES_RESULT. */
export function decodePairsForTest(buf: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  const len = (): number => {
    const b = buf[pos]!;
    if (b < 128) {
      pos += 1;
      return b;
    }
    const n = buf.readUInt32BE(pos) & 0x7fffffff;
    pos += 4;
    return n;
  };
  while (pos < buf.length) {
    const n = len();
    const v = len();
    out[buf.toString('latin1', pos, pos + n)] = buf.toString('utf8', pos + n, pos + n + v);
    pos += n + v;
  }
  return out;
}
