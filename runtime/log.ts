import type { Code } from './errors.js';

/** Log levels, most severe first. */
export const levels = ['error', 'warn', 'info', 'debug'] as const;
export type Level = (typeof levels)[number];

/** Key-value context appended to a log line as `key=value`. */
export type Fields = Record<string, string | number | boolean | undefined>;

/** Where log lines go; tests pass a function that collects them. */
export type Sink = (line: string) => void;

/**
 * Line-oriented logger: `TIME LEVEL CODE message key=value ...`, one line per event so that
 * grep, journald and log shippers need no parser. Disabled levels cost one comparison. Errors
 * and warnings always carry a stable code, since those are the lines operators alert on; an
 * info or debug line that only tells what happened (listening, reloaded) may use `-`.
 */
export class Logger {
  private readonly max: number;

  constructor(
    level: Level = 'info',
    private readonly sink: Sink = (line) => process.stderr.write(line + '\n'),
  ) {
    this.max = levels.indexOf(level);
  }

  /** True when lines of this level are written; lets callers skip building costly fields. */
  enabled(level: Level): boolean {
    return levels.indexOf(level) <= this.max;
  }

  error(code: Code, message: string, fields?: Fields): void {
    if (this.max >= 0) this.write('error', code, message, fields);
  }

  warn(code: Code, message: string, fields?: Fields): void {
    if (this.max >= 1) this.write('warn', code, message, fields);
  }

  info(code: Code | '-', message: string, fields?: Fields): void {
    if (this.max >= 2) this.write('info', code, message, fields);
  }

  debug(code: Code | '-', message: string, fields?: Fields): void {
    if (this.max >= 3) this.write('debug', code, message, fields);
  }

  private write(level: Level, code: string, message: string, fields?: Fields): void {
    let line = `${new Date().toISOString()} ${level} ${code} ${oneLine(message)}`;
    if (fields) {
      for (const key in fields) {
        const value = fields[key];
        if (value !== undefined) line += ` ${key}=${quote(String(value))}`;
      }
    }
    this.sink(line);
  }
}

// A log line must stay one line even when a peer sends CR/LF in a value (log injection).
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}

function quote(value: string): string {
  return /^[^\s"=]*$/.test(value) && value !== '' ? value : JSON.stringify(value);
}
