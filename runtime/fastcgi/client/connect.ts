/**
 * Opening a socket to a backend, with a timeout and a cancel. Apart from the connection,
 * which is handed a socket already open: the pool connects, counts and fails over.
 */
import net, { type Socket } from 'node:net';
import type { Cancel, ServerTarget } from './backend.js';

const noop = (): void => {};

/**
 * Opens a socket to `target`; rejects with the socket error (`code` ECONNREFUSED, ENOENT, ...)
 * or an ETIMEDOUT error after `timeoutMs`, or an AbortError when `cancel` fires.
 */
export function connectSocket(target: ServerTarget, timeoutMs: number, cancel?: Cancel): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = target.kind === 'unix' ? net.connect({ path: target.path }) : net.connect({ host: target.host, port: target.port });
    const settle = (err: Error | null): void => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('error', onError);
      offAbort?.();
      if (err === null) {
        resolve(socket);
        return;
      }
      // A destroyed socket can still report a late error; it must not become an uncaught one.
      socket.on('error', noop);
      socket.destroy();
      reject(err);
    };
    const onConnect = (): void => settle(null);
    const onError = (err: Error): void => settle(err);
    const onAbort = (): void => settle(Object.assign(new Error('aborted while connecting'), { name: 'AbortError' }));
    const timer = setTimeout(
      () => settle(Object.assign(new Error(`connect timed out after ${timeoutMs} ms`), { code: 'ETIMEDOUT' })),
      timeoutMs,
    );
    socket.once('connect', onConnect);
    socket.once('error', onError);
    // settle runs later (an event, the timer), when offAbort is set.
    const offAbort = cancel?.onAbort(onAbort);
  });
}
