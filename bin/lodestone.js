#!/usr/bin/env node
// Thin launcher: the code lives in dist/, built by `npm install` (the prepare script).
//
// CommonJS on purpose (bin/package.json): libuv sizes its thread pool from UV_THREADPOOL_SIZE
// once, when the pool starts, and Node's ES module loader starts it before an ESM entry's first
// line runs. Here nothing has touched the pool yet, so --stat-threads (or files.statThreads in
// the --config file) can still take effect. The real validation happens in dist/runtime/cli/config.js.
'use strict';
const fs = require('node:fs');

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
  try {
    const value = JSON.parse(fs.readFileSync(config, 'utf8'))?.files?.statThreads;
    return value === undefined ? undefined : String(value);
  } catch {
    return undefined; // the config loader reports a bad file
  }
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
const chosen = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => a.startsWith(SEMI_SPACE_FLAG));
if (!chosen) {
  process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} ${SEMI_SPACE_FLAG}=16`.trim();
  const keepsFds = process.env.LISTEN_FDS !== undefined || process.env.NODE_CHANNEL_FD !== undefined;
  if (!keepsFds && typeof process.execve === 'function') {
    process.execve(process.execPath, [process.execPath, ...process.execArgv, process.argv[1], ...process.argv.slice(2)], process.env);
  }
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
