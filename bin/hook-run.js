#!/usr/bin/env node
'use strict';
// Entry point of `hook-run` (the same as `underpass run`); compiled into dist/ by `npm run setup`.
let cli;
try {
  cli = require('../dist/cli/underpass.js');
} catch (e) {
  if (e && e.code === 'MODULE_NOT_FOUND' && String(e.message).includes('dist/cli')) {
    process.stderr.write("hook-run: not built yet: run 'npm ci && npm run setup' in the checkout\n");
    process.exit(1);
  }
  throw e;
}
cli.main(['run', ...process.argv.slice(2)]);
