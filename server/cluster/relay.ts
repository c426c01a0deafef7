/**
 * Relay between nodes: a redirector's CONNECT for a publication whose proxy sits on another node is
 * carried redirector → this node → the owning node → proxy (PROTOCOL.md "Relay between nodes"). This
 * node asks the shared directory which node owns the publication, opens a CONNECT for the same pseudo
 * name on its node link to that node, carrying who asks (the account, the service key it showed, its
 * address) under the node credential, and splices the redirector's stream to the answer. The owning node
 * serves that CONNECT as it serves a local redirector's, except that its side of the tunnel is the node
 * link's stream itself, not a resumable leg: the node link is never resumed, so when either node dies the
 * tunnels that crossed it are reset at both ends (ECONNRESET at the apps), and new ones go on at once.
 *
 * Flow control, half-close and resets are those of one node: each hop is an HTTP/2 stream with its own
 * window, joined by splice(), which carries an end as an end and a reset as a reset.
 */
import crypto from 'node:crypto';
import http2 from 'node:http2';
import {
  ClusterUnavailableError,
  errorOfCode,
  isErrorCode,
  isUnderpassError,
  OfflineError,
  UnreachableError,
} from '../../protocol/errors';
import { formatHostPort, label, tryParseHostPort } from '../../protocol/names';
import { Headers } from '../../protocol/wire';
import type { Logger } from '../../runtime/log';
import type { Metrics } from '../../runtime/metrics';
import { ResumableStream } from '../../runtime/resumable-stream';
import { splice, type SpliceResult } from '../../runtime/splice';
import type { EndpointSession } from '../endpoints';
import type { Responder } from '../respond';
import type { TunnelClient } from '../tunnels';
import type { Assignment } from './assignment';
import type { ClusterView } from './cluster';
import { isNodeCredential, type NodeLinks } from './node-link';

/** A tunnel request this node relays to the publication's node. */
export interface RelayRequest {
  /** The publication's id (`ACCOUNT/NAME`) and the pseudo name and port asked for. */
  id: string;
  host: string;
  port: number;
  /** Who asks, as the owning node's proxy may be told (PROXY protocol). */
  client: TunnelClient;
  serviceKey: string | undefined;
  /** The redirector's endpoint session, whose table holds this node's leg of the tunnel. */
  endpoint: () => EndpointSession;
}

/** What the owning node makes of a relayed CONNECT: who asks, vouched for by the node that relays it. */
export interface RelayedAsker {
  node: string;
  client: TunnelClient;
}

export class Relay {
  constructor(
    private readonly cluster: ClusterView,
    private readonly links: NodeLinks,
    private readonly assignment: Assignment,
    private readonly responder: Responder,
    private readonly log: Logger,
    private readonly metrics: Metrics | undefined,
  ) {}

  /** Carries `stream` to the node that owns the publication, or refuses it in one line. */
  async open(stream: http2.ServerHttp2Stream, request: RelayRequest): Promise<void> {
    const started = performance.now();
    try {
      const { upstream, peer } = await this.connect(request);
      this.join(stream, upstream, peer, request, started);
    } catch (e) {
      const error = isUnderpassError(e) ? e : new UnreachableError(`cannot relay to ${request.host}: ${String(e)}`);
      this.log.info(`relay refused: ${error.message}`, { publication: request.id, code: error.code });
      this.responder.refuse(stream, error.code, error.message);
    }
  }

  /**
   * The owning node's side: who a relayed CONNECT says asks, once its node credential checks out;
   * null (the stream refused) when it does not.
   */
  asker(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): RelayedAsker | null {
    const node = headers[Headers.node];
    const credential = headers[Headers.nodeAuth];
    const account = headers[Headers.relayAccount];
    if (
      typeof node !== 'string' ||
      typeof credential !== 'string' ||
      !isNodeCredential(this.cluster.nodeSecret(), node, credential)
    ) {
      this.log.warn('refused a node-link stream with a wrong node credential', {
        node: String(node),
        remote: stream.session?.socket?.remoteAddress,
      });
      this.responder.refuse(stream, 'UP_ERR_AUTH', 'wrong node credential: every node needs the same cluster secret');
      return null;
    }
    const from = tryParseHostPort(String(headers[Headers.relayClient] ?? ''));
    return {
      node,
      client: {
        ...(from !== null ? { address: from.host, port: from.port } : {}),
        account: label(String(account ?? ''), 'account name'),
        host: tryParseHostPort(headers[':authority'] ?? '')?.host ?? '',
      },
    };
  }

  /** Whether another node's proxy serves publication `id` now (no, while the directory is unreachable). */
  async isOnline(id: string): Promise<boolean> {
    if (!this.cluster.available) return false;
    const owner = await this.cluster.ownerOf(id).catch(() => null);
    return owner !== null && owner.node !== this.cluster.node;
  }

  /** Opens the CONNECT on the owning node's link; resolves once it answered 200. */
  private async connect(request: RelayRequest): Promise<{ upstream: http2.ClientHttp2Stream; peer: string }> {
    if (!this.cluster.available) {
      throw new ClusterUnavailableError(
        `${request.host} may be on another node, and this node cannot reach the cluster directory now: retry once its Redis is back`,
      );
    }
    const owner = await this.cluster.ownerOf(request.id);
    if (owner === null || owner.node === this.cluster.node) {
      throw new OfflineError(`${request.host} is offline: its service proxy is not connected to any node`);
    }
    const peer = (await this.cluster.nodes()).find((n) => n.name === owner.node);
    if (peer === undefined) throw new OfflineError(`${request.host} is offline: its node ${owner.node} is gone`);
    this.assignment.relayed(request.client.account, peer.name);
    const session = await this.links.session(peer);
    const { client } = request;
    const upstream = session.request({
      ':method': 'CONNECT',
      ':authority': formatHostPort({ host: request.host, port: request.port }),
      ...this.links.headers(),
      [Headers.relayAccount]: client.account,
      ...(client.address !== undefined && client.port !== undefined
        ? { [Headers.relayClient]: formatHostPort({ host: client.address, port: client.port }) }
        : {}),
      ...(request.serviceKey !== undefined ? { [Headers.serviceKey]: request.serviceKey } : {}),
    });
    upstream.on('error', () => undefined);
    return new Promise((resolve, reject) => {
      const onClose = (): void =>
        reject(new UnreachableError(`node ${peer.name} dropped the tunnel to ${request.host} before answering`));
      upstream.once('close', onClose);
      upstream.once('response', (headers) => {
        upstream.off('close', onClose);
        if (Number(headers[':status']) === 200) {
          resolve({ upstream, peer: peer.name });
          return;
        }
        upstream.close();
        const code = headers[Headers.errorCode];
        const message = String(headers[Headers.errorMessage] ?? `node ${peer.name} refused the tunnel`);
        reject(errorOfCode(isErrorCode(code) ? code : 'UP_ERR_UNREACHABLE', message));
      });
    });
  }

  /** The owning node answered: the redirector's stream and the node link's stream become one tunnel. */
  private join(
    stream: http2.ServerHttp2Stream,
    upstream: http2.ClientHttp2Stream,
    peer: string,
    request: RelayRequest,
    started: number,
  ): void {
    if (stream.destroyed || stream.closed) {
      upstream.close(http2.constants.NGHTTP2_CANCEL);
      return;
    }
    const id = crypto.randomBytes(12).toString('base64url');
    stream.respond({ ':status': 200, [Headers.tunnelId]: id });
    // The redirector's side outlives its stream for the grace period, as a local tunnel's does.
    const leg = new ResumableStream('');
    leg.attach(stream, 0);
    request.endpoint().tunnels.add(id, leg);
    this.metrics?.tunnelOpened('ok', request.id, (performance.now() - started) / 1000);
    const onDone = this.log.isDebugEnabled()
      ? (result: SpliceResult): void => {
          this.log.debug('relayed tunnel closed', {
            publication: request.id,
            node: peer,
            up: result.aToB,
            down: result.bToA,
            ...(result.error ? { aborted: true } : {}),
          });
        }
      : undefined;
    splice(leg, upstream, onDone, undefined, this.metrics?.meter(request.id));
  }
}
