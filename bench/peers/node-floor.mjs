/*
 * The "Node floor" peer of the benchmark (bench/scenarios/hello.ts): the least a Node FastCGI responder can do per request.
 * It parses record headers, skips everything but BEGIN_REQUEST and the end of PARAMS, and
 * answers each request with a canned "123" response (STDOUT, empty STDOUT, END_REQUEST). No
 * params decoding, no request objects, no dependencies: what is left is Node's own per-request
 * cost (event loop, socket reads and writes), the floor under any Node FastCGI server such as
 * Lodestone. Not a product; do not grow it.
 *
 *   node node-floor.mjs PORT        # listens on 127.0.0.1:PORT
 */
import { Buffer } from 'node:buffer';
import net from 'node:net';

const BEGIN_REQUEST = 1;
const PARAMS = 4;
const FCGI_KEEP_CONN = 1;

const BODY = Buffer.from('Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n123', 'latin1');
const PAD = (8 - (BODY.length % 8)) % 8;

/** STDOUT with the body, empty STDOUT, END_REQUEST (appStatus 0, REQUEST_COMPLETE) for `id`. */
function makeReply(id) {
  const b = Buffer.alloc(8 + BODY.length + PAD + 8 + 16);
  let o = 0;
  const header = (type, length, padding) => {
    b[o] = 1; // version
    b[o + 1] = type;
    b.writeUInt16BE(id, o + 2);
    b.writeUInt16BE(length, o + 4);
    b[o + 6] = padding;
    o += 8;
  };
  header(6, BODY.length, PAD); // STDOUT
  BODY.copy(b, o);
  o += BODY.length + PAD;
  header(6, 0, 0); // end of STDOUT
  header(3, 8, 0); // END_REQUEST; its body (appStatus 0, protocolStatus 0, reserved) is zeros
  return b;
}

/** Replies by request id, built on first use (nginx always uses id 1). */
const replies = new Map();
function replyFor(id) {
  let r = replies.get(id);
  if (r === undefined) replies.set(id, (r = makeReply(id)));
  return r;
}

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  process.stderr.write('usage: node node-floor.mjs PORT\n');
  process.exit(2);
}

const server = net.createServer({ noDelay: true }, (socket) => {
  /** Bytes of an incomplete record from the previous read, or null. */
  let leftover = null;
  /** Request ids whose BEGIN_REQUEST set FCGI_KEEP_CONN (nginx uses one id, 1). */
  const keep = new Set();
  let closed = false;
  socket.on('error', () => {}); // a peer reset is no reason to stop
  socket.on('data', (chunk) => {
    if (closed) return;
    let buf = leftover === null ? chunk : Buffer.concat([leftover, chunk]);
    leftover = null;
    let o = 0;
    while (buf.length - o >= 8) {
      const length = (buf[o + 4] << 8) | buf[o + 5];
      const end = o + 8 + length + buf[o + 6];
      if (end > buf.length) break;
      const type = buf[o + 1];
      const id = (buf[o + 2] << 8) | buf[o + 3];
      if (type === BEGIN_REQUEST && length >= 8) {
        if (buf[o + 10] & FCGI_KEEP_CONN) keep.add(id);
        else keep.delete(id);
      } else if (type === PARAMS && length === 0) {
        socket.write(replyFor(id));
        if (!keep.has(id)) {
          closed = true;
          socket.end();
          return;
        }
      }
      o = end;
    }
    // Copied, so that a small remainder does not pin a whole 64 KiB read buffer.
    if (o < buf.length) leftover = Buffer.from(buf.subarray(o));
  });
});
server.listen(port, '127.0.0.1');
