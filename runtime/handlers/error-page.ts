/**
 * The error page every Lodestone answer of its own carries (404 for a missing script, 403, 500
 * for a failed run), in FastCGI responses and in the development server's HTTP ones alike: the
 * status and its reason, nothing a client could learn paths or code from. Only the development
 * server adds the error's text.
 */
import { STATUS_CODES } from 'node:http';
import type { Response } from '../fastcgi/server/response.js';

/** The page's HTML for `status`; `detail` (the development server's error text) goes below the heading, escaped. */
export function errorHtml(status: number, detail: string | null = null): string {
  const title = `${status} ${STATUS_CODES[status] ?? ''}`;
  const shown = detail === null ? '' : `<pre>${escapeHtml(detail)}</pre>\n`;
  return `<!DOCTYPE html><title>${title}</title><h1>${title}</h1>\n${shown}`;
}

/** Replaces whatever `res` holds with the error page for `status`. */
export function errorPage(res: Response, status: number, detail: string | null = null): void {
  res.reset();
  res.status = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.end(errorHtml(status, detail));
}

/** Text as HTML: the five characters that could open markup or an attribute are escaped. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
