/**
 * The `underpass` command: `server`, `proxy`, `redirector`, `forward`, `status`, and `run` (the same as
 * `hook-run`); `token` and `service` are in admin-commands.ts, the flags they share in options.ts. This
 * file only turns flags into options and errors into one line; each program lives in its own folder.
 */
import { Command, CommanderError, Option } from 'commander';
import {
  DEFAULT_LISTEN,
  DEFAULT_PSEUDO_NET,
  DEFAULT_ZONE,
  DIRECT_DEADLINE_MS,
  DIRECT_RETRY_MS,
} from '../protocol/defaults';
import { ConfigError, NoRedirectorError } from '../protocol/errors';
import type { ProxyEvent } from '../proxy/proxy';
import type { LogFormat } from '../runtime/log';
import { dropBoundAsyncResource } from '../runtime/bound-async-resource';
import { defaultIpcPath } from '../runtime/paths';
import { addAdminCommands } from './admin-commands';
import { applyConfigFile, collect, tryConfigPath, type FileExtras } from './config-file';
import { load, version } from './load';
import {
  clusterOptions,
  daemonMetrics,
  endpointOptions,
  fail,
  formatStatus,
  graceOption,
  keepaliveOption,
  linkOptions,
  logFormat,
  metricsOptions,
  onSignals,
  seconds,
  type EndpointFlags,
  type MetricsFlags,
  type RedirectorFlags,
} from './options';

export { fail, formatStatus, seconds } from './options';

/**
 * What `ls` says when it found nothing. A pseudo name is NAME.ACCOUNT.ZONE, so `ls home` finds none of
 * `printer.home.jsmith`: a prefix without the token's account is suggested with it.
 */
async function lsHint(ipc: string, prefix: string | undefined): Promise<string> {
  if (prefix === undefined) return ' that this token may use';
  const status = await load.ipcClient().ipcRequest(ipc, 'status', {});
  const account = status.ok ? status.session.account : undefined;
  const suggestion =
    account !== undefined && !prefix.toLowerCase().split('.').includes(account.toLowerCase())
      ? ` (names end with their account: try 'underpass ls ${prefix}.${account}')`
      : '';
  return ` under ${prefix} that this token may use${suggestion}`;
}

export function buildProgram(): Command {
  const program = new Command('underpass')
    .version(version)
    .description("Reach TCP services behind someone else's firewall from unmodified client apps.")
    .exitOverride()
    // Commander's own errors become one line too, with where to look.
    .configureOutput({
      outputError: (text, write) =>
        write(`underpass: ${text.replace(/^error: /, '').trim()} (see 'underpass --help')\n`),
    });

  metricsOptions(program.command('server'))
    .description('run the public publishing/tunneling server')
    .option('--listen <host:port>', 'address to listen on', DEFAULT_LISTEN)
    .requiredOption('--data-dir <dir>', 'directory for the certificate, token and publications')
    .addOption(
      new Option(
        '--token <token>',
        'token proxies and redirectors present (default: generated into DATA_DIR/token)',
      ).env('UNDERPASS_TOKEN'),
    )
    .option(
      '--accounts <file>',
      'more accounts and grants: {"tokens": {"ACCOUNT": "TOKEN"}, "grants": {"OWNER/PUBLICATION": ["ACCOUNT"]}}',
    )
    .option('--cert <file>', 'TLS certificate (PEM) instead of the generated one')
    .option('--key <file>', 'TLS private key (PEM) for --cert')
    .option('--zone <zone>', 'DNS zone pseudo names live under', DEFAULT_ZONE)
    .option(
      '--forward-allow <rule>',
      'a destination it may dial for redirectors (forwarding mode): [ACCOUNT=].suffix, name, address or CIDR, [:PORT|:LOW-HIGH]; repeatable; none by default',
      collect,
      [] as string[],
    )
    .option(
      '--placement <file>',
      "in a cluster: 'PATTERN NODE' lines placing endpoints by the names they publish (NAME.ACCOUNT) or their account",
    )
    .addOption(
      new Option(
        '--cluster <url>',
        'act as one service with the other nodes sharing this Redis: redis://HOST:PORT[/DB], rediss://…, redis+sentinel://HOST:PORT[,…]/PRIMARY[/DB], redis+cluster://HOST:PORT[,…]',
      ).env('UNDERPASS_CLUSTER'),
    )
    .option('--node <name>', "this node's name in the cluster (with --cluster)")
    .option('--advertise <host:port>', 'where endpoints and other nodes reach this node (default: --listen)')
    .addOption(keepaliveOption())
    .addOption(graceOption())
    .addOption(logFormat())
    .action(
      async (flags: {
        cluster?: string;
        node?: string;
        advertise?: string;
        listen: string;
        placement?: string;
        dataDir: string;
        token?: string;
        accounts?: string;
        cert?: string;
        key?: string;
        zone: string;
        forwardAllow: string[];
        metrics?: string;
        metricsPerPublication?: boolean;
        keepalive: number;
        grace: number;
        logFormat: LogFormat;
      }) => {
        const logger = load.log().createLogger('server', flags.logFormat);
        try {
          const daemon = daemonMetrics('server', flags);
          const { metrics } = daemon;
          const listen = load.linkConfig().parseHostPort(flags.listen, '--listen');
          if ((flags.cert === undefined) !== (flags.key === undefined))
            throw new ConfigError('--cert and --key go together: pass both or neither');
          const server = new (load.server().TunnelServer)({
            host: listen.host,
            port: listen.port,
            dataDir: flags.dataDir,
            token: flags.token,
            accountsFile: flags.accounts,
            cert:
              flags.cert !== undefined && flags.key !== undefined ? { cert: flags.cert, key: flags.key } : undefined,
            zone: flags.zone,
            keepaliveMs: flags.keepalive * 1000,
            graceMs: flags.grace * 1000,
            logger,
            forwardAllow: load.forwarding().parseAllowRules(flags.forwardAllow),
            placement: flags.placement !== undefined ? load.placement().loadPlacement(flags.placement) : [],
            cluster: clusterOptions(flags),
            ...(metrics !== undefined ? { metrics } : {}),
          });
          daemon.read(() => server.snapshot());
          const address = await server.start().catch((e: NodeJS.ErrnoException) => {
            if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') {
              throw new ConfigError(`cannot listen on ${flags.listen} (${e.code}): choose another --listen`);
            }
            throw e;
          });
          logger.info(`listening on ${address.address}:${address.port}`, {
            certificate: server.certPath,
            ...(server.tokenFile ? { token: server.tokenFile } : {}),
            zone: server.zone,
          });
          if (metrics !== undefined) {
            const { statusRoutes } = load.statusPage();
            await daemon.serve(
              logger,
              statusRoutes(() => server.status()),
            );
          }
          onSignals(() => server.stop(), logger);
        } catch (e) {
          fail('underpass server', e);
        }
      },
    );

  endpointOptions(
    program.command('proxy').description('publish local services to the tunnel server (runs next to the real server)'),
  )
    .option('--publish <name=host:port>', 'publish a service (repeatable)', collect, [] as string[])
    .option('--json', 'print one JSON event per line on stdout')
    .addOption(
      new Option(
        '--proxy-protocol <version>',
        "tell every target who the client is (a config file's per publication)",
      ).choices(['v1', 'v2']),
    )
    .option(
      '--direct-listen <host:port>',
      'a TLS listener redirectors that can reach this host use instead of the server (the direct hop)',
    )
    .action(
      async (
        flags: EndpointFlags &
          MetricsFlags & { publish: string[]; json?: boolean; proxyProtocol?: 'v1' | 'v2'; directListen?: string },
      ) => {
        const logger = load.log().createLogger('proxy', flags.logFormat);
        // A stream per tunnel: Node 20's request() would leave old-space garbage for each (the module says).
        dropBoundAsyncResource();
        try {
          const { parsePublish, parseDirectListen } = load.proxyConfig();
          const { ServiceProxy } = load.proxy();
          const daemon = daemonMetrics('proxy', flags);
          const proxy = new ServiceProxy({
            link: linkOptions(flags, logger),
            targets: flags.publish.map((spec) => {
              const target = parsePublish(spec);
              const timeout = fileExtras.connectTimeouts.get(target.name);
              const proxyProtocol = fileExtras.proxyProtocols.get(target.name) ?? flags.proxyProtocol;
              return {
                ...target,
                ...(timeout !== undefined ? { connectTimeoutMs: timeout } : {}),
                ...(proxyProtocol !== undefined ? { proxyProtocol } : {}),
              };
            }),
            logger,
            metrics: daemon.metrics,
            ...(flags.directListen !== undefined ? { directListen: parseDirectListen(flags.directListen) } : {}),
          });
          daemon.read(() => proxy.snapshot());
          proxy.on('event', (event: ProxyEvent) => {
            if (flags.json) process.stdout.write(JSON.stringify(event) + '\n');
            else if (event.event === 'published')
              process.stdout.write(
                `published ${event.name}: ${event.host} → ${event.target} (service key ${event.key})\n`,
              );
          });
          await proxy.start();
          await daemon.serve(logger);
          onSignals(() => proxy.stop(), logger);
        } catch (e) {
          fail('underpass proxy', e);
        }
      },
    );

  endpointOptions(program.command('redirector').description('serve hooks on this machine and tunnel their connections'))
    .option('--ipc <path>', 'Unix socket hooks connect to', defaultIpcPath())
    .option('--pseudo-net <cidr>', 'loopback range pseudo addresses come from', DEFAULT_PSEUDO_NET)
    .option(
      '--service-key <name=key>',
      "present a publication's service key (another account's publication; repeatable)",
      collect,
      [] as string[],
    )
    .option('--dns <host:port>', "DNS responder for the zone, for programs the hook cannot enter ('off': none)", 'auto')
    .option('--socks <host:port>', 'SOCKS5 listener with remote names (curl --socks5-hostname), on loopback')
    .option('--http-proxy <host:port>', 'HTTP CONNECT proxy listener (curl -x), on loopback')
    .option(
      '--forward <pattern>',
      'a plain destination reached through the tunnel server (forwarding mode): .suffix, name, address or CIDR, [:PORT|:LOW-HIGH]; repeatable',
      collect,
      [] as string[],
    )
    .addOption(
      new Option(
        '--direct-retry <seconds>',
        "after a publication's direct hop failed, relay and try direct again this much later (doubling up to 16×)",
      )
        .default(DIRECT_RETRY_MS / 1000)
        .argParser(seconds('--direct-retry')),
    )
    .action(async (flags: RedirectorFlags & { forward: string[]; directRetry: number }) => {
      const logger = load.log().createLogger('redirector', flags.logFormat);
      dropBoundAsyncResource();
      try {
        const { parseServiceKey } = load.redirectorConfig();
        const { Redirector } = load.redirector();
        const serviceKeys = new Map(flags.serviceKey.map(parseServiceKey));
        const daemon = daemonMetrics('redirector', flags);
        const redirector = new Redirector({
          metrics: daemon.metrics,
          link: linkOptions(flags, logger),
          ipcPath: flags.ipc,
          pseudoNet: flags.pseudoNet,
          serviceKeys,
          logger,
          fallbacks: load.fallbacks().fallbackOptions(flags),
          forward: flags.forward.map((p) => load.forwardRules().parseForwardRule(p)),
          // The direct sessions' keepalive is the session's own (--keepalive).
          direct: {
            retryMs: flags.directRetry * 1000,
            deadlineMs: DIRECT_DEADLINE_MS,
            keepaliveMs: flags.keepalive * 1000,
          },
        });
        daemon.read(() => redirector.snapshot());
        const info = await redirector.start();
        logger.info(`serving hooks on ${flags.ipc}`, { zone: info.zone, account: info.account });
        await daemon.serve(logger);
        onSignals(() => redirector.stop(), logger);
      } catch (e) {
        fail('underpass redirector', e);
      }
    });

  program
    .command('forward')
    .description('a plain local port whose connections reach a publication, like ssh -L (stays in the foreground)')
    .argument('<[local-host:]local-port>', 'where to listen (host default 127.0.0.1)')
    .argument('<name:port>', 'the publication: its pseudo name and published port')
    .option('--ipc <path>', 'Unix socket of the redirector', defaultIpcPath())
    .addOption(logFormat())
    .action(async (local: string, target: string, flags: { ipc: string; logFormat: LogFormat }) => {
      const logger = load.log().createLogger('forward', flags.logFormat);
      try {
        const forward = await load.forward().startForward({ local, target, ipcPath: flags.ipc, logger });
        onSignals(() => forward.stop(), logger);
      } catch (e) {
        fail('underpass forward', e);
      }
    });

  program
    .command('ls')
    .description(
      'list the publications under PREFIX (a pseudo name, or its start without the zone), through the redirector',
    )
    .argument('[prefix]', 'e.g. home.jsmith: what lies under home.jsmith.ZONE (default: everything you may use)')
    .option('--ipc <path>', 'Unix socket of the redirector', defaultIpcPath())
    .option('--json', 'one JSON object per line')
    .action(async (prefix: string | undefined, flags: { ipc: string; json?: boolean }) => {
      try {
        const reply = await load.ipcClient().ipcRequest(flags.ipc, 'list', { under: prefix ?? '' });
        if (!reply.ok) throw new NoRedirectorError(reply.message);
        const width = Math.max(0, ...reply.names.map((n) => n.host.length));
        for (const n of reply.names) {
          if (flags.json === true) process.stdout.write(JSON.stringify(n) + '\n');
          else process.stdout.write(`${n.host.padEnd(width)}  port ${n.port}  ${n.online ? 'online' : 'offline'}\n`);
        }
        if (reply.truncated)
          process.stderr.write('underpass ls: more names than one answer holds: give a longer PREFIX\n');
        if (reply.names.length === 0 && flags.json !== true)
          process.stderr.write(`underpass ls: nothing${await lsHint(flags.ipc, prefix)}\n`);
      } catch (e) {
        fail('underpass ls', e);
      }
    });

  program
    .command('status')
    .description("the redirector's session, listeners and latest refusals")
    .option('--ipc <path>', 'Unix socket of the redirector', defaultIpcPath())
    .option('--json', 'the status as one JSON object')
    .action(async (flags: { ipc: string; json?: boolean }) => {
      try {
        const reply = await load.ipcClient().ipcRequest(flags.ipc, 'status', {});
        if (!reply.ok) throw new NoRedirectorError(reply.message);
        if (flags.json === true) {
          process.stdout.write(JSON.stringify(reply) + '\n');
          return;
        }
        process.stdout.write(formatStatus(reply));
      } catch (e) {
        fail('underpass status', e);
      }
    });

  addAdminCommands(program);

  program
    .command('run')
    .description('run a command with the hook (the same as hook-run)')
    .allowUnknownOption()
    .helpOption(false)
    .argument('[args...]');

  return program;
}

/** What the config file held beyond flags (the proxy's per-publication options). */
let fileExtras: FileExtras = { connectTimeouts: new Map(), proxyProtocols: new Map() };

export async function main(argv: string[]): Promise<void> {
  // `underpass token list | head`: a reader that left is not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  if (argv[0] === 'run') {
    // Loaded only for `run`: the hook's controller is not needed by the daemons.
    const { runHookCli } = load.hookRun();
    process.exitCode = await runHookCli(argv.slice(1));
    return;
  }
  const program = buildProgram();
  const configFile = tryConfigPath(argv);
  const sub = program.commands.find((c) => c.name() === argv[0]);
  if (configFile !== null && sub !== undefined && sub.options.some((o) => o.long === '--config')) {
    try {
      fileExtras = await applyConfigFile(sub, configFile);
    } catch (e) {
      fail(`underpass ${sub.name()}`, e);
    }
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode);
    fail('underpass', e);
  }
}
