/**
 * The redirector's options: `RedirectorOptions` as given, completed from `defaultRedirectorConfig` and
 * verified once by `redirectorConfig()`, which Redirector calls at construction. The session's own
 * options (`link`) are completed and verified by ServerLink (runtime/link-config.ts).
 */
import { DEFAULT_PSEUDO_NET } from '../protocol/defaults';
import { ConfigError } from '../protocol/errors';
import { tryNormalizeHostname } from '../protocol/names';
import { configure, verifyMs, type OptionsOf } from '../runtime/config';
import type { LinkOptions } from '../runtime/link-config';
import type { Logger } from '../runtime/log';
import type { Metrics } from '../runtime/metrics';
import type { ForwardRule } from '../protocol/forward-rules';
import { CLAIM_WAIT_MS } from './claims';
import type { FallbackOptions } from './fallback-listeners';
import { defaultDirectHop, type DirectHopOptions } from './direct-hop';

export interface RedirectorConfig {
  link: LinkOptions;
  /** The Unix socket hooks connect to. */
  ipcPath: string;
  /** The loopback range pseudo addresses come from (CIDR); pseudo-table.ts checks it. */
  pseudoNet: string;
  logger: Logger;
  /** How long a tunnel opened for a blocking connect waits for its accept (ms). */
  parkMs: number;
  /** Service keys to present, by pseudo name (publications of other accounts). */
  serviceKeys: ReadonlyMap<string, string>;
  /** How long an unclaimed accepted connection waits for a hook's claim before the /proc check (ms). */
  claimWaitMs: number;
  /** DNS responder, SOCKS5 and HTTP CONNECT listeners for unhooked programs (none unless given). */
  fallbacks: FallbackOptions;
  /** Counts tunnels and bytes (`--metrics`); absent: nothing is counted. */
  metrics: Metrics | undefined;
  /** Plain destinations that go through the tunnel server (forwarding mode, `--forward`); none by default. */
  forward: ForwardRule[];
  /** The direct hop's retry interval and deadline (`--direct-retry`). */
  direct: DirectHopOptions;
}

type Required = 'link' | 'ipcPath' | 'logger';

export type RedirectorOptions = OptionsOf<RedirectorConfig, Required>;

export const defaultRedirectorConfig: Omit<RedirectorConfig, Required> = {
  pseudoNet: DEFAULT_PSEUDO_NET,
  parkMs: 10_000,
  serviceKeys: new Map(),
  claimWaitMs: CLAIM_WAIT_MS,
  fallbacks: { dns: null, socks: null, httpProxy: null },
  metrics: undefined,
  forward: [],
  direct: defaultDirectHop,
};

/** The options completed from the defaults and verified; throws ConfigError naming what is wrong. */
export function redirectorConfig(options: RedirectorOptions): RedirectorConfig {
  return configure(defaultRedirectorConfig, options, verifyRedirectorConfig);
}

export function verifyRedirectorConfig(config: RedirectorConfig): void {
  if (config.ipcPath === '') throw new ConfigError('--ipc is empty: name the Unix socket hooks connect to');
  verifyMs('the park time', config.parkMs, 3_600_000, 'above zero');
  verifyMs('the claim wait', config.claimWaitMs, 60_000, 'zero allowed');
  verifyMs('the direct retry interval (--direct-retry)', config.direct.retryMs, 86_400_000, 'above zero');
  verifyMs('the direct deadline', config.direct.deadlineMs, 60_000, 'above zero');
  verifyMs('the direct keepalive', config.direct.keepaliveMs, 3_600_000, 'above zero');
}

/** Parses `--service-key PSEUDO_NAME=KEY`; throws ConfigError with the fix. */
export function parseServiceKey(spec: string): [host: string, key: string] {
  const eq = spec.indexOf('=');
  const host = eq > 0 ? tryNormalizeHostname(spec.slice(0, eq)) : null;
  if (host === null || eq === spec.length - 1)
    throw new ConfigError(`--service-key '${spec}' is not PSEUDO_NAME=KEY (the key the publishing proxy printed)`);
  return [host, spec.slice(eq + 1)];
}
