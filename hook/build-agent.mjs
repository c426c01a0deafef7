// Bundles the Frida agent (hook/agent/agent.ts and what it imports, protocol/ipc.ts included) into the
// single file dist/hook/agent.js that both controllers load. Compiled once here, never per run.
// Type-checking is `tsc -p hook/tsconfig.json` (npm run lint); esbuild only strips types.
import { build } from 'esbuild';
import { statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outfile = path.join(root, 'dist', 'hook', 'agent.js');

try {
  await build({
    entryPoints: [path.join(root, 'hook', 'agent', 'agent.ts')],
    outfile,
    bundle: true,
    format: 'iife',
    platform: 'neutral',
    target: 'es2020',
    minify: true,
    legalComments: 'none',
    logLevel: 'silent',
  });
} catch (error) {
  const first = error?.errors?.[0];
  const where = first?.location ? `${first.location.file}:${first.location.line}: ` : '';
  console.error(`build-agent: ${where}${first?.text ?? error?.message ?? String(error)}`);
  process.exit(1);
}
const kilobytes = (statSync(outfile).size / 1024).toFixed(1);
console.log(`built ${path.relative(root, outfile)} (${kilobytes} KB)`);
