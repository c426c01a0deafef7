// Runs the ruff that `npm run setup:dev` puts in .venv (pinned in hook/requirements-dev.txt), so the
// Python lint and format checks need nothing on PATH; says how to get it when it is missing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ruff = path.join(root, '.venv', 'bin', 'ruff');
if (!existsSync(ruff)) {
  console.error("ruff: not installed in .venv: run 'npm run setup:dev'");
  process.exit(1);
}
const result = spawnSync(ruff, process.argv.slice(2), { stdio: 'inherit', cwd: root });
process.exit(result.status ?? 1);
