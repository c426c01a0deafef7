/**
 * An endpoint's options for its session to the server (ServerLink, used by the proxy and the
 * redirector): `LinkOptions` as given, completed from `defaultLinkConfig` and verified once by
 * `linkConfig()`, which ServerLink calls at construction.
 */
import {
  DEFAULT_TRANSPORT,
  GRACE_MS,
  KEEPALIVE_MS,
  MAX_GRACE_MS,
  MAX_KEEPALIVE_MS,
  TRANSPORT_KINDS,
} from '../protocol/defaults';
import { ConfigError } from '../protocol/errors';
import { tryParseHostPort, type HostPort } from '../protocol/names';
import { configure, verifyMs, type OptionsOf } from './config';
import type { Logger } from './log';
import { proxyFor, type TransportKind } from './transport';

export interface LinkConfig {
  server: HostPort;
  /** Every server of `--server a:p,b:p` (the first is `server`); empty: `server` alone. */
  servers: HostPort[];
  /** PEM of the CA (or self-signed certificate) that signs the server's certificate. */
  ca: Buffer;
  token: string;
  logger: Logger;
  /** Interval between keepalive PINGs (ms); a PING unanswered for as long ends the session. */
  keepaliveMs: number;
  /** Which carriers to try: auto (TLS, then WebSocket), tls or wss. */
  transport: TransportKind;
  /** `--proxy URL`; absent: the environment's proxy variables, as curl reads them. */
  proxy: string | undefined;
  /** How long tunnels wait for a dropped session to come back before they are reset (ms). */
  graceMs: number;
  /** Reconnect backoff: the first delay, doubling up to the last (ms), each with ±50 % jitter. */
  backoff: { minMs: number; maxMs: number };
  /** The publications a proxy will announce, told in its session hello for placement (cluster). */
  publishes: string[];
}

type Required = 'server' | 'ca' | 'token' | 'logger';

export type LinkOptions = OptionsOf<LinkConfig, Required>;

export const defaultLinkConfig: Omit<LinkConfig, Required> = {
  servers: [],
  keepaliveMs: KEEPALIVE_MS,
  transport: DEFAULT_TRANSPORT,
  proxy: undefined,
  graceMs: GRACE_MS,
  backoff: { minMs: 250, maxMs: 30_000 },
  publishes: [],
};

/** The options completed from the defaults and verified; throws ConfigError naming what is wrong. */
export function linkConfig(options: LinkOptions): LinkConfig {
  return configure(defaultLinkConfig, options, verifyLinkConfig);
}

export function verifyLinkConfig(config: LinkConfig): void {
  if (config.token === '') throw new ConfigError('--token is empty: give the token the server prints where to find');
  if (!TRANSPORT_KINDS.includes(config.transport)) {
    throw new ConfigError(`--transport '${String(config.transport)}' must be one of ${TRANSPORT_KINDS.join(', ')}`);
  }
  verifyMs('--keepalive', config.keepaliveMs, MAX_KEEPALIVE_MS, 'above zero');
  verifyMs('--grace', config.graceMs, MAX_GRACE_MS, 'zero allowed');
  const { minMs, maxMs } = config.backoff;
  if (!(minMs > 0 && maxMs >= minMs)) throw new ConfigError(`backoff ${minMs}–${maxMs} ms must rise from above zero`);
  // A proxy URL that cannot be used is said now, not at the first dial.
  proxyFor(config.server, config.proxy);
}

/** Parses `HOST:PORT[,HOST:PORT…]` (a cluster's nodes); throws ConfigError naming `flag`. */
export function parseHostPorts(input: string, flag: string): HostPort[] {
  return input.split(',').map((item) => parseHostPort(item.trim(), flag));
}

/** Parses `HOST:PORT` (`[v6]:PORT` for IPv6); throws ConfigError naming `flag`, with an example. */
export function parseHostPort(input: string, flag: string): HostPort {
  const parsed = tryParseHostPort(input);
  if (parsed === null) throw new ConfigError(`${flag} '${input}' is not HOST:PORT (for example 127.0.0.1:7443)`);
  return parsed;
}
