// Prepares the hook's Python sidecar: a project-local virtualenv .venv/ with the `frida` wheel, used by
// hook-run when the Node `frida` binding cannot be loaded. Idempotent: does nothing when .venv already
// imports the pinned frida version.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const FRIDA_VERSION = '17.26.0';
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const venv = path.join(root, '.venv');
const python = path.join(venv, 'bin', 'python');

// As npm's postinstall (`npm install -g` of the package), a failure must not undo the install: the daemons
// work without the sidecar, and hook-run says how to finish when it is missing.
const postinstall = process.argv.includes('--postinstall');

function fail(message) {
  console.error(`setup-sidecar: ${message}`);
  if (postinstall) {
    console.error(
      `setup-sidecar: hook-run needs the sidecar: run 'node ${path.join(root, 'hook', 'setup-sidecar.mjs')}' once it can reach PyPI`,
    );
    process.exit(0);
  }
  process.exit(1);
}

function run(command, args, quiet) {
  const result = spawnSync(command, args, {
    stdio: quiet ? 'pipe' : ['ignore', 'inherit', 'inherit'],
    encoding: 'utf8',
  });
  if (result.error) return { ok: false, output: result.error.message };
  return { ok: result.status === 0, output: `${result.stdout ?? ''}${result.stderr ?? ''}`.trim() };
}

function installedFridaVersion() {
  if (!existsSync(python)) return null;
  const probe = run(python, ['-c', 'import frida; print(frida.__version__)'], true);
  return probe.ok ? probe.output : null;
}

const current = installedFridaVersion();
if (current === FRIDA_VERSION) {
  console.log(`sidecar ready: .venv has frida ${FRIDA_VERSION}`);
  process.exit(0);
}

if (!existsSync(python)) {
  console.log('creating .venv (python3 -m venv)');
  const created = run('python3', ['-m', 'venv', venv], true);
  if (!created.ok) {
    const reason = created.output.split('\n').filter(Boolean).pop() ?? 'unknown error';
    fail(`python3 -m venv failed (${reason}): install python3 and python3-venv (apt-get install python3-venv)`);
  }
}

if (!run(python, ['-m', 'pip', '--version'], true).ok) {
  console.log('.venv has no pip: running ensurepip');
  if (!run(python, ['-m', 'ensurepip', '--upgrade'], true).ok)
    fail(`.venv has no pip and ensurepip failed: remove ${venv} and run 'npm run setup' again`);
}

console.log(`installing frida ${FRIDA_VERSION} into .venv (pip)`);
const installed = run(
  python,
  ['-m', 'pip', 'install', '--disable-pip-version-check', '--quiet', `frida==${FRIDA_VERSION}`],
  false,
);
if (!installed.ok)
  fail(`pip install frida==${FRIDA_VERSION} failed (see pip's output above): check network access to PyPI`);

const after = installedFridaVersion();
if (after !== FRIDA_VERSION) fail(`.venv imports frida ${after ?? '(none)'} after install, expected ${FRIDA_VERSION}`);
console.log(`sidecar ready: .venv has frida ${FRIDA_VERSION}`);
