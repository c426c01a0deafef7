/**
 * The tunnel server's options: `ServerOptions` as the CLI (or a config file) gives them, completed from
 * `defaultServerConfig` and verified once by `serverConfig()`, which TunnelServer calls at construction.
 */
import { ConfigError } from '../protocol/errors';
import { DEFAULT_ZONE, GRACE_MS, KEEPALIVE_MS, MAX_GRACE_MS, MAX_KEEPALIVE_MS } from '../protocol/defaults';
import { label, zone } from '../protocol/names';
import { complete, verifyCount, verifyMs, type OptionsOf } from '../runtime/config';
import type { Logger } from '../runtime/log';
import type { Metrics } from '../runtime/metrics';
import type { PlacementRule } from './cluster/placement';
import type { AllowRule } from './forwarding';

export interface ServerConfig {
  host: string;
  /** 0: any free port (tests). */
  port: number;
  dataDir: string;
  /** The token of account `default`; absent: DATA_DIR/token, generated on first start. */
  token: string | undefined;
  /** More accounts and their grants (`--accounts FILE`). */
  accountsFile: string | undefined;
  /** Certificate and key files (PEM) instead of the generated identity; both or neither. */
  cert: { cert: string; key: string } | undefined;
  /** The zone pseudo names live under (normalised). */
  zone: string;
  logger: Logger;
  /** How long a tunnel request waits for the proxy's answer (ms). */
  tunnelTimeoutMs: number;
  /** Tunnel requests one proxy session may have waiting at once. */
  maxPendingPerProxy: number;
  /** Tunnel requests one requesting session may have waiting at once. */
  maxPendingPerSession: number;
  /** Interval between keepalive PINGs to every session (ms); two missed answers drop the session. */
  keepaliveMs: number;
  /** How long a dropped endpoint's tunnels wait for it to come back (ms). */
  graceMs: number;
  /** Counts tunnels, bytes, refusals and resumes (`--metrics`); absent: nothing is counted. */
  metrics: Metrics | undefined;
  /** Destinations the server dials for redirectors (forwarding mode, `--forward-allow`); none by default. */
  forwardAllow: AllowRule[];
  /** Several servers as one service (`--cluster`, `--node`, `--advertise`); absent: a cluster of one. */
  cluster: ClusterConfig | undefined;
  /** In a cluster, the operator's placement table (`--placement FILE`); empty: least load places. */
  placement: PlacementRule[];
}

/** How a node joins a cluster: the shared state's URL, its own name, and where others reach it. */
export interface ClusterConfig {
  /** `redis://HOST:PORT[/DB]`, `rediss://…`, `redis+sentinel://…` or `redis+cluster://…`. */
  url: string;
  /** This node's name, unique in the cluster. */
  node: string;
  /** HOST:PORT endpoints and other nodes dial; absent: the address it listens on. */
  advertise: string | undefined;
}

type Required = 'host' | 'port' | 'dataDir' | 'logger';

/** What a caller gives: the address, data dir and logger, and any of the rest. */
export type ServerOptions = OptionsOf<ServerConfig, Required>;

export const defaultServerConfig: Omit<ServerConfig, Required> = {
  token: undefined,
  accountsFile: undefined,
  cert: undefined,
  zone: DEFAULT_ZONE,
  tunnelTimeoutMs: 15_000,
  maxPendingPerProxy: 10_000,
  maxPendingPerSession: 2_000,
  keepaliveMs: KEEPALIVE_MS,
  graceMs: GRACE_MS,
  metrics: undefined,
  forwardAllow: [],
  cluster: undefined,
  placement: [],
};

/** The options completed from the defaults and verified; throws ConfigError naming what is wrong. */
export function serverConfig(options: ServerOptions): ServerConfig {
  const config: ServerConfig = complete(defaultServerConfig, options);
  config.zone = zone(config.zone);
  if (config.cluster !== undefined)
    config.cluster = { ...config.cluster, node: label(config.cluster.node, 'node name') };
  verifyServerConfig(config);
  return config;
}

export function verifyServerConfig(config: ServerConfig): void {
  if (!(Number.isInteger(config.port) && config.port >= 0 && config.port <= 65535)) {
    throw new ConfigError(`port ${config.port} is not a TCP port`);
  }
  if (config.dataDir === '') throw new ConfigError('--data-dir is empty: name the directory for the server state');
  verifyMs('--keepalive', config.keepaliveMs, MAX_KEEPALIVE_MS, 'above zero');
  verifyMs('--grace', config.graceMs, MAX_GRACE_MS, 'zero allowed');
  verifyMs('the tunnel timeout', config.tunnelTimeoutMs, MAX_GRACE_MS, 'above zero');
  verifyCount('the pending tunnels per proxy', config.maxPendingPerProxy);
  verifyCount('the pending tunnels per session', config.maxPendingPerSession);
}
