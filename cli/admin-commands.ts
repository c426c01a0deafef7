/**
 * The CLI's administration commands, which run no daemon: `underpass token create|list|revoke` (tokens in
 * a server's data dir) and `underpass service install` (a systemd unit for a program).
 */
import path from 'node:path';
import type { Command } from 'commander';
import { ConfigError } from '../protocol/errors';
import { collect } from './config-file';
import { load } from './load';
import { fail } from './options';

/** Adds `token` and `service` to `program`, whose daemon commands `service install` checks flags against. */
export function addAdminCommands(program: Command): void {
  const token = program.command('token').description("issue, list and revoke tokens in a server's data dir");
  token
    .command('create')
    .description('issue a token; prints it once, alone on the last line (only its hash is kept)')
    .requiredOption('--data-dir <dir>', "the server's data dir (a running server takes the token at once)")
    .requiredOption('--account <name>', 'the account the token acts as')
    .option('--expires <duration>', 'lifetime: 30d, 12h, 90m, 2s (default: never)')
    .option('--publish <glob>', 'publication names it may publish (repeatable; default: any)', collect, [])
    .option('--connect <glob>', 'NAME.OWNER it may reach, e.g. "*.alice" (repeatable; default: any)', collect, [])
    .option('--name <label>', 'a label for lists and the audit log')
    .action(
      (flags: {
        dataDir: string;
        account: string;
        expires?: string;
        publish: string[];
        connect: string[];
        name?: string;
      }) => {
        try {
          const tokens = load.tokens();
          const created = tokens.createToken(flags.dataDir, {
            account: flags.account,
            ...(flags.expires !== undefined ? { expiresInMs: tokens.parseExpires(flags.expires) } : {}),
            publish: flags.publish,
            connect: flags.connect,
            ...(flags.name !== undefined ? { name: flags.name } : {}),
          });
          const until = created.entry.expires !== undefined ? `expires ${created.entry.expires}` : 'never expires';
          process.stdout.write(
            `token ${created.id} for account ${created.entry.account}, ${until}\n${created.token}\n`,
          );
        } catch (e) {
          fail('underpass token create', e);
        }
      },
    );
  token
    .command('list')
    .description('every issued token: id, account, scopes, expiry, last use')
    .requiredOption('--data-dir <dir>', "the server's data dir")
    .option('--json', 'one JSON object per line')
    .action((flags: { dataDir: string; json?: boolean }) => {
      try {
        const listed = load.tokens().listTokens(flags.dataDir);
        for (const t of listed) {
          if (flags.json === true) {
            const { digest: _digest, ...shown } = t;
            process.stdout.write(JSON.stringify(shown) + '\n');
            continue;
          }
          const state =
            t.revoked !== undefined
              ? `revoked ${t.revoked}`
              : t.expires !== undefined && Date.parse(t.expires) <= Date.now()
                ? `expired ${t.expires}`
                : t.expires !== undefined
                  ? `expires ${t.expires}`
                  : 'no expiry';
          const scopes = [
            t.publish !== undefined ? `publish ${t.publish.join(',')}` : '',
            t.connect !== undefined ? `connect ${t.connect.join(',')}` : '',
          ].filter((x) => x !== '');
          process.stdout.write(
            `${t.id}  ${t.account}  ${state}  last use ${t.lastUsed ?? 'never'}` +
              `${scopes.length > 0 ? `  ${scopes.join('  ')}` : ''}${t.name !== undefined ? `  (${t.name})` : ''}\n`,
          );
        }
        if (listed.length === 0 && flags.json !== true) process.stdout.write('no tokens issued\n');
      } catch (e) {
        fail('underpass token list', e);
      }
    });
  token
    .command('revoke')
    .description('revoke a token: a running server ends its sessions and resets their tunnels at once')
    .argument('<id>', 'the token id (from token list), or the token itself')
    .requiredOption('--data-dir <dir>', "the server's data dir")
    .action((id: string, flags: { dataDir: string }) => {
      try {
        const revoked = load.tokens().revokeToken(flags.dataDir, id);
        process.stdout.write(`revoked token ${revoked.id} of account ${revoked.account} (${revoked.revoked ?? ''})\n`);
      } catch (e) {
        fail('underpass token revoke', e);
      }
    });

  const service = program.command('service').description('run a program as a systemd service');
  service
    .command('install')
    .description('write a systemd unit that runs PROGRAM with FLAGS and restarts it on failure')
    .argument('<program>', `one of ${load.service().SERVICE_PROGRAMS.join(', ')}`)
    .argument('[flags...]', "the program's own flags, after --")
    .option('--user', 'a user unit (systemctl --user; the default when not root)')
    .option('--system', 'a system unit in /etc/systemd/system (the default as root)')
    .option('--dir <dir>', 'write the unit here instead of where systemd looks')
    .option('--enable', 'then run systemctl daemon-reload and enable --now')
    .option('--force', 'replace an existing unit')
    .action(
      (
        name: string,
        args: string[],
        flags: { user?: boolean; system?: boolean; dir?: string; enable?: boolean; force?: boolean },
      ) => {
        try {
          const { SERVICE_PROGRAMS, installService } = load.service();
          const known = SERVICE_PROGRAMS.find((p) => p === name);
          if (known === undefined)
            throw new ConfigError(`cannot install '${name}' as a service: choose ${SERVICE_PROGRAMS.join(', ')}`);
          if (flags.user === true && flags.system === true)
            throw new ConfigError('--user and --system exclude each other');
          // The flags are checked now, by the program's own parser, rather than by a unit that fails at boot.
          const unknown = program.commands.find((c) => c.name() === known)?.parseOptions(args).unknown ?? [];
          if (unknown.length > 0)
            throw new ConfigError(`'underpass ${known}' has no flag ${unknown[0]} (see 'underpass ${known} --help')`);
          const root = typeof process.getuid === 'function' && process.getuid() === 0;
          const scope = flags.system === true || (flags.user !== true && root) ? 'system' : 'user';
          const entry = path.resolve(__dirname, '..', '..', 'bin', 'underpass.js');
          const result = installService({
            program: known,
            args,
            scope,
            node: process.execPath,
            entry,
            ...(flags.dir !== undefined ? { dir: flags.dir } : {}),
            enable: flags.enable === true,
            force: flags.force === true,
          });
          process.stdout.write(`wrote ${result.path}\n`);
          if (result.environmentFile !== undefined)
            process.stdout.write(`wrote ${result.environmentFile} (mode 0600: the token)\n`);
          if (flags.enable === true) process.stdout.write(`started ${path.basename(result.path)}\n`);
          else process.stdout.write(`start it with:\n  ${result.next.join('\n  ')}\n`);
        } catch (e) {
          fail('underpass service install', e);
        }
      },
    );
}
