/*
 * The "Node relay floor" of the pass scenario (bench/scenarios/pass.ts, issue 23): the least a
 * Node FastCGI relay can do per request. It forwards the web server's records to a backend
 * (PHP-FPM) on a kept connection as they arrive, byte for byte, and the backend's records back
 * the same way, reading only record headers on the way back to see END_REQUEST. No params
 * decoding, no script, no request objects, no dependencies: what is left is Node's own cost of
 * relaying (two sockets' reads and writes per request), the floor under pass().
 *
 * It relies on what nginx does with `fastcgi_keep_conn on`: request id 1, FCGI_KEEP_CONN set,
 * one request at a time per connection, and nothing sent before the previous response ended.
 * Not a product; do not grow it.
 *
 *   node node-relay.mjs PORT BACKEND_PORT POOL   # listens on 127.0.0.1:PORT
 */
import { Buffer } from 'node:buffer';
import net from 'node:net';

const END_REQUEST = 3;

const [port, backendPort, poolSize] = process.argv.slice(2).map(Number);
if (![port, backendPort, poolSize].every((n) => Number.isInteger(n) && n > 0 && n <= 65535)) {
  process.stderr.write('usage: node node-relay.mjs PORT BACKEND_PORT POOL\n');
  process.exit(2);
}

/** Kept backend connections with no request, and front connections waiting for one. */
const idle = [];
const waiting = [];
let opened = 0;

function acquire(front) {
  const b = idle.pop();
  if (b !== undefined) return attach(b, front);
  if (opened < poolSize) {
    opened++;
    return attach(connectBackend(), front);
  }
  waiting.push(front);
}

function attach(b, front) {
  b.relayFor = front;
  front.relayTo = b;
  for (const chunk of front.queued) b.write(chunk);
  front.queued.length = 0;
}

function release(b) {
  const front = b.relayFor;
  b.relayFor = null;
  if (front !== null) front.relayTo = null;
  const next = waiting.shift();
  if (next !== undefined) attach(b, next);
  else idle.push(b);
}

function connectBackend() {
  const b = net.connect({ port: backendPort, host: '127.0.0.1', noDelay: true });
  b.relayFor = null;
  /** Header bytes of a record split across reads, and what is left of the current record's body. */
  const head = Buffer.alloc(8);
  let headHave = 0;
  let bodyLeft = 0;
  let ending = false;
  b.on('data', (chunk) => {
    let o = 0;
    let endAt = -1;
    while (o < chunk.length) {
      if (bodyLeft > 0) {
        const n = Math.min(bodyLeft, chunk.length - o);
        bodyLeft -= n;
        o += n;
        if (bodyLeft === 0 && ending) endAt = o;
        continue;
      }
      const n = Math.min(8 - headHave, chunk.length - o);
      chunk.copy(head, headHave, o, o + n);
      headHave += n;
      o += n;
      if (headHave < 8) break;
      headHave = 0;
      ending = head[1] === END_REQUEST;
      bodyLeft = head.readUInt16BE(4) + head[6];
      if (bodyLeft === 0 && ending) endAt = o;
    }
    const front = b.relayFor;
    if (front !== null) front.write(chunk);
    if (endAt === chunk.length) {
      ending = false;
      release(b);
    }
  });
  const drop = () => {
    opened--;
    const i = idle.indexOf(b);
    if (i >= 0) idle.splice(i, 1);
    b.relayFor?.destroy();
  };
  b.on('error', () => {});
  b.on('close', drop);
  return b;
}

const server = net.createServer({ noDelay: true }, (front) => {
  front.relayTo = null;
  front.queued = [];
  front.on('data', (chunk) => {
    if (front.relayTo !== null) {
      front.relayTo.write(chunk);
      return;
    }
    front.queued.push(chunk);
    if (front.queued.length === 1) acquire(front);
  });
  front.on('error', () => {});
  front.on('close', () => {
    const i = waiting.indexOf(front);
    if (i >= 0) waiting.splice(i, 1);
    // A request cut off mid-way leaves its backend connection in an unknown state: drop it.
    if (front.relayTo !== null) front.relayTo.destroy();
  });
});
server.listen(port, '127.0.0.1');
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
