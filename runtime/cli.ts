/**
 * The `lodestone` command line. The `serve` contract is stable:
 *   lodestone serve --listen unix:/path.sock | tcp:HOST:PORT | fd:0 | systemd
 *                   [--root DIR] [--config FILE] [--log-level LEVEL] [--diagnostic]
 *                   [--script FILE] [--cache-dir DIR]
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { ScriptStore } from '../cache/script-store.js';
import { loadConfig, type Config } from './config.js';
import { diagnostic } from './diagnostic.js';
import type { ScriptEngine } from './engines/engine.js';
import { createJsEngine } from './engines/js.js';
import { LuaEngine } from './engines/lua.js';
import { LodestoneError } from './errors.js';
import type { Handler } from './fastcgi/connection.js';
import { FastcgiServer } from './fastcgi/server.js';
import { describeTarget, inheritedTarget, type ListenTarget } from './listen.js';
import { Logger } from './log.js';
import { createScriptHandler } from './pipeline.js';

const VERSION = '0.1.0';

const USAGE = `Usage: lodestone serve [options]

Options:
  --listen SPEC      unix:/path.sock | tcp:HOST:PORT | fd:0 | systemd
                     (default: an inherited socket on fd 0 or from systemd,
                     else tcp:127.0.0.1:9000)
  --root DIR         directory scripts are served from (default: .)
  --script FILE      one front-controller script for every request
  --cache-dir DIR    keep compiled Lua bytecode here across restarts
  --config FILE      JSON config file (see README, "Configuration")
  --log-level LEVEL  error | warn | info | debug (default: info)
  --diagnostic       answer every request with the built-in diagnostic responder
  -h, --help         show this help
  -v, --version      print the version
`;

/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        listen: { type: 'string' },
        root: { type: 'string' },
        config: { type: 'string' },
        'log-level': { type: 'string' },
        diagnostic: { type: 'boolean' },
        script: { type: 'string' },
        'cache-dir': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (err) {
    process.stderr.write(`lodestone: ${(err as Error).message}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.version) {
    process.stdout.write(`lodestone ${VERSION}\n`);
    return 0;
  }
  if (values.help || positionals.length === 0) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  if (positionals[0] !== 'serve' || positionals.length > 1) {
    process.stderr.write(`lodestone: unknown command ${JSON.stringify(positionals.join(' '))}; try --help\n`);
    return 2;
  }
  let config: Config;
  try {
    config = loadConfig({
      listen: values.listen,
      root: values.root,
      config: values.config,
      logLevel: values['log-level'],
      diagnostic: values.diagnostic,
      script: values.script,
      cacheDir: values['cache-dir'],
    });
  } catch (err) {
    return fatal(err);
  }
  return serve(config);
}

async function serve(config: Config): Promise<number> {
  const log = new Logger(config.logLevel);
  const handler = config.diagnostic ? diagnostic : await scriptHandler(config, log);
  const server = new FastcgiServer({ limits: config.limits, handler, log, webServerAddrs: config.webServerAddrs });
  const target: ListenTarget = config.listen ?? inheritedTarget() ?? { kind: 'tcp', host: '127.0.0.1', port: 9000 };
  try {
    await server.listen(target);
  } catch (err) {
    return fatal(err);
  }
  if (target.kind === 'unix' && config.socketMode !== null) fs.chmodSync(target.path, config.socketMode);
  // systemd's convention: the fds are ours; do not pass the variables on to children.
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_PID;
  const bound = server.address();
  const listening: ListenTarget =
    target.kind === 'tcp' && bound !== null && typeof bound === 'object' ? { ...target, port: bound.port } : target;
  log.info('-', 'lodestone listening', { listen: describeTarget(listening), root: config.root, pid: process.pid });

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        log.warn('-', 'second signal: stopping now', { signal });
        resolve(1);
        return;
      }
      stopping = true;
      log.info('-', 'stopping gracefully', { signal, inFlight: server.activeRequests });
      void server.close().then(() => resolve(0));
    };
    // SIGUSR1 is libfcgi's graceful stop, which lighttpd's kill-signal docs rely on.
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGUSR1'] as const) process.on(signal, stop);
  });
}

/** The script pipeline: both engines over one script store. */
async function scriptHandler(config: Config, log: Logger): Promise<Handler> {
  const engines = new Map<string, ScriptEngine>();
  for (const engine of [new LuaEngine(), await createJsEngine()]) engines.set(engine.extension, engine);
  const store = new ScriptStore({
    root: config.root,
    engines,
    statIntervalMs: config.statIntervalMs,
    maxEntries: config.scriptCache.maxEntries,
    maxBytes: config.scriptCache.maxBytes,
    cacheDir: config.cacheDir,
    log,
  });
  const raw = config.rawOutput;
  return createScriptHandler({
    store,
    root: config.root,
    limits: config.scriptLimits,
    log,
    script: config.script,
    raw: raw === true ? () => true : (file) => raw.has(file),
  });
}

function fatal(err: unknown): number {
  if (err instanceof LodestoneError) {
    process.stderr.write(`lodestone: ${err.code}: ${err.message}\n`);
    return 2;
  }
  process.stderr.write(`lodestone: ${(err as Error).stack ?? String(err)}\n`);
  return 1;
}
