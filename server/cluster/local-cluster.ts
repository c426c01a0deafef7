/**
 * The cluster of one that a server without `--cluster` is: it alone is alive, it owns whatever its
 * own directory holds, and it never loses its state (nothing is shared).
 */
import crypto from 'node:crypto';
import type { Membership, NodeInfo, Ownership } from './cluster';
import type { ClusterEndpoint, LocalEndpoint } from './endpoint-directory';

/** What the server tells its cluster view of itself. */
export interface LocalState {
  advertise(): string;
  sessions(): number;
  tunnels(): number;
  /** Whether this node's directory holds `publicationId` now. */
  holds(publicationId: string): boolean;
  /** Its connected endpoint sessions now. */
  endpoints(): LocalEndpoint[];
}

export const LOCAL_NODE = 'local';

/** Proxy sessions by account, as a heartbeat carries them. */
export function proxiesByAccount(endpoints: readonly LocalEndpoint[]): Record<string, number> {
  const proxies: Record<string, number> = {};
  for (const e of endpoints) if (e.role === 'proxy') proxies[e.account] = (proxies[e.account] ?? 0) + 1;
  return proxies;
}

export class LocalCluster implements Membership {
  readonly node = LOCAL_NODE;
  readonly available = true;
  /** No other node ever asks for it; a random one keeps a forgotten check from passing by accident. */
  private readonly secret = crypto.randomBytes(32).toString('base64url');

  constructor(private readonly state: LocalState) {}

  nodes(): Promise<NodeInfo[]> {
    const sessions = this.state.sessions();
    const tunnels = this.state.tunnels();
    const proxies = proxiesByAccount(this.state.endpoints());
    return Promise.resolve([
      { name: this.node, advertise: this.state.advertise(), sessions, tunnels, load: sessions + tunnels, proxies },
    ]);
  }

  ownerOf(publicationId: string): Promise<Ownership | null> {
    return Promise.resolve(this.state.holds(publicationId) ? { node: this.node, epoch: 1 } : null);
  }

  nodeSecret(): string {
    return this.secret;
  }

  endpoints(): Promise<ClusterEndpoint[]> {
    return Promise.resolve(this.state.endpoints().map(({ proof: _proof, ...e }) => ({ ...e, node: this.node })));
  }

  // The directory is the only record of what this node serves: nothing to claim, release or stop.
  claim(): void {}
  release(): void {}
  adopt(): void {}

  listening(): void {}
  stop(): Promise<void> {
    return Promise.resolve();
  }
}
