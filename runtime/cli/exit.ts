/**
 * How a command line or a start that fails ends: one line on stderr and the exit code the README
 * gives. Apart because both cli.ts (the command line) and serve.ts (the start) end that way.
 */
import { LodestoneError } from '../errors.js';

/**
 * A command line that cannot be run: one line naming the flag or command, then where to look.
 * Exit 2, as for a bad configuration.
 */
export function usageError(message: string): number {
  process.stderr.write(`lodestone: LS_CONFIG_INVALID: ${message}\ntry 'lodestone --help'\n`);
  return 2;
}

/**
 * Reports a start-up failure. Exit codes as the README says: 2 for a bad command line or
 * configuration (LS_CONFIG_INVALID, with the help hint when a flag is at fault), 1 for the rest
 * (a socket that cannot be opened, a crash).
 */
export function fatal(err: unknown): number {
  if (err instanceof LodestoneError) {
    // A flag at fault gets the help hint; a config file's content (--config: file:line) does not.
    if (err.code === 'LS_CONFIG_INVALID' && err.message.startsWith('--') && !err.message.startsWith('--config:')) {
      return usageError(err.message);
    }
    process.stderr.write(`lodestone: ${err.code}: ${err.message}\n`);
    return err.code === 'LS_CONFIG_INVALID' ? 2 : 1;
  }
  process.stderr.write(`lodestone: ${(err as Error).stack ?? String(err)}\n`);
  return 1;
}
