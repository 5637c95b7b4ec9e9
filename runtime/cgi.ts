/**
 * Parses the header block a CGI program prints before its body, for scripts in raw-output mode
 * (lua-fastcgi-magnet scripts print their own `Status:` and headers). Rules of CGI/1.1
 * (RFC 3875 6.2-6.3): lines end in LF or CRLF, an empty line ends the block, `Status: NNN
 * reason` sets the status, and a `Location` without `Status` means 302.
 */

/** A parsed CGI header block. */
export interface CgiHead {
  readonly status: number;
  /** Header lines other than Status, in order (Set-Cookie may repeat). */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  /** Offset of the first body byte in the parsed buffer. */
  readonly bodyOffset: number;
}

/** The block is complete and valid, incomplete (need more output), or malformed. */
export type CgiHeadResult = CgiHead | 'incomplete' | { readonly error: string };

const LF = 10;
const CR = 13;

/**
 * Parses the header block at the start of `output`.
 *
 * @example
 *   parseCgiHead(Buffer.from('Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope'));
 *   // { status: 404, headers: [['Content-Type', 'text/plain']], bodyOffset: 51 }
 */
export function parseCgiHead(output: Buffer): CgiHeadResult {
  const headers: Array<[string, string]> = [];
  let status: number | null = null;
  let hasLocation = false;
  let pos = 0;
  for (;;) {
    const lf = output.indexOf(LF, pos);
    if (lf < 0) return 'incomplete';
    const end = lf > pos && output[lf - 1] === CR ? lf - 1 : lf;
    if (end === pos) {
      return { status: status ?? (hasLocation ? 302 : 200), headers, bodyOffset: lf + 1 };
    }
    const line = output.toString('latin1', pos, end);
    const colon = line.indexOf(':');
    if (colon <= 0) return { error: `malformed CGI header line ${JSON.stringify(line.slice(0, 80))}` };
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (name.toLowerCase() === 'status') {
      const code = /^(\d{3})(?:\s|$)/.exec(value);
      if (!code) return { error: `malformed Status header ${JSON.stringify(value.slice(0, 80))}` };
      status = Number(code[1]);
    } else {
      if (name.toLowerCase() === 'location') hasLocation = true;
      headers.push([name, value]);
    }
    pos = lf + 1;
  }
}
