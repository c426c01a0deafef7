/**
 * `underpass service install server|proxy|redirector`: a systemd unit that runs one program with the
 * flags the user gives, restarts it when it fails, and survives a reboot. Writing the unit is pure
 * (`serviceUnit`), so its text is tested as it is; installing only places the file and, when asked,
 * runs systemctl.
 *
 * The unit runs the same Node and the same `bin/underpass.js` that wrote it, by absolute path: a service
 * must not depend on the PATH or the working directory systemd gives it.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from '../protocol/errors';

export const SERVICE_PROGRAMS = ['server', 'proxy', 'redirector'] as const;
export type ServiceProgram = (typeof SERVICE_PROGRAMS)[number];
/** A user unit (systemctl --user: runs while the user has a session, or always with lingering) or a system one. */
export type ServiceScope = 'user' | 'system';

export interface ServiceUnitOptions {
  program: ServiceProgram;
  /** The program's own flags, as they would follow `underpass PROGRAM`. */
  args: readonly string[];
  scope: ServiceScope;
  /** Absolute path of the Node executable. */
  node: string;
  /** Absolute path of bin/underpass.js. */
  entry: string;
  /** A file (mode 0600) the unit takes its environment from: where the token goes. */
  environmentFile?: string;
}

const DESCRIPTIONS: Record<ServiceProgram, string> = {
  server: 'Underpass tunnel server',
  proxy: 'Underpass service proxy',
  redirector: 'Underpass redirector',
};

/** Seconds systemd waits before a restart after a failure; a crash loop then costs little. */
export const RESTART_SEC = 2;

/**
 * Quotes one argument for an ExecStart line. systemd splits on white space, honours double quotes with
 * C-style escapes, and expands `%` specifiers and `$` variables, so those are escaped as `%%` and `$$`.
 */
export function quoteExecArg(arg: string): string {
  const escaped = arg.replaceAll('%', '%%').replaceAll('$', '$$$$');
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(escaped)) return escaped;
  return `"${escaped.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n')}"`;
}

/** The unit's file name for a program. */
export function unitName(program: ServiceProgram): string {
  return `underpass-${program}.service`;
}

/** Where systemd looks for a unit of this scope (`$XDG_CONFIG_HOME/systemd/user`, or /etc/systemd/system). */
export function unitDir(scope: ServiceScope, env: NodeJS.ProcessEnv = process.env, home = os.homedir()): string {
  if (scope === 'system') return '/etc/systemd/system';
  const config =
    env.XDG_CONFIG_HOME !== undefined && env.XDG_CONFIG_HOME !== '' ? env.XDG_CONFIG_HOME : path.join(home, '.config');
  return path.join(config, 'systemd', 'user');
}

/** The unit's text. A server with no --data-dir keeps its state in systemd's state directory. */
export function serviceUnit(options: ServiceUnitOptions): string {
  const hasFlag = (flag: string): boolean => options.args.some((a) => a === flag || a.startsWith(`${flag}=`));
  const ownState = options.program === 'server' && !hasFlag('--data-dir') && !hasFlag('--config');
  const exec = [options.node, options.entry, options.program, ...options.args].map(quoteExecArg);
  // %S is /var/lib for a system unit and ~/.local/state for a user unit; StateDirectory creates it.
  if (ownState) exec.push('--data-dir', '%S/underpass');
  const service = [
    'Type=exec',
    ...(options.environmentFile !== undefined ? [`EnvironmentFile=${quoteExecArg(options.environmentFile)}`] : []),
    `ExecStart=${exec.join(' ')}`,
    'Restart=on-failure',
    `RestartSec=${RESTART_SEC}`,
    // Every program stops on SIGTERM with status 0; a stop that hangs is killed after this.
    'TimeoutStopSec=15',
    ...(ownState ? ['StateDirectory=underpass', 'StateDirectoryMode=0700'] : []),
    ...(options.scope === 'system' ? ['NoNewPrivileges=yes'] : []),
  ];
  return [
    '[Unit]',
    `Description=${DESCRIPTIONS[options.program]}`,
    'After=network-online.target',
    'Wants=network-online.target',
    '',
    '[Service]',
    ...service,
    '',
    '[Install]',
    `WantedBy=${options.scope === 'system' ? 'multi-user.target' : 'default.target'}`,
    '',
  ].join('\n');
}

/**
 * Takes `--token TOKEN` out of a program's flags: a unit file is world-readable, so the token travels in
 * the environment (UNDERPASS_TOKEN, which every program reads) from a file only its owner can read.
 */
export function splitToken(args: readonly string[]): { args: string[]; token?: string } {
  const rest: string[] = [];
  let token: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--token' && i + 1 < args.length) token = args[++i];
    else if (arg.startsWith('--token=')) token = arg.slice('--token='.length);
    else rest.push(arg);
  }
  return token !== undefined ? { args: rest, token } : { args: rest };
}

/** One `NAME="VALUE"` line of a systemd EnvironmentFile. */
export function environmentLine(name: string, value: string): string {
  return `${name}="${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('$', '\\$').replaceAll('`', '\\`')}"`;
}

export interface InstallResult {
  path: string;
  /** The file holding the token, when the flags had one. */
  environmentFile?: string;
  /** The systemctl commands that start it (run already with `enable`). */
  next: string[];
}

/** Writes the unit (mode 0644) and, with `enable`, reloads systemd and starts it now and at boot. */
export function installService(
  options: ServiceUnitOptions & { dir?: string; enable?: boolean; force?: boolean },
): InstallResult {
  const dir = options.dir ?? unitDir(options.scope);
  const file = path.join(dir, unitName(options.program));
  if (fs.existsSync(file) && options.force !== true)
    throw new ConfigError(`${file} exists: pass --force to replace it`);
  const { args, token } = splitToken(options.args);
  const environmentFile = token !== undefined ? file.replace(/\.service$/, '.env') : undefined;
  try {
    fs.mkdirSync(dir, { recursive: true });
    if (environmentFile !== undefined) {
      fs.rmSync(environmentFile, { force: true });
      fs.writeFileSync(environmentFile, `${environmentLine('UNDERPASS_TOKEN', token!)}\n`, { mode: 0o600 });
    }
    fs.writeFileSync(
      file,
      serviceUnit({ ...options, args, ...(environmentFile !== undefined ? { environmentFile } : {}) }),
      {
        mode: 0o644,
      },
    );
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError(
      `cannot write ${file} (${code}): ${options.scope === 'system' ? 'run as root, or pass --user' : 'pass --dir DIR'}`,
    );
  }
  const systemctl = options.scope === 'user' ? ['systemctl', '--user'] : ['systemctl'];
  const next = [
    [...systemctl, 'daemon-reload'].join(' '),
    [...systemctl, 'enable', '--now', unitName(options.program)].join(' '),
  ];
  if (options.enable === true) {
    for (const command of next) {
      const [bin, ...rest] = command.split(' ');
      const ran = spawnSync(bin!, rest, { stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' });
      if (ran.status !== 0) {
        const why = (ran.error?.message ?? ran.stderr ?? '').trim().split('\n').pop() ?? '';
        throw new ConfigError(`wrote ${file}, but '${command}' failed${why ? ` (${why})` : ''}: run it yourself`);
      }
    }
  }
  return { path: file, next, ...(environmentFile !== undefined ? { environmentFile } : {}) };
}
