/**
 * request.form(): the request body parsed as a form, `application/x-www-form-urlencoded` with
 * Node's URLSearchParams (what request.query uses) and `multipart/form-data` with busboy (the
 * maintained streaming parser Multer and Fastify use; pure JS, no install script). A capability
 * of its own because it is the one request read that parses a body and has limits of its own.
 *
 * The body is the one request.body() reads (request.ts bodyBytes: read once, bounded by
 * limits.maxBodyBytes before it ever reaches here). The form's own limits bound what a small
 * body can still make costly: many tiny parts (each a table or an object in the script's
 * engine) and huge text fields. Over a limit, and on a malformed body, form() rejects with an
 * Error the script can catch (Lua pcall, JS try/catch); it does not end the run.
 */
import busboy from 'busboy';
import type { HostCore } from './core.js';
import { bodyBytes } from './request.js';

/**
 * At most this many fields and files in one form: PHP's max_input_vars default. Each becomes
 * a table or an object inside the script's engine, whatever its size.
 */
export const FORM_MAX_PARTS = 1000;
/** At most this many bytes in one text field (busboy's own default; files are bounded by the body only). */
export const FORM_MAX_FIELD_BYTES = 1024 * 1024;
/** At most this many header lines in one multipart part (a part needs two or three). */
const MAX_PART_HEADERS = 32;

/** A text field of a form. */
export interface FormField {
  readonly name: string;
  readonly value: string;
}

/** A file part of a multipart form. */
export interface FormFile {
  readonly name: string;
  /** The file's base name as the client sent it (no directories); "" when it sent none. */
  readonly filename: string;
  /** The part's media type (`application/octet-stream` when it sent none). */
  readonly contentType: string;
  readonly data: Buffer;
}

/** A field or a file, in the order of the body. */
export type FormPart = FormField | FormFile;

/** True for a file part. */
export function isFile(part: FormPart): part is FormFile {
  return 'data' in part;
}

/** What request.form() keeps of a run: the run core and the form, parsed on its first call. */
export interface FormHost extends HostCore {
  formRead: Promise<readonly FormPart[]> | null;
}

/**
 * request.form(): every part of the body's form in body order (the engines build from it the
 * `fields` and `files` tables, where a repeated name keeps its last value, and `parts`).
 * A body that is not a form (another Content-Type, or none) is an empty form, as PHP's $_POST
 * and OpenResty's get_post_args() treat it. Parsed once per run; rejects when the run is
 * stopped, on a malformed form and over the limits above.
 *
 * @example
 *   const parts = await form(host); // [{ name: 'user', value: 'ann' }, { name: 'photo', filename: 'a.png', ... }]
 */
export function form(host: FormHost): Promise<readonly FormPart[]> {
  return host.guard((host.formRead ??= parseForm(host)), 'request.form()');
}

async function parseForm(host: HostCore): Promise<readonly FormPart[]> {
  const contentType = host.request.param('CONTENT_TYPE') ?? '';
  const media = contentType.split(';', 1)[0]!.trim().toLowerCase();
  if (media === 'application/x-www-form-urlencoded') return urlencoded(await bodyBytes(host));
  if (media === 'multipart/form-data') return multipart(contentType, await bodyBytes(host));
  return [];
}

function refuse(message: string): Error {
  return new Error(`request.form(): ${message}`);
}

function tooMany(): Error {
  return refuse(`more than ${FORM_MAX_PARTS} fields and files`);
}

function tooLong(name: string): Error {
  return refuse(`field ${JSON.stringify(name)} is over ${FORM_MAX_FIELD_BYTES} bytes`);
}

function urlencoded(body: Buffer): FormPart[] {
  // Count the pairs before URLSearchParams makes them all: an 8 MiB body of "a&a&..." is four
  // million pairs (~400 ms and 75 MB measured); the scan stops at the limit. Empty pairs
  // ("&&") are skipped as URLSearchParams skips them.
  let pairs = 0;
  for (let at = 0; at < body.length; ) {
    if (body[at] === 0x26) {
      at++;
      continue;
    }
    if (++pairs > FORM_MAX_PARTS) throw tooMany();
    const amp = body.indexOf(0x26, at);
    if (amp < 0) break;
    at = amp + 1;
  }
  const parts: FormPart[] = [];
  for (const [name, value] of new URLSearchParams(body.toString('utf8'))) {
    if (value.length > FORM_MAX_FIELD_BYTES / 3 && Buffer.byteLength(value) > FORM_MAX_FIELD_BYTES) throw tooLong(name);
    parts.push({ name, value });
  }
  return parts;
}

function multipart(contentType: string, body: Buffer): Promise<FormPart[]> {
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({
        headers: { 'content-type': contentType },
        // UTF-8 for the filename parameter: browsers send it raw in UTF-8 (busboy's default is latin1).
        defParamCharset: 'utf8',
        // busboy reports its parts limit once it has counted that many, even when the body ends
        // there, so exactly FORM_MAX_PARTS would be refused: the count is kept here, and busboy's
        // limit, one more, only stops it parsing past the refusal.
        limits: { parts: FORM_MAX_PARTS + 1, fieldSize: FORM_MAX_FIELD_BYTES, headerPairs: MAX_PART_HEADERS },
      });
    } catch (err) {
      // A multipart type without a boundary, or one busboy cannot read.
      reject(refuse(err instanceof Error ? err.message : String(err)));
      return;
    }
    const parts: FormPart[] = [];
    let failed = false;
    const fail = (err: Error): void => {
      if (failed) return;
      failed = true;
      reject(err);
      parser.destroy();
    };
    parser.on('field', (name, value, info) => {
      if (parts.length === FORM_MAX_PARTS) fail(tooMany());
      else if (info.valueTruncated) fail(tooLong(name));
      else parts.push({ name, value });
    });
    parser.on('file', (name, stream, info) => {
      if (parts.length === FORM_MAX_PARTS) {
        stream.resume();
        fail(tooMany());
        return;
      }
      const chunks: Buffer[] = [];
      // Its place in `parts` is where it starts, so the order is the body's.
      const at = parts.length;
      parts.push({ name, value: '' });
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('error', (err: Error) => fail(refuse(err.message)));
      stream.on('end', () => {
        parts[at] = { name, filename: info.filename ?? '', contentType: info.mimeType, data: Buffer.concat(chunks) };
      });
    });
    parser.on('partsLimit', () => fail(tooMany()));
    parser.on('error', (err: Error) => fail(refuse(`malformed multipart body: ${err.message}`)));
    parser.on('close', () => {
      if (!failed) resolve(parts);
    });
    parser.end(body);
  });
}
