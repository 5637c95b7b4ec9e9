#!/usr/bin/env node
// Thin launcher: the code lives in dist/, built by `npm install` (the prepare script).
//
// CommonJS on purpose (bin/package.json): libuv sizes its thread pool from UV_THREADPOOL_SIZE
// once, when the pool starts, and Node 20's ES module loader starts it before an ESM entry's
// first line runs (22 and 24 start it at the first asynchronous file call). Here nothing has
// touched the pool yet, so --stat-threads (or files.statThreads in the --config file) can still
// take effect. The file is read as the server reads it (TOML, or JSON for a .json name), by the
// same module, CommonJS too; the server validates it.
'use strict';
const { readConfigFile } = require('../dist/runtime/config-file.cjs');

function statThreads(argv) {
  let config;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--stat-threads') return argv[i + 1];
    if (arg.startsWith('--stat-threads=')) return arg.slice('--stat-threads='.length);
    if (arg === '--config') config = argv[i + 1];
    else if (arg.startsWith('--config=')) config = arg.slice('--config='.length);
  }
  if (config === undefined) return undefined;
  const read = readConfigFile(config);
  const value = read.value?.files?.statThreads; // a bad file is reported by the server
  return value === undefined ? undefined : String(value);
}

const threads = statThreads(process.argv.slice(2));
if (threads !== undefined && /^\d+$/.test(threads)) process.env.UV_THREADPOOL_SIZE = threads;

// V8's young generation: Node 20 caps a semi-space at 16 MiB; Node 22 and 24 let it grow to
// 64 MiB (a 128 MiB new space). Behind lighttpd (a connection per request) a worker on Node 24
// then sat at ~285 MB RSS against ~130 MB on Node 20, with 20-40 ms scavenges; capped at 16 MiB
// it measured 1-2 ms scavenges. The cap can only be set when the heap is created, so it goes
// into NODE_OPTIONS, which the manager's workers inherit, and on Node 22.15+ the launcher
// re-executes itself in place (process.execve keeps the pid and environment) to pick it up.
// process.execve keeps only fds 0-2: not when systemd passed its socket on fd 3 (LISTEN_FDS) or
// a parent its IPC channel (NODE_CHANNEL_FD); such a process runs uncapped, its workers capped.
// A size the user chose (command line or NODE_OPTIONS) is left alone.
const SEMI_SPACE_FLAG = '--max-semi-space-size';
// The Node and V8 options the user gave: on the command line and in NODE_OPTIONS.
const userOptions = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
const chosen = userOptions.some((a) => a.startsWith(SEMI_SPACE_FLAG));
if (!chosen) {
  process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} ${SEMI_SPACE_FLAG}=16`.trim();
  const keepsFds = process.env.LISTEN_FDS !== undefined || process.env.NODE_CHANNEL_FD !== undefined;
  if (!keepsFds && typeof process.execve === 'function') {
    process.execve(process.execPath, [process.execPath, ...process.execArgv, process.argv[1], ...process.argv.slice(2)], process.env);
  }
}

// The process manager's primary only forks and supervises, yet V8's compilers past the
// interpreter (Sparkplug, Maglev where the build turns it on, TurboFan) cost it RSS for code it
// never needs fast: 52.9 -> 48.8 MB on Node 20, 56.8 -> 54.1 MB on Node 24, measured. They are
// off from the first line of a `serve` that is not a worker; serve.ts turns them back on in a
// process that will answer requests (--workers 0, the development server). Flags set here are
// not inherited: a worker starts with its compilers on. Compiler flags the user gave win.
const COMPILERS = ['turbofan', 'sparkplug', 'maglev'];
const userChose = userOptions.some((a) => COMPILERS.some((c) => a === `--${c}` || a === `--no-${c}` || a === '--opt' || a === '--no-opt' || a === '--jitless'));
if (process.argv[2] === 'serve' && process.env.LODESTONE_WORKER_LISTEN === undefined && !userChose) {
  const v8 = require('node:v8');
  for (const c of COMPILERS) v8.setFlagsFromString(`--no-${c}`);
  globalThis[Symbol.for('lodestone.compilersDeferred')] = COMPILERS.filter((c) => c !== 'maglev' || process.config.variables.v8_enable_maglev === 1);
}

import('../dist/runtime/cli/cli.js').then(({ main }) =>
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`lodestone: ${err?.stack ?? err}\n`);
      process.exit(1);
    },
  ),
);
