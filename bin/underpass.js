#!/usr/bin/env node
'use strict';
// Entry point of `underpass`; the program is compiled into dist/ by `npm run setup`.
let cli;
try {
  cli = require('../dist/cli/underpass.js');
} catch (e) {
  if (e && e.code === 'MODULE_NOT_FOUND' && String(e.message).includes('dist/cli')) {
    process.stderr.write("underpass: not built yet: run 'npm ci && npm run setup' in the checkout\n");
    process.exit(1);
  }
  throw e;
}
cli.main(process.argv.slice(2));
