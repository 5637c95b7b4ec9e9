/**
 * Opening a file named by a request or a script without letting the name choose what is opened.
 * A plain open() of a FIFO blocks until a writer appears, parking one of libuv's few thread-pool
 * threads for good (no timeout frees it); four such requests and every later file operation,
 * script loads included, waits behind them. So the open never blocks (O_NONBLOCK: a FIFO opens
 * at once for reading), and what was opened is judged by the descriptor itself (fstat), not by
 * an earlier stat of the name that could have changed since (lighttpd's TOCTOU rule).
 */
import fs from 'node:fs';

/** A regular file opened for reading, with the stat of that very descriptor. */
export interface OpenedFile {
  readonly handle: fs.promises.FileHandle;
  readonly stat: fs.Stats;
}

// O_NONBLOCK only changes how the open and reads of special files behave: on a regular file
// reads are the same, so the descriptor is used as it is.
const FLAGS = fs.constants.O_RDONLY | fs.constants.O_NONBLOCK;

/**
 * Opens `file` for reading without blocking; resolves to null (the descriptor closed) when it is
 * not a regular file (FIFO, socket, device, directory). Rejects as open() does (ENOENT, EACCES).
 *
 * @example
 *   const opened = await openRegular('/srv/www/index.lua');
 *   if (!opened) return refuse('not a regular file');
 *   try { ... opened.stat.size ... } finally { await opened.handle.close(); }
 */
export async function openRegular(file: string): Promise<OpenedFile | null> {
  const handle = await fs.promises.open(file, FLAGS);
  let stat: fs.Stats;
  try {
    stat = await handle.stat();
  } catch (err) {
    await handle.close();
    throw err;
  }
  if (stat.isFile()) return { handle, stat };
  await handle.close();
  return null;
}

/**
 * Reads at most `size` bytes from the start of `handle`: the size fstat reported, so a file
 * growing after the check cannot make the read (and the buffer) larger than what was checked.
 */
export async function readUpTo(handle: fs.promises.FileHandle, size: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(size);
  let at = 0;
  while (at < size) {
    const { bytesRead } = await handle.read(buf, at, size - at, at);
    if (bytesRead === 0) break;
    at += bytesRead;
  }
  return buf.subarray(0, at);
}
