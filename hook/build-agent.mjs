// Bundles the Frida agent (hook/agent/agent.ts and what it imports, protocol/ipc-wire.ts included) into
// the single file dist/hook/agent.js that both controllers load. Compiled once here, never per run.
// Type-checking is `tsc -p hook/tsconfig.json` (npm run lint); esbuild only strips types.
//
// The IPC table goes in as a constant (hook/agent/ipc-table.ts): the events and the JSON Schemas of the
// replies, written by protocol/ipc.ts from its zod schemas, which tsc has compiled into dist/ just before.
// zod itself must stay out of the bundle (protocol/json-shape.ts says why): a build that pulls it in fails.
import { build } from 'esbuild';
import { statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outfile = path.join(root, 'dist', 'hook', 'agent.js');

let table;
try {
  table = createRequire(import.meta.url)(path.join(root, 'dist', 'protocol', 'ipc.js')).agentIpcTable();
} catch (error) {
  console.error(
    `build-agent: cannot write the IPC table (run tsc first: npm run build): ${error?.message ?? String(error)}`,
  );
  process.exit(1);
}

try {
  const result = await build({
    define: { UNDERPASS_IPC_TABLE: JSON.stringify(table) },
    metafile: true,
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
  const zod = Object.keys(result.metafile.inputs).filter((input) => input.includes('node_modules/zod/'));
  if (zod.length > 0) {
    console.error(`build-agent: the agent bundles zod (${zod[0]}): import only types from protocol/ipc.ts there`);
    process.exit(1);
  }
} catch (error) {
  const first = error?.errors?.[0];
  const where = first?.location ? `${first.location.file}:${first.location.line}: ` : '';
  console.error(`build-agent: ${where}${first?.text ?? error?.message ?? String(error)}`);
  process.exit(1);
}
const kilobytes = (statSync(outfile).size / 1024).toFixed(1);
console.log(`built ${path.relative(root, outfile)} (${kilobytes} KB)`);
