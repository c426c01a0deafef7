// Makes the TypeScript types that the Node `frida` binding publishes available to `tsc`, also where the
// binding itself did not install.
//
// `frida` is an optional dependency: its install step downloads a native build, which fails on machines
// without access to the binding's release host, and npm then removes the whole package, types included.
// hook/controller.ts is still type-checked against the binding's real API: when node_modules/frida is
// absent, this script takes the same package from the registry (`npm pack`, which reuses npm's cache of
// the tarball `npm ci` already fetched), checks it against the integrity recorded in package-lock.json,
// and keeps only its declaration files in node_modules/.frida-types/. tsconfig.json maps `frida` to the
// installed binding's declarations first and to these second. Nothing is installed and no script of the
// package runs, so a user's `npm ci` still installs the binding wherever it can.
//
// Idempotent and quick once done; run before every `tsc` (npm run build, npm run lint).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const installed = path.join(root, 'node_modules', 'frida');
const target = path.join(root, 'node_modules', '.frida-types');
/** What tsc needs from the package: its package.json ("type": "module") and its declaration files. */
const FILES = ['package.json', 'build/src/frida.d.ts', 'build/src/frida_binding.d.ts'];

function fail(message) {
  console.error(`frida-types: ${message}`);
  process.exit(1);
}

const locked = JSON.parse(readFileSync(path.join(root, 'package-lock.json'), 'utf8')).packages?.['node_modules/frida'];
if (!locked?.version || !locked.integrity)
  fail("package-lock.json has no entry for the optional dependency 'frida': run 'npm install'");

if (existsSync(path.join(installed, 'build', 'src', 'frida.d.ts'))) process.exit(0); // the binding itself is there
if (
  FILES.every((file) => existsSync(path.join(target, file))) &&
  JSON.parse(readFileSync(path.join(target, 'package.json'), 'utf8')).version === locked.version
) {
  process.exit(0);
}

const work = mkdtempSync(path.join(tmpdir(), 'underpass-frida-types-'));
try {
  // Inside `npm run`, npm_execpath is the npm that runs us; otherwise the one on PATH.
  const npm = process.env.npm_execpath ? [process.execPath, process.env.npm_execpath] : ['npm'];
  const packed = spawnSync(
    npm[0],
    [...npm.slice(1), 'pack', `frida@${locked.version}`, '--pack-destination', work, '--json', '--silent'],
    { encoding: 'utf8' },
  );
  if (packed.status !== 0) {
    const reason =
      `${packed.stderr ?? ''}${packed.error?.message ?? ''}`.trim().split('\n').pop() || `exit status ${packed.status}`;
    fail(
      `cannot fetch frida@${locked.version} from the npm registry for its types (${reason}): check access to the registry`,
    );
  }
  const tarball = path.join(work, JSON.parse(packed.stdout)[0].filename);
  const integrity = `sha512-${createHash('sha512').update(readFileSync(tarball)).digest('base64')}`;
  if (integrity !== locked.integrity)
    fail(`frida@${locked.version} from the registry does not match package-lock.json's integrity: not using it`);
  const untar = spawnSync('tar', ['-xzf', tarball, '-C', work, ...FILES.map((file) => `package/${file}`)], {
    encoding: 'utf8',
  });
  if (untar.status !== 0)
    fail(`cannot unpack ${path.basename(tarball)}: ${(untar.stderr || untar.error?.message || '').trim()}`);
  rmSync(target, { recursive: true, force: true });
  for (const file of FILES) cpSync(path.join(work, 'package', file), path.join(target, file));
  console.log(
    `frida-types: declarations of frida@${locked.version} in node_modules/.frida-types (the binding is not installed)`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}
