#!/usr/bin/env node
'use strict';
// Entry point of `hook-run` (the same as `underpass run`); compiled into dist/ by `npm run setup`.
// It loads only the hook's launcher, not the daemons, to keep start-up short.
let run;
try {
  run = require('../dist/hook/run.js');
} catch (e) {
  if (e && e.code === 'MODULE_NOT_FOUND' && String(e.message).includes('dist/hook')) {
    process.stderr.write("hook-run: not built yet: run 'npm ci && npm run setup' in the checkout\n");
    process.exit(1);
  }
  throw e;
}
run.runHookCli(process.argv.slice(2)).then((code) => process.exit(code));
