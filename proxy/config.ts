/**
 * The service proxy's options: `ProxyOptions` as given, completed from `defaultProxyConfig` and verified
 * once by `proxyConfig()`, which ServiceProxy calls at construction. The session's own options (`link`)
 * are completed and verified by ServerLink (runtime/link-config.ts).
 */
import { ConfigError } from '../protocol/errors';
import { publicationName, tryParseHostPort, type HostPort } from '../protocol/names';
import { configure, verifyMs, type OptionsOf } from '../runtime/config';
import type { LinkOptions } from '../runtime/link-config';
import type { Logger } from '../runtime/log';
import type { Metrics } from '../runtime/metrics';
import type { ProxyProtocolVersion } from './proxy-protocol';

/** One publication: its name, and the real server it stands for. */
export interface Target {
  name: string;
  host: string;
  port: number;
  /** This target's own connect timeout (ms), over the proxy's. */
  connectTimeoutMs?: number;
  /** Tell the target who the client is, with a PROXY protocol header of this version. */
  proxyProtocol?: ProxyProtocolVersion;
}

export interface ProxyConfig {
  link: LinkOptions;
  /** What to publish: at least one, each name once. */
  targets: Target[];
  logger: Logger;
  /** How long connecting to a target may take (ms). */
  connectTimeoutMs: number;
  /** Counts tunnels and bytes (`--metrics`); absent: nothing is counted. */
  metrics: Metrics | undefined;
  /** Where the direct listener listens (`--direct-listen`); absent: none, every tunnel is relayed. */
  directListen: HostPort | undefined;
}

type Required = 'link' | 'targets' | 'logger';

export type ProxyOptions = OptionsOf<ProxyConfig, Required>;

export const defaultProxyConfig: Omit<ProxyConfig, Required> = {
  connectTimeoutMs: 10_000,
  metrics: undefined,
  directListen: undefined,
};

/** The options completed from the defaults and verified; throws ConfigError naming what is wrong. */
export function proxyConfig(options: ProxyOptions): ProxyConfig {
  return configure(defaultProxyConfig, options, verifyProxyConfig);
}

export function verifyProxyConfig(config: ProxyConfig): void {
  if (config.targets.length === 0) throw new ConfigError('nothing to publish: add --publish NAME=HOST:PORT');
  const names = new Set<string>();
  for (const t of config.targets) {
    if (names.has(t.name))
      throw new ConfigError(`--publish names '${t.name}' twice: give each publication its own NAME`);
    names.add(t.name);
  }
  verifyMs('the target connect timeout', config.connectTimeoutMs, 3_600_000, 'above zero');
}

/** Parses `--direct-listen HOST:PORT`; throws ConfigError with the fix. */
export function parseDirectListen(spec: string): HostPort {
  const at = tryParseHostPort(spec);
  if (at === null)
    throw new ConfigError(
      `--direct-listen '${spec}' is not HOST:PORT: give an address redirectors can reach, e.g. 192.0.2.10:7443`,
    );
  return at;
}

/** Parses `NAME=HOST:PORT`; throws ConfigError with the fix. */
export function parsePublish(spec: string): Target {
  const eq = spec.indexOf('=');
  const fail = (why: string): never => {
    throw new ConfigError(`--publish '${spec}': ${why} (expected NAME=HOST:PORT, e.g. redis=127.0.0.1:6379)`);
  };
  if (eq <= 0) return fail('missing NAME=');
  const name = publicationName(spec.slice(0, eq));
  const target = tryParseHostPort(spec.slice(eq + 1));
  if (target === null) return fail(`'${spec.slice(eq + 1)}' is not HOST:PORT with a valid host and port`);
  return { name, ...target };
}
