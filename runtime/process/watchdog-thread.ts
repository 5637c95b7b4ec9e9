/**
 * The watchdog's thread (see watchdog.ts). It must not depend on the main thread in any way:
 * its log line is written with a synchronous write(2) to stderr or the error log file (a worker thread's
 * process.stderr is relayed through the main thread, which is the one that is stuck) and the
 * kill is a plain kill(2) of our own pid.
 */
import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { BEAT, SCRIPT, type ScriptName, type WatchdogData } from './watchdog.js';

const data = workerData as WatchdogData;
const slots = new Int32Array(data.shared);
const names = new Map<number, string>();
parentPort?.on('message', (msg: ScriptName) => names.set(msg.id, msg.file));

let last = Atomics.load(slots, BEAT);
let since = Date.now();
setInterval(() => {
  const now = Date.now();
  const beat = Atomics.load(slots, BEAT);
  if (beat !== last) {
    last = beat;
    since = now;
    return;
  }
  const stuckMs = now - since;
  if (stuckMs < data.limitMs) return;
  const id = Atomics.load(slots, SCRIPT);
  const name = id === 0 ? '-' : (names.get(id) ?? '-');
  // Quoted as the Logger quotes values, so one parser reads every line.
  const script = /^[^\s"=]+$/.test(name) ? name : JSON.stringify(name);
  const line =
    `${new Date(now).toISOString()} error LS_WATCHDOG event loop stuck; killing the worker` +
    ` stuckMs=${stuckMs} limitMs=${data.limitMs} script=${script} pid=${data.pid}\n`;
  try {
    if (data.logFile === null) fs.writeSync(2, line);
    else fs.appendFileSync(data.logFile, line);
  } finally {
    process.kill(data.pid, 'SIGKILL');
  }
}, data.checkMs);
