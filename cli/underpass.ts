/**
 * The `underpass` command: `server`, `proxy`, `redirector`, and `run` (the same as `hook-run`). This file
 * only turns flags into options and errors into one line; each program lives in its own folder.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { applyConfigFile, collect, tryConfigPath, type FileExtras } from './config-file';
import { ConfigError, isUnderpassError, NoRedirectorError } from '../protocol/errors';
import type { StatusReply } from '../protocol/ipc';
import type { ProxyEvent } from '../proxy/proxy';
import type { LogFormat, Logger } from '../runtime/log';
import {
  DEFAULT_LISTEN,
  DEFAULT_PSEUDO_NET,
  DEFAULT_TRANSPORT,
  DEFAULT_ZONE,
  GRACE_MS,
  KEEPALIVE_MS,
  TRANSPORT_KINDS,
} from '../protocol/defaults';
import type { ExtraRoute, Metrics, MetricsSnapshot, ProgramName } from '../runtime/metrics';
import { defaultIpcPath } from '../runtime/paths';
import type { LinkOptions } from '../runtime/link-config';
import type { TransportKind } from '../runtime/transport';

// Each program's modules (TLS, HTTP/2, WebSocket, certificate generation, logging) load only when that
// program runs: `hook-run` and `--help` stay fast.
/* eslint-disable @typescript-eslint/no-require-imports */
const load = {
  log: () => require('../runtime/log') as typeof import('../runtime/log'),
  linkConfig: () => require('../runtime/link-config') as typeof import('../runtime/link-config'),
  server: () => require('../server/server') as typeof import('../server/server'),
  proxy: () => require('../proxy/proxy') as typeof import('../proxy/proxy'),
  proxyConfig: () => require('../proxy/config') as typeof import('../proxy/config'),
  redirector: () => require('../redirector/redirector') as typeof import('../redirector/redirector'),
  redirectorConfig: () => require('../redirector/config') as typeof import('../redirector/config'),
  service: () => require('./service') as typeof import('./service'),
  fallbacks: () => require('../redirector/fallback-listeners') as typeof import('../redirector/fallback-listeners'),
  forward: () => require('../redirector/forward') as typeof import('../redirector/forward'),
  tokens: () => require('../server/tokens') as typeof import('../server/tokens'),
  metrics: () => require('../runtime/metrics') as typeof import('../runtime/metrics'),
  ipcClient: () => require('../runtime/ipc-client') as typeof import('../runtime/ipc-client'),
};

const version = (JSON.parse(fs.readFileSync(`${__dirname}/../../package.json`, 'utf8')) as { version: string }).version;

/** Prints one line for an expected failure and exits non-zero; a stack only with UNDERPASS_DEBUG=1. */
export function fail(program: string, error: unknown): never {
  const message = isUnderpassError(error) ? error.message : error instanceof Error ? error.message : String(error);
  process.stderr.write(`${program}: ${message}\n`);
  if (process.env.UNDERPASS_DEBUG === '1' && error instanceof Error && error.stack)
    process.stderr.write(error.stack + '\n');
  process.exit(1);
}

/** Stops cleanly on SIGINT/SIGTERM with exit status 0. */
function onSignals(stop: () => void | Promise<void>, logger: Logger): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    logger.info(`stopping (${signal})`);
    Promise.resolve(stop()).finally(() => process.exit(0));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

function readCa(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new ConfigError(
      `cannot read --ca ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'}): pass the server's DATA_DIR/tls/cert.pem`,
    );
  }
}

interface EndpointFlags {
  server?: string;
  ca?: string;
  token?: string;
  transport: TransportKind;
  proxy?: string;
  keepalive: number;
  grace: number;
  logFormat: LogFormat;
}

function linkOptions(flags: EndpointFlags, logger: Logger): LinkOptions {
  const { server, ca, token } = flags;
  if (!server) throw new ConfigError('missing --server HOST:PORT (the tunnel server to dial)');
  if (!ca) throw new ConfigError("missing --ca FILE (the server's DATA_DIR/tls/cert.pem)");
  if (!token) throw new ConfigError('missing --token TOKEN (the server prints where its token is)');
  return {
    server: load.linkConfig().parseHostPort(server, '--server'),
    ca: readCa(ca),
    token,
    logger,
    transport: flags.transport,
    keepaliveMs: flags.keepalive * 1000,
    graceMs: flags.grace * 1000,
    proxy: flags.proxy,
  };
}

type RedirectorFlags = EndpointFlags &
  MetricsFlags & { ipc: string; pseudoNet: string; serviceKey: string[] } & FallbackFlags;
/** The redirector's doors for programs the hook cannot enter (redirector/fallback-listeners.ts). */
type FallbackFlags = { dns: string; socks?: string; httpProxy?: string };

interface MetricsFlags {
  metrics?: string;
  metricsPerPublication?: boolean;
}

/** `--config`, `--metrics` and its label switch, on every daemon. */
function metricsOptions(command: Command): Command {
  return command
    .option('--config <file>', 'read flags from a TOML file (a flag given here wins, then the environment)')
    .option('--metrics <host:port>', 'serve Prometheus metrics at /metrics (the server adds its status page at /)')
    .option('--metrics-per-publication', 'label tunnel metrics by publication');
}

/**
 * A daemon's metrics when `--metrics` asks for them: made before the program (which counts into them),
 * told how to read the program's gauges once it exists, served once it is up.
 */
function daemonMetrics(
  program: ProgramName,
  flags: MetricsFlags,
): {
  metrics: Metrics | undefined;
  read(snapshot: () => MetricsSnapshot): void;
  serve(logger: Logger, extra?: ExtraRoute): Promise<void>;
} {
  const at = flags.metrics !== undefined ? load.linkConfig().parseHostPort(flags.metrics, '--metrics') : undefined;
  let snapshot = (): MetricsSnapshot => ({});
  const metrics =
    at === undefined
      ? undefined
      : new (load.metrics().Metrics)({
          program,
          version,
          perPublication: flags.metricsPerPublication === true,
          snapshot: () => snapshot(),
        });
  return {
    metrics,
    read: (read) => (snapshot = read),
    serve: async (logger, extra) => {
      if (at === undefined || metrics === undefined) return;
      const { serveMetrics, metricsAddress } = load.metrics();
      const listener = await serveMetrics(at, metrics, extra);
      logger.info(
        `metrics on http://${metricsAddress(listener)}/metrics${extra !== undefined ? ', status page on /' : ''}`,
      );
    },
  };
}

/** `underpass status` for a person: one line for the session, then the listeners and refusals. */
export function formatStatus(status: StatusReply): string {
  const { session } = status;
  const lines = [
    `session    ${session.up ? 'up' : 'down (reconnecting)'} to ${session.server}` +
      (session.route !== undefined ? ` over ${session.route}` : '') +
      (session.rttMs !== undefined ? `, round trip ${session.rttMs.toFixed(1)} ms` : '') +
      (session.account !== undefined ? `, account ${session.account}` : ''),
    `tunnels    ${status.tunnels} open`,
  ];
  const fallbacks = Object.entries(status.fallbacks).map(([kind, at]) => `${kind} ${String(at)}`);
  if (fallbacks.length > 0) lines.push(`fallbacks  ${fallbacks.join(', ')}`);
  lines.push(
    status.listeners.length > 0 ? 'listeners' : 'listeners  none yet (one opens on the first lookup of a name)',
  );
  for (const l of status.listeners)
    lines.push(
      `  ${l.host}  ${l.address}:${l.port}` +
        (l.listenPort !== undefined ? ` (listening on ${l.listenPort}: port ${l.port} is held locally)` : ''),
    );
  lines.push(status.refusals.length > 0 ? 'recent refusals' : 'recent refusals  none');
  for (const r of status.refusals) lines.push(`  ${r.time}  ${r.code}  ${r.message}`);
  return lines.join('\n') + '\n';
}

/** Flags every endpoint (proxy, redirector) shares. */
function endpointOptions(command: Command): Command {
  return metricsOptions(command)
    .addOption(new Option('--server <host:port>', 'tunnel server to dial').env('UNDERPASS_SERVER'))
    .addOption(new Option('--ca <file>', "the server's certificate, DATA_DIR/tls/cert.pem").env('UNDERPASS_CA'))
    .addOption(new Option('--token <token>', 'token the server accepts').env('UNDERPASS_TOKEN'))
    .addOption(
      new Option('--transport <kind>', 'tls, wss (WebSocket over HTTPS), or auto: try each')
        .choices(TRANSPORT_KINDS)
        .default(DEFAULT_TRANSPORT),
    )
    .option(
      '--proxy <url>',
      'HTTP or SOCKS5 proxy (http://, socks5://, socks5h://); default: https_proxy/all_proxy as curl reads them',
    )
    .addOption(keepaliveOption())
    .addOption(graceOption())
    .addOption(logFormat());
}

/** A flag's value as a number of seconds (its range is the program's config to check). */
export function seconds(flag: string): (value: string) => number {
  return (value) => {
    const n = value.trim() === '' ? NaN : Number(value);
    if (!Number.isFinite(n)) throw new ConfigError(`${flag} '${value}' is not a number of seconds`);
    return n;
  };
}

const keepaliveOption = (): Option =>
  new Option('--keepalive <seconds>', 'PING interval; a peer silent for two intervals is taken for dead')
    .default(KEEPALIVE_MS / 1000)
    .argParser(seconds('--keepalive'));

const graceOption = (): Option =>
  new Option(
    '--grace <seconds>',
    'how long tunneled connections wait for a dropped session to come back before they are reset',
  )
    .default(GRACE_MS / 1000)
    .argParser(seconds('--grace'));

const logFormat = (): Option =>
  new Option('--log-format <format>', 'log lines as readable text or JSON').choices(['text', 'json']).default('text');

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
    .addOption(keepaliveOption())
    .addOption(graceOption())
    .addOption(logFormat())
    .action(
      async (flags: {
        listen: string;
        dataDir: string;
        token?: string;
        accounts?: string;
        cert?: string;
        key?: string;
        zone: string;
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
            const { statusRoutes } = require('../server/status-page') as typeof import('../server/status-page');
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
    .action(async (flags: EndpointFlags & MetricsFlags & { publish: string[]; json?: boolean }) => {
      const logger = load.log().createLogger('proxy', flags.logFormat);
      try {
        const { parsePublish } = load.proxyConfig();
        const { ServiceProxy } = load.proxy();
        const daemon = daemonMetrics('proxy', flags);
        const proxy = new ServiceProxy({
          link: linkOptions(flags, logger),
          targets: flags.publish.map((spec) => {
            const target = parsePublish(spec);
            const timeout = fileExtras.connectTimeouts.get(target.name);
            return timeout !== undefined ? { ...target, connectTimeoutMs: timeout } : target;
          }),
          logger,
          metrics: daemon.metrics,
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
    });

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
    .action(async (flags: RedirectorFlags) => {
      const logger = load.log().createLogger('redirector', flags.logFormat);
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
          process.stderr.write(
            `underpass ls: nothing${prefix !== undefined ? ` under ${prefix}` : ''} that this token may use\n`,
          );
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

  const token = program.command('token').description("issue, list and revoke tokens in a server's data dir");
  const repeatable = (v: string, acc: string[]): string[] => [...acc, v];
  token
    .command('create')
    .description('issue a token; prints it once, alone on the last line (only its hash is kept)')
    .requiredOption('--data-dir <dir>', "the server's data dir (a running server takes the token at once)")
    .requiredOption('--account <name>', 'the account the token acts as')
    .option('--expires <duration>', 'lifetime: 30d, 12h, 90m, 2s (default: never)')
    .option('--publish <glob>', 'publication names it may publish (repeatable; default: any)', repeatable, [])
    .option('--connect <glob>', 'NAME.OWNER it may reach, e.g. "*.alice" (repeatable; default: any)', repeatable, [])
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

  program
    .command('run')
    .description('run a command with the hook (the same as hook-run)')
    .allowUnknownOption()
    .helpOption(false)
    .argument('[args...]');

  return program;
}

/** What the config file held beyond flags (the proxy's per-publication options). */
let fileExtras: FileExtras = { connectTimeouts: new Map() };

export async function main(argv: string[]): Promise<void> {
  // `underpass token list | head`: a reader that left is not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  if (argv[0] === 'run') {
    // Loaded only for `run`: the hook's controller is not needed by the daemons.
    const { runHookCli } = require('../hook/run') as typeof import('../hook/run');
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
