/**
 * The `lodestone` command line: `serve`, `check` and `config SERVER`, which take the same options
 * and load the same configuration. USAGE below is the contract (README's "Command line" section
 * is kept in step with it by test/unit/readme-cli.test.ts); its options come from the one table
 * in flags.ts. `serve` itself, what starts once the configuration is loaded, is in serve.ts.
 */
import { loadConfig, type Config } from './config.js';
import { fatal, usageError } from './exit.js';
import { cliValues, optionsHelp, parseCommandLine } from './flags.js';
import { frontEnds, frontendConfig, isFrontEnd } from './frontend-config.js';
import { serve } from './serve.js';
import { version } from '../version.js';

const USAGE = `Usage: lodestone serve [options]
       lodestone check [options]      load the configuration and compile every script under
                                      --root (or only --script); exit 0 when all compile, 1 if not
       lodestone config nginx|lighttpd|apache|caddy [options]
                                      print a front-end config snippet for these options

Options:
${optionsHelp()}`;

/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const parsed = parseCommandLine(argv);
  if ('error' in parsed) return usageError(parsed.error);
  const { values, positionals } = parsed;
  if (values.version) {
    process.stdout.write(`lodestone ${version()}\n`);
    return 0;
  }
  if (values.help || positionals.length === 0) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  const [command, ...rest] = positionals;
  const known = (command === 'serve' || command === 'check') ? rest.length === 0 : command === 'config' && rest.length === 1;
  if (!known) return usageError(`unknown command ${JSON.stringify(positionals.join(' '))}`);
  const frontEnd = rest[0];
  if (frontEnd !== undefined && !isFrontEnd(frontEnd)) {
    return usageError(`config: unknown web server ${JSON.stringify(frontEnd)}; use ${frontEnds.join(', ')}`);
  }
  let config: Config;
  try {
    config = loadConfig(cliValues(values));
  } catch (err) {
    return fatal(err);
  }
  // Imported here: check compiles with both engines, which `serve`'s primary never loads.
  if (command === 'check') return (await import('./check.js')).runCheck(config, process.stdout, process.stderr);
  if (frontEnd !== undefined) {
    process.stdout.write(frontendConfig(frontEnd, config));
    return 0;
  }
  return serve(config);
}
