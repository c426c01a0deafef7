/**
 * Throw-away PostgreSQL clusters for the end-to-end tests: Debian's server binaries, a fresh data
 * directory with trust authentication, run as the postgres user when the tests run as root (the server
 * refuses root), optionally inside a test's network namespace.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { inNetns, Program, run } from './harness';

/** The bin directory of Debian's newest PostgreSQL server (initdb, postgres), or null. */
export function postgresBin(): string | null {
  const base = '/usr/lib/postgresql';
  if (!fs.existsSync(base)) return null;
  const versions = fs
    .readdirSync(base)
    .filter((v) => fs.existsSync(path.join(base, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length === 0 ? null : path.join(base, versions[0]!, 'bin');
}

/** `command args` as the postgres user when we are root. */
function asPostgresUser(command: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
}

export interface ClusterOptions {
  /** `listen_addresses` (default 127.0.0.1; `*` for every address). */
  listen?: string;
  /** `cluster_name`, which `current_setting('cluster_name')` answers: tells two clusters apart. */
  name?: string;
  /** Run the server inside this network namespace. */
  netns?: string;
}

/** Initialises a cluster in `dir` (which it makes world-writable for the postgres user) and starts it. */
export async function startPostgres(dir: string, port: number, options: ClusterOptions = {}): Promise<Program> {
  const bin = postgresBin();
  assert.ok(bin !== null, "PostgreSQL's server (initdb) is missing: run 'npm run prerequisites'");
  if (process.getuid?.() === 0) fs.chmodSync(dir, 0o777);
  const data = path.join(dir, 'data');
  const [initdb, initArgs] = asPostgresUser(path.join(bin, 'initdb'), [
    '-D',
    data,
    '-U',
    'postgres',
    '--auth=trust',
    '--no-sync',
    '-E',
    'UTF8',
    '--locale=C',
  ]);
  const init = await run(initdb, initArgs, { cwd: dir });
  assert.equal(init.code, 0, `initdb failed:\n${init.stderr}${init.stdout}`);
  const settings = [`listen_addresses=${options.listen ?? '127.0.0.1'}`, 'fsync=off'];
  if (options.name !== undefined) settings.push(`cluster_name=${options.name}`);
  const [postgres, args] = asPostgresUser(path.join(bin, 'postgres'), [
    '-D',
    data,
    '-p',
    String(port),
    '-k',
    dir,
    ...settings.flatMap((setting) => ['-c', setting]),
  ]);
  const [command, commandArgs] = inNetns(options.netns, postgres, args);
  const server = new Program(
    `postgres${options.name === undefined ? '' : ` (${options.name})`}`,
    command,
    commandArgs,
    {
      cwd: dir,
    },
  );
  await server.waitFor(/ready to accept connections/, 60_000);
  return server;
}
