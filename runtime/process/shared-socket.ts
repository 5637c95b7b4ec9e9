/**
 * The listening socket the primary holds for its workers: bound (tcp, unix) or adopted (an
 * inherited fd), with a unix socket's mode and owner set. Apart from manager.ts because it is
 * the one part that knows libuv's handles and errno values; the primary only passes the fd on.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { lookup } from 'node:dns/promises';
import { getSystemErrorName } from 'node:util';
import { LodestoneError } from '../errors.js';
import { describeTarget, isListeningSocket, removeStaleSocket, type ListenTarget } from '../listen.js';

/** Owner of a unix socket (-1 keeps that id); null leaves it as created. */
export type SocketOwner = { readonly uid: number; readonly gid: number } | null;

/** The listening socket the primary holds for its workers. */
export interface Shared {
  /** What goes into the workers' stdio at {@link WORKER_FD}: a bound handle or an inherited fd. */
  readonly stdio: number;
  /** For the log: the address with the port the kernel chose for port 0. */
  readonly address: string;
  close(): void;
}

/** Minimal view of the bound handle net._createServerHandle returns. */
interface ServerHandle {
  readonly fd: number;
  getsockname?(out: { port?: number }): number;
  close(): void;
}

/**
 * Binds (tcp, unix) or adopts (fd) the socket the workers share. Binding uses Node's
 * net._createServerHandle, the call node:cluster makes for the same purpose: it binds
 * without starting to accept in this process (a net.Server would accept here too). Each
 * worker's listen() on its copy then makes it a listening socket.
 */
export async function openShared(target: ListenTarget, socketMode: number | null, owner: SocketOwner): Promise<Shared> {
  if (target.kind === 'fd') {
    if (!isListeningSocket(target.fd)) {
      throw new LodestoneError('LS_LISTEN_FAILED', `fd ${target.fd} is not a listening socket (the web server or spawner must pass one)`);
    }
    return { stdio: target.fd, address: describeTarget(target), close: () => {} };
  }
  const create = (net as unknown as { _createServerHandle: (a: string, p: number, t: number) => ServerHandle | number })._createServerHandle;
  if (target.kind === 'unix') {
    await removeStaleSocket(target.path);
    const handle = create(target.path, -1, -1);
    if (typeof handle === 'number') throw listenError(target, handle);
    try {
      setSocketAccess(target.path, socketMode, owner);
    } catch (err) {
      handle.close();
      fs.rmSync(target.path, { force: true });
      throw err;
    }
    return {
      stdio: handle.fd,
      address: describeTarget(target),
      close: () => {
        handle.close();
        fs.rmSync(target.path, { force: true });
      },
    };
  }
  const host = net.isIP(target.host) ? target.host : (await lookup(target.host)).address;
  const handle = create(host, target.port, net.isIPv6(host) ? 6 : 4);
  if (typeof handle === 'number') throw listenError(target, handle);
  const out: { port?: number } = {};
  const err = handle.getsockname?.(out) ?? 0;
  // libuv defers a bind's EADDRINUSE to listen() (uv__tcp_bind's delayed_error), which only the
  // workers call: the handle comes back unbound, and listen(2) on an unbound socket binds it to
  // a random port on every interface. A bound socket has a port (the kernel's choice for 0).
  if (err !== 0 || !out.port) {
    handle.close();
    throw listenError(target, err !== 0 ? err : -os.constants.errno.EADDRINUSE);
  }
  return { stdio: handle.fd, address: describeTarget({ ...target, port: out.port }), close: () => handle.close() };
}

/**
 * A unix socket's mode and owner, as php-fpm's listen.mode / listen.owner / listen.group: the
 * web server (another user) must be allowed to connect, nobody else.
 */
export function setSocketAccess(file: string, mode: number | null, owner: SocketOwner): void {
  try {
    if (owner !== null) fs.chownSync(file, owner.uid, owner.gid);
  } catch (err) {
    throw new LodestoneError('LS_LISTEN_FAILED', `socketOwner: cannot give ${file} to ${owner!.uid}:${owner!.gid}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  if (mode !== null) fs.chmodSync(file, mode);
}

function listenError(target: ListenTarget, errno: number): LodestoneError {
  return new LodestoneError('LS_LISTEN_FAILED', `cannot listen on ${describeTarget(target)}: ${getSystemErrorName(errno)}`);
}
