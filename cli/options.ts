/**
 * What the CLI's commands share: the flags every endpoint and daemon takes (with their defaults from
 * protocol/defaults.ts), turning them and the environment into a program's options, the one-line
 * failure, the clean stop on a signal, and the metrics a daemon serves.
 */
import fs from 'node:fs';
import { Command, Option } from 'commander';
import { ConfigError, isUnderpassError } from '../protocol/errors';
import type { StatusReply } from '../protocol/ipc';
import type { LogFormat, Logger } from '../runtime/log';
import { DEFAULT_TRANSPORT, GRACE_MS, KEEPALIVE_MS, TRANSPORT_KINDS } from '../protocol/defaults';
import type { ExtraRoute, Metrics, MetricsSnapshot, ProgramName } from '../runtime/metrics';
import type { LinkOptions } from '../runtime/link-config';
import type { ClusterConfig } from '../server/config';
import type { TransportKind } from '../runtime/transport';
import { load, version } from './load';

/** Prints one line for an expected failure and exits non-zero; a stack only with UNDERPASS_DEBUG=1. */
export function fail(program: string, error: unknown): never {
  const message = isUnderpassError(error) ? error.message : error instanceof Error ? error.message : String(error);
  process.stderr.write(`${program}: ${message}\n`);
  if (process.env.UNDERPASS_DEBUG === '1' && error instanceof Error && error.stack)
    process.stderr.write(error.stack + '\n');
  process.exit(1);
}

/** Stops cleanly on SIGINT/SIGTERM with exit status 0. */
export function onSignals(stop: () => void | Promise<void>, logger: Logger): void {
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

export function readCa(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new ConfigError(
      `cannot read --ca ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'}): pass the server's DATA_DIR/tls/cert.pem`,
    );
  }
}

export interface EndpointFlags {
  server?: string;
  ca?: string;
  token?: string;
  transport: TransportKind;
  proxy?: string;
  keepalive: number;
  grace: number;
  logFormat: LogFormat;
}

export function linkOptions(flags: EndpointFlags, logger: Logger): LinkOptions {
  const { server, ca, token } = flags;
  if (!server) throw new ConfigError('missing --server HOST:PORT (the tunnel server to dial)');
  if (!ca) throw new ConfigError("missing --ca FILE (the server's DATA_DIR/tls/cert.pem)");
  if (!token) throw new ConfigError('missing --token TOKEN (the server prints where its token is)');
  const servers = load.linkConfig().parseHostPorts(server, '--server');
  return {
    server: servers[0]!,
    servers,
    ca: readCa(ca),
    token,
    logger,
    transport: flags.transport,
    keepaliveMs: flags.keepalive * 1000,
    graceMs: flags.grace * 1000,
    proxy: flags.proxy,
  };
}

export type RedirectorFlags = EndpointFlags &
  MetricsFlags & { ipc: string; pseudoNet: string; serviceKey: string[] } & FallbackFlags;
/** The redirector's doors for programs the hook cannot enter (redirector/fallback-listeners.ts). */
export type FallbackFlags = { dns: string; socks?: string; httpProxy?: string };

export interface MetricsFlags {
  metrics?: string;
  metricsPerPublication?: boolean;
}

/** `--config`, `--metrics` and its label switch, on every daemon. */
export function metricsOptions(command: Command): Command {
  return command
    .option('--config <file>', 'read flags from a TOML file (a flag given here wins, then the environment)')
    .option('--metrics <host:port>', 'serve Prometheus metrics at /metrics (the server adds its status page at /)')
    .option('--metrics-per-publication', 'label tunnel metrics by publication');
}

/**
 * A daemon's metrics when `--metrics` asks for them: made before the program (which counts into them),
 * told how to read the program's gauges once it exists, served once it is up.
 */
export function daemonMetrics(
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
      (session.node !== undefined ? ` (cluster node ${session.node})` : '') +
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
        (l.listenPort !== undefined ? ` (listening on ${l.listenPort}: port ${l.port} is held locally)` : '') +
        (l.via === 'direct' ? '  direct to its proxy' : ''),
    );
  lines.push(status.refusals.length > 0 ? 'recent refusals' : 'recent refusals  none');
  for (const r of status.refusals) lines.push(`  ${r.time}  ${r.code}  ${r.message}`);
  return lines.join('\n') + '\n';
}

/** Flags every endpoint (proxy, redirector) shares. */
export function endpointOptions(command: Command): Command {
  return metricsOptions(command)
    .addOption(
      new Option('--server <host:port>', 'tunnel server to dial; several, comma-separated: nodes of one cluster').env(
        'UNDERPASS_SERVER',
      ),
    )
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

export const keepaliveOption = (): Option =>
  new Option('--keepalive <seconds>', 'PING interval; a peer silent for two intervals is taken for dead')
    .default(KEEPALIVE_MS / 1000)
    .argParser(seconds('--keepalive'));

export const graceOption = (): Option =>
  new Option(
    '--grace <seconds>',
    'how long tunneled connections wait for a dropped session to come back before they are reset',
  )
    .default(GRACE_MS / 1000)
    .argParser(seconds('--grace'));

export const logFormat = (): Option =>
  new Option('--log-format <format>', 'log lines as readable text or JSON').choices(['text', 'json']).default('text');

/** `--cluster`, `--node` and `--advertise` as the server's cluster options; absent without `--cluster`. */
export function clusterOptions(flags: {
  cluster?: string;
  node?: string;
  advertise?: string;
}): ClusterConfig | undefined {
  if (flags.cluster === undefined) {
    if (flags.node !== undefined || flags.advertise !== undefined)
      throw new ConfigError('--node and --advertise go with --cluster URL: add it, or drop them');
    return undefined;
  }
  if (flags.node === undefined)
    throw new ConfigError('--cluster needs --node NAME: a name for this node, unique in the cluster');
  const advertise = flags.advertise;
  if (advertise !== undefined) load.linkConfig().parseHostPort(advertise, '--advertise');
  return { url: flags.cluster, node: flags.node, advertise };
}
