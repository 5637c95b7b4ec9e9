#!/usr/bin/env node
// Thin launcher: the code lives in dist/, built by `npm install` (the prepare script).
import { main } from '../dist/runtime/cli.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`lodestone: ${err?.stack ?? err}\n`);
    process.exit(1);
  },
);
