/**
 * Reading QuickJS stack texts: the script's line in an error's stack, and the script's frames
 * for the slow log. Pure text parsing, apart from the Vm so it can be read (and tested) without
 * handles; it knows the two shapes the prelude gives a stack (its file name, the wrapper's head).
 */
import { MAX_FRAMES, type Frame } from '../slow-log.js';
import { PRELUDE_FILENAME, WRAPPER_HEAD } from './prelude.js';

/**
 * The first line number of a stack frame in `path` ("at f (path:LINE:COL)" or "at path:LINE").
 * A frame inside the wrapper's own head (line 1, a column before the script's first character)
 * is where QuickJS puts code it has no line for (a loop without calls, stopped by the interrupt
 * handler): not the script's line, so it does not count.
 */
export function lineIn(stack: string, path: string): number | null {
  for (const frame of stack.split('\n')) {
    const at = frame.indexOf(path + ':');
    if (at < 0) continue;
    const m = /^(\d+)(?::(\d+))?/.exec(frame.slice(at + path.length + 1));
    if (!m) continue;
    const line = Number(m[1]);
    if (line === 1 && m[2] !== undefined && Number(m[2]) <= WRAPPER_HEAD.length) continue;
    return line;
  }
  return null;
}

/**
 * The script's frames in a QuickJS stack (`    at NAME (FILE:LINE:COL)`, `    at NAME (native)`),
 * innermost first, at most {@link MAX_FRAMES} + 1 (so the slow log knows there were more). The
 * prelude's frames at either end are left out: the API function the script called or the
 * where() that took the stack, and the start() that calls the script; one between two script
 * frames stays, without its line (which means nothing to the script's author). A frame in the
 * wrapper's head (see {@link lineIn}) has no line; built-ins are `[native]`.
 */
export function framesIn(stack: string, path: string): Frame[] {
  const frames: Frame[] = [];
  let scriptFrames = 0;
  for (const text of stack.split('\n')) {
    if (scriptFrames > MAX_FRAMES) break;
    const m = /^\s*at (.*) \((.*)\)$/.exec(text);
    if (!m) continue;
    const name = m[1] === '<anonymous>' ? null : m[1]!;
    const loc = /^(.*?):(\d+)(?::(\d+))?$/.exec(m[2]!);
    const file = loc ? loc[1]! : m[2] === 'native' ? '[native]' : m[2]!;
    if (file === PRELUDE_FILENAME && frames.length === 0) continue;
    let line: number | null = loc && file === path ? Number(loc[2]) : null;
    if (line === 1 && loc![3] !== undefined && Number(loc![3]) <= WRAPPER_HEAD.length) line = null;
    frames.push({ name, file, line });
    if (file !== PRELUDE_FILENAME) scriptFrames = frames.length;
  }
  return frames.slice(0, scriptFrames);
}

/**
 * `file:line` of the innermost frame of code outside the script and the prelude (a module the
 * script required), when the error was thrown there; null when the script's own frame comes
 * first. The engine names it in the error, since the line it reports is the script's.
 */
export function moduleOrigin(stack: string, path: string): string | null {
  for (const text of stack.split('\n')) {
    const m = /^\s*at (?:.* \()?([^()]*?):(\d+)(?::\d+)?\)?$/.exec(text);
    if (!m || m[1] === PRELUDE_FILENAME) continue;
    return m[1] === path ? null : `${m[1]}:${m[2]}`;
  }
  return null;
}
