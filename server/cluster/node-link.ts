/**
 * Node links: the one persistent HTTP/2 session a node keeps to each peer node it relays tunnels to
 * (PROTOCOL.md "Relay between nodes"). A link is dialled on the first tunnel that needs it, kept alive
 * with PINGs, reused by every later tunnel to that peer, and dialled again when it was lost; each
 * relayed tunnel is one CONNECT stream on it, so HTTP/2 gives every tunnel its own flow-control window
 * as it does on an endpoint's session.
 *
 * Trust both ways: the dialling node checks that the peer presents the cluster's TLS identity (every node
 * serves the same certificate, or one a cluster CA signed, and a node is dialled by the address it
 * advertises, which the certificate need not name); the peer checks the node credential, an HMAC of the
 * dialling node's name under the cluster's node secret, on every stream.
 */
import crypto from 'node:crypto';
import http2 from 'node:http2';
import tls from 'node:tls';
import { UnreachableError } from '../../protocol/errors';
import { formatHostPort, tryParseHostPort } from '../../protocol/names';
import { ALPN, Headers, WIRE_VERSION } from '../../protocol/wire';
import { keepalive, raiseSessionWindow, sessionOptions } from '../../runtime/h2';
import type { Logger } from '../../runtime/log';
import type { ClusterView, NodeInfo } from './cluster';

/** The credential node `node` presents: HMAC-SHA256 of its name under the node secret, base64url. */
export function nodeCredential(secret: string, node: string): string {
  return crypto.createHmac('sha256', secret).update(`underpass node-link v1 ${node}`).digest('base64url');
}

/** Whether `credential` is the one node `node` presents (compared in constant time). */
export function isNodeCredential(secret: string, node: string, credential: string): boolean {
  const expected = Buffer.from(nodeCredential(secret, node));
  const given = Buffer.from(credential);
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

/** How long dialling a peer node may take (ms). */
const DIAL_TIMEOUT_MS = 5_000;

export class NodeLinks {
  /** One session per peer node, made once and shared by every tunnel to it while it lives. */
  private readonly sessions = new Map<string, Promise<http2.ClientHttp2Session>>();
  /** The sessions that are up, to tell a lost one from its replacement. */
  private readonly live = new Map<string, http2.ClientHttp2Session>();
  private stopped = false;

  constructor(
    private readonly cluster: ClusterView,
    /** The cluster's TLS identity: what a peer's certificate must chain to. */
    private readonly ca: Buffer,
    private readonly keepaliveMs: number,
    private readonly log: Logger,
  ) {}

  /** Headers that authenticate this node's streams to a peer. */
  headers(): http2.OutgoingHttpHeaders {
    const { node } = this.cluster;
    return {
      [Headers.node]: node,
      [Headers.nodeAuth]: nodeCredential(this.cluster.nodeSecret(), node),
      [Headers.version]: String(WIRE_VERSION),
    };
  }

  /** The live session to `peer`, dialling it when there is none. */
  session(peer: NodeInfo): Promise<http2.ClientHttp2Session> {
    const live = this.live.get(peer.name);
    // A session that is closing takes no new streams, though its 'close' has not come yet.
    if (live !== undefined && (live.closed || live.destroyed)) {
      this.live.delete(peer.name);
      this.sessions.delete(peer.name);
    }
    const known = this.sessions.get(peer.name);
    if (known !== undefined) return known;
    const made = this.dial(peer);
    this.sessions.set(peer.name, made);
    made.catch(() => {
      if (this.sessions.get(peer.name) === made) this.sessions.delete(peer.name);
    });
    return made;
  }

  stop(): void {
    this.stopped = true;
    for (const session of this.live.values()) session.destroy();
    this.live.clear();
    this.sessions.clear();
  }

  private async dial(peer: NodeInfo): Promise<http2.ClientHttp2Session> {
    if (this.stopped) throw new UnreachableError('this node is stopping');
    const address = tryParseHostPort(peer.advertise);
    if (address === null) throw new UnreachableError(`node ${peer.name} advertises no HOST:PORT (${peer.advertise})`);
    const socket = tls.connect({
      host: address.host,
      port: address.port,
      ca: this.ca,
      ALPNProtocols: [ALPN],
      // The chain proves the peer holds the cluster's identity; the advertised address is not a name on it.
      checkServerIdentity: () => undefined,
    });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => socket.destroy(new Error('ETIMEDOUT')), DIAL_TIMEOUT_MS);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          new UnreachableError(
            `cannot reach node ${peer.name} at ${peer.advertise} (${e.code ?? e.message}): check that it runs and that its --advertise is reachable from here`,
            e,
          ),
        );
      });
    });
    const session = http2.connect(`https://${formatHostPort(address)}`, {
      ...sessionOptions,
      createConnection: () => socket,
    });
    session.on('error', (e: Error) => this.log.debug(`node link to ${peer.name}: ${e.message}`));
    raiseSessionWindow(session);
    keepalive(
      session,
      this.keepaliveMs,
      () => this.log.warn(`node ${peer.name} stopped answering keepalives: resetting the tunnels relayed to it`),
      socket,
    );
    session.once('close', () => {
      if (this.live.get(peer.name) === session) {
        this.live.delete(peer.name);
        this.sessions.delete(peer.name);
      }
      if (!this.stopped) this.log.info(`node link to ${peer.name} closed`, { node: peer.name });
    });
    this.live.set(peer.name, session);
    this.log.info(`node link to ${peer.name} up`, { node: peer.name, address: peer.advertise });
    return session;
  }
}
