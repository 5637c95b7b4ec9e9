/**
 * The fcgi-stat-accel mode (`lodestone serve --stat-accel`): for each request, stat
 * SCRIPT_FILENAME on the thread pool and hand the delivery back to the web server, so the web
 * server's own stat of the file hits a warm cache instead of blocking its event loop on a disk
 * seek. What the seed's C program did with 20 threads, without its FILE* leak (it opened the
 * file to test for existence and never closed it): here nothing is opened unless
 * `files.prefetch.read` asks to warm the page cache, and that handle is always closed.
 */
import type { Handler } from '../fastcgi/server/connection.js';
import type { Files } from '../files/files.js';
import { httpStatus } from '../errors.js';
import type { Logger } from '../log.js';
import { errorPage } from './error-page.js';

/**
 * Builds the stat-accel handler: missing -> 404, directory, not a regular file (a FIFO) or
 * outside the roots -> 403, else
 * the escalation header the web server understands (X-Sendfile, X-Accel-Redirect).
 *
 * @example
 *   new FastcgiServer({ limits, handler: createStatAccelHandler(files, log), log });
 */
export function createStatAccelHandler(files: Files, log: Logger): Handler {
  return async (req, res) => {
    const file = req.param('SCRIPT_FILENAME');
    if (!file) {
      log.info('LS_FILE_NOT_FOUND', 'request without SCRIPT_FILENAME', { request: req.id });
      return errorPage(res, httpStatus.LS_FILE_NOT_FOUND);
    }
    files.prefetch(req);
    const found = await files.lookup(file);
    switch (found.kind) {
      case 'refused':
        log.warn('LS_FILE_FORBIDDEN', found.reason, { file });
        return errorPage(res, httpStatus.LS_FILE_FORBIDDEN);
      case 'missing':
        log.info('LS_FILE_NOT_FOUND', 'no such file', { file });
        return errorPage(res, httpStatus.LS_FILE_NOT_FOUND);
      case 'dir':
        log.info('LS_FILE_FORBIDDEN', 'a directory', { file });
        return errorPage(res, httpStatus.LS_FILE_FORBIDDEN);
      case 'special':
        // A FIFO (or socket, device): the web server's own open() of it would block its worker.
        log.warn('LS_FILE_FORBIDDEN', 'not a regular file', { file });
        return errorPage(res, httpStatus.LS_FILE_FORBIDDEN);
    }
    const delivery = files.deliver(req, res, found);
    if (delivery.kind === 'no-mapping') {
      log.error('LS_SENDFILE_NO_MAPPING', 'no files.accel mapping covers the file', { file: found.path });
      return errorPage(res, httpStatus.LS_SENDFILE_NO_MAPPING);
    }
    res.end();
  };
}
