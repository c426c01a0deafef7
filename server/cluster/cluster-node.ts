/**
 * This server as a node of a cluster (`--cluster`): what it does for endpoints and tunnels that belong on
 * another node. An endpoint opening its session may be sent to another node (assignment.ts); a
 * redirector's CONNECT for a publication whose proxy sits on another node is relayed there (relay.ts),
 * over the node links (node-link.ts); and a CONNECT another node relays here is checked for its node
 * credential before the server serves it as its own. A server without `--cluster` makes none of this.
 */
import type http2 from 'node:http2';
import { tryParseHostPort } from '../../protocol/names';
import { Headers, type NameInfo } from '../../protocol/wire';
import type { Logger } from '../../runtime/log';
import type { Metrics } from '../../runtime/metrics';
import type { EndpointRegistry } from '../endpoints';
import type { Publications } from '../publications';
import type { Responder } from '../respond';
import type { TokenGrant } from '../tokens';
import { clientOf, type TunnelClient } from '../tunnels';
import { Assignment } from './assignment';
import type { ClusterView } from './cluster';
import { NodeLinks } from './node-link';
import type { PlacementRule } from './placement';
import { Relay } from './relay';

export interface ClusterNodeDeps {
  cluster: ClusterView;
  /** The cluster's TLS identity, which every node serves. */
  cert: Buffer;
  placement: readonly PlacementRule[];
  keepaliveMs: number;
  publications: Publications;
  endpoints: EndpointRegistry;
  responder: Responder;
  /** This node's load now: its endpoint sessions and open tunnels. */
  load: () => number;
  log: Logger;
  metrics: Metrics | undefined;
}

export class ClusterNode {
  private readonly links: NodeLinks;
  private readonly assignment: Assignment;
  private readonly relay: Relay;

  constructor(private readonly deps: ClusterNodeDeps) {
    const { cluster, log } = deps;
    this.links = new NodeLinks(cluster, deps.cert, deps.keepaliveMs, log);
    this.assignment = new Assignment(cluster, deps.placement, deps.load, log);
    this.relay = new Relay(cluster, this.links, this.assignment, deps.responder, log, deps.metrics);
  }

  stop(): void {
    this.links.stop();
  }

  /**
   * GET /v1/session from an endpoint that belongs on another node: answers `UP_ERR_MOVED` with its
   * address and resolves true. An endpoint that was sent here, or resumes a session held here, stays.
   */
  async sendAway(
    stream: http2.ServerHttp2Stream,
    account: string,
    headers: http2.IncomingHttpHeaders,
  ): Promise<boolean> {
    const token = headers[Headers.resume];
    const h2 = stream.session as http2.Http2Session;
    const { endpoints } = this.deps;
    if (headers[Headers.moved] !== undefined || endpoints.of(h2) !== undefined) return false;
    if (typeof token === 'string' && endpoints.holds(token)) return false;
    const publishes = String(headers[Headers.publishes] ?? '')
      .split(',')
      .filter((n) => n !== '');
    const move = await this.assignment.decide({ account, publishes });
    if (move === null) return false;
    this.deps.responder.moved(stream, move.node.advertise, `sent to node ${move.node.name}: ${move.why}`);
    return true;
  }

  /**
   * A redirector's CONNECT for a publication no proxy of this node holds: relayed to the node that
   * does (true), after the token's scope is checked here, where the token is; the owning node checks
   * the rest. False: the server serves it here.
   */
  relayAway(
    stream: http2.ServerHttp2Stream,
    account: string,
    headers: http2.IncomingHttpHeaders,
    grant: TokenGrant | undefined,
  ): boolean {
    const { host, port } = tryParseHostPort(headers[':authority'] ?? '') ?? { host: '', port: 0 };
    const elsewhere = this.deps.publications.heldElsewhere(host);
    if (elsewhere === null) return false;
    this.deps.publications.checkScope(account, host, elsewhere, grant);
    const key = headers[Headers.serviceKey];
    void this.relay.open(stream, {
      id: elsewhere.id,
      host,
      port,
      client: clientOf(stream.session as http2.Http2Session, account, host),
      serviceKey: typeof key === 'string' ? key : undefined,
      endpoint: () => this.deps.endpoints.endpointFor(stream, account),
    });
    return true;
  }

  /** A CONNECT another node relays: who asks, once its node credential checks out; null: refused. */
  relayedAsker(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): TunnelClient | null {
    if (headers[':method'] !== 'CONNECT') {
      this.deps.responder.refuse(stream, 'UP_ERR_NOT_FOUND', 'a node link carries only tunnels (CONNECT)');
      return null;
    }
    return this.relay.asker(stream, headers)?.client ?? null;
  }

  /** GET /v1/names/HOST's answer, online when a proxy on another node serves the publication. */
  answerName(stream: http2.ServerHttp2Stream, info: NameInfo): void {
    const elsewhere = info.online ? null : this.deps.publications.heldElsewhere(info.host);
    if (elsewhere === null) this.deps.responder.json(stream, info);
    else void this.relay.isOnline(elsewhere.id).then((online) => this.deps.responder.json(stream, { ...info, online }));
  }
}
