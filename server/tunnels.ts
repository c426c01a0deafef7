/**
 * The tunnel matcher: a redirector's CONNECT for a publication waits here until the proxy that holds the
 * publication answers it with a stream of its own, then the two streams are spliced, each
 * as a resumable leg of its endpoint's session. A request the proxy refuses, does not answer in time, or
 * loses with its proxy is refused to the redirector. Each publication's traffic is counted here for the
 * status page and the metrics.
 */
import { unmapIPv4 } from '../protocol/ipc-wire';
import crypto from 'node:crypto';
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { LimitError, NotFoundError, type ErrorCode } from '../protocol/errors';
import { publicationId } from '../protocol/names';
import { Headers } from '../protocol/wire';
import type { Logger } from '../runtime/log';
import type { Metrics } from '../runtime/metrics';
import { openTrace } from '../runtime/open-trace';
import { ResumableStream } from '../runtime/resumable-stream';
import { splice, type SpliceMeter, type SpliceResult } from '../runtime/splice';
import type { EndpointSession } from './endpoints';
import type { ProxySession } from './publications';
import type { Responder } from './respond';
import type { Publication } from './store';

/** The opening steps of each tunnel, when UNDERPASS_OPEN_TRACE asks for them (the bench's timeline). */
const trace = openTrace('server');

/** One publication's traffic since the server started, for the status page. */
export interface Traffic {
  open: number;
  opened: number;
  up: number;
  down: number;
  /** Shared by the publication's tunnels: nothing per tunnel beyond the splice itself. */
  meter: SpliceMeter;
  closed: (result: SpliceResult) => void;
}

/** A redirector's CONNECT waiting for the proxy to connect to the target. */
export interface PendingTunnel {
  id: string;
  proxy: ProxySession;
  client: http2.ServerHttp2Stream;
  /** The session the request came on, for its pending count. */
  requester: http2.Http2Session;
  /** Null for a tunnel another node relays: its side is the node link's stream, never resumed. */
  requesterEndpoint: EndpointSession | null;
  publication: Publication;
  /** performance.now() when the request came, for the open latency. */
  started: number;
  timer: NodeJS.Timeout;
  onClientClose: () => void;
  /**
   * The proxy's leg of a tunnel given to one of its standby streams, while the proxy connects to the
   * target: the app's first bytes already go down it, and what it carries back is held, with the
   * redirector's 200, until the proxy's `tunnel-ready`.
   */
  held: ResumableStream | null;
}

export interface TunnelLimits {
  /** How long a tunnel request waits for the proxy's answer (ms). */
  tunnelTimeoutMs: number;
  /** Tunnel requests one proxy session may have waiting at once. */
  maxPendingPerProxy: number;
  /** Tunnel requests one requesting session may have waiting at once. */
  maxPendingPerSession: number;
}

/** Who asks for a tunnel, as a publication behind the PROXY protocol is told. */
export interface TunnelClient {
  address?: string;
  port?: number;
  account: string;
  host: string;
}

/** The requester as the server sees it: its TCP peer (none for a session carried over a WebSocket). */
export function clientOf(requester: http2.Http2Session, account: string, host: string): TunnelClient {
  const socket = requester.socket as { remoteAddress?: string; remotePort?: number } | undefined;
  const address = socket?.remoteAddress !== undefined ? unmapIPv4(socket.remoteAddress) : undefined;
  return {
    ...(address !== undefined ? { address } : {}),
    ...(socket?.remotePort !== undefined ? { port: socket.remotePort } : {}),
    account,
    host,
  };
}

/** One of the proxy's standby streams still open, taken from its set; null when it holds none. */
function takeStandby(proxy: ProxySession): http2.ServerHttp2Stream | null {
  for (const [stream, onClose] of proxy.standby) {
    proxy.standby.delete(stream);
    // Nothing of the wait stays with the tunnel the stream now carries (its closure, ~0.2 KiB).
    stream.off('close', onClose);
    if (!stream.destroyed && !stream.closed) return stream;
  }
  return null;
}

export class TunnelMatcher {
  private readonly pending = new Map<string, PendingTunnel>();
  /** Tunnel requests waiting for a proxy's answer, per requesting session. */
  private readonly pendingBySession = new Map<http2.Http2Session, number>();
  private readonly traffic = new Map<string, Traffic>();

  constructor(
    private readonly limits: TunnelLimits,
    private readonly responder: Responder,
    private readonly log: Logger,
    private readonly metrics: Metrics | undefined,
    /** Sends a tunnel request on the proxy's control stream. */
    private readonly sendTunnel: (proxy: ProxySession, id: string, key: string, client?: TunnelClient) => void,
  ) {}

  /** Asks `proxy` for a tunnel to `publication` for the redirector's `stream`; the answer comes as its CONNECT. */
  request(
    stream: http2.ServerHttp2Stream,
    host: string,
    publication: Publication,
    proxy: ProxySession,
    /**
     * The requester's endpoint session (made for it on the spot, once the request is taken); for a
     * tunnel another node relays, who that node says asks.
     */
    requester: (() => EndpointSession) | TunnelClient,
  ): void {
    if (proxy.pending.size >= this.limits.maxPendingPerProxy) {
      throw new LimitError(`too many tunnels waiting for ${host}'s proxy`);
    }
    const session = stream.session as http2.Http2Session;
    const waiting = this.pendingBySession.get(session) ?? 0;
    if (waiting >= this.limits.maxPendingPerSession)
      throw new LimitError('too many tunnel requests waiting on this session');
    this.pendingBySession.set(session, waiting + 1);
    const requesterEndpoint = typeof requester === 'function' ? requester() : null;

    const id = crypto.randomBytes(12).toString('base64url');
    trace?.name(stream, id);
    const timer = setTimeout(() => {
      if (this.pending.get(id) === pending)
        this.refusePending(pending, 'UP_ERR_UNREACHABLE', `${host}'s proxy did not answer in time`);
    }, this.limits.tunnelTimeoutMs);
    timer.unref();
    const onClientClose = (): void => {
      if (this.pending.get(id) !== pending) return;
      this.forget(pending);
      pending.held?.destroy();
    };
    const pending: PendingTunnel = {
      id,
      proxy,
      client: stream,
      requester: session,
      requesterEndpoint,
      publication,
      started: performance.now(),
      timer,
      onClientClose,
      held: null,
    };
    this.pending.set(id, pending);
    proxy.pending.set(id, pending);
    stream.once('close', onClientClose);
    // A publication behind the PROXY protocol needs who asks, which only the control line carries.
    const standby = proxy.wantsClient.has(publication.name) ? null : takeStandby(proxy);
    if (standby !== null) {
      standby.respond({ ':status': 200, [Headers.tunnelId]: id, [Headers.serviceKey]: publication.key });
      trace?.markId(id, 'standby-out');
      this.join(pending, standby, true);
      return;
    }
    this.sendTunnel(
      proxy,
      id,
      publication.key,
      !proxy.wantsClient.has(publication.name)
        ? undefined
        : typeof requester === 'function'
          ? clientOf(session, pending.requesterEndpoint?.account ?? '', host)
          : requester,
    );
    trace?.markId(id, 'control-out');
  }

  /** The proxy reached the target and opens the stream that carries the bytes. */
  answer(stream: http2.ServerHttp2Stream, id: string): void {
    trace?.markId(id, 'answer-in');
    const pending = this.pending.get(id);
    if (!pending || pending.proxy.session !== stream.session || pending.held !== null) {
      throw new NotFoundError('no tunnel request with that id is waiting on this session');
    }
    if (pending.client.destroyed || pending.client.closed) {
      this.forget(pending);
      stream.close(http2.constants.NGHTTP2_CANCEL);
      return;
    }
    stream.respond({ ':status': 200 });
    this.join(pending, stream, false);
  }

  /**
   * Splices the redirector's stream and the proxy's, each as a resumable leg. `held`: the proxy is
   * still connecting to the target (a standby stream), and the redirector's 200 waits for its
   * tunnel-ready; else the tunnel is open now.
   */
  private join(pending: PendingTunnel, stream: http2.ServerHttp2Stream, held: boolean): void {
    const { id, client } = pending;
    if (!held) {
      this.forget(pending);
      client.respond({ ':status': 200, [Headers.tunnelId]: id });
    }
    // Each leg outlives its stream for the grace period should its endpoint's link drop.
    // The server never resumes a tunnel itself (its endpoints do), so its legs name no authority.
    let clientSide: Duplex = client;
    if (pending.requesterEndpoint !== null) {
      const clientLeg = new ResumableStream('');
      clientLeg.attach(client, 0);
      pending.requesterEndpoint.tunnels.add(id, clientLeg);
      clientSide = clientLeg;
    }
    const proxyLeg = new ResumableStream('');
    proxyLeg.attach(stream, 0);
    pending.proxy.endpoint.tunnels.add(id, proxyLeg);
    const traffic = this.trafficOf(pending.publication);
    traffic.open += 1;
    traffic.opened += 1;
    if (!held) this.metrics?.tunnelOpened('ok', pending.publication.name, (performance.now() - pending.started) / 1000);
    splice(
      clientSide,
      proxyLeg,
      this.log.isDebugEnabled() ? this.tunnelClosedLogger(pending.publication.name, traffic) : traffic.closed,
      undefined,
      traffic.meter,
    );
    // Held until tunnel-ready: nothing may reach the redirector before its 200 (a write would send
    // one without the tunnel's id), and a paused leg emits neither data nor its end.
    if (held) {
      proxyLeg.pause();
      pending.held = proxyLeg;
    }
    if (trace !== null) {
      trace.markId(id, 'ok-out');
      trace.markFirstData(clientSide, id, 'client-data-in');
      trace.markFirstData(proxyLeg, id, 'proxy-data-in');
    }
  }

  /** The proxy reached the target of a tunnel on a standby stream: the redirector gets its 200, and the bytes flow both ways. */
  handleTunnelReady(proxy: ProxySession, id: string): void {
    const pending = proxy.pending.get(id);
    const held = pending?.held;
    if (!pending || !held) return;
    trace?.markId(id, 'ready-in');
    this.forget(pending);
    pending.client.respond({ ':status': 200, [Headers.tunnelId]: id });
    this.metrics?.tunnelOpened('ok', pending.publication.name, (performance.now() - pending.started) / 1000);
    held.resume();
  }

  /** The proxy could not reach the target: the redirector's request is refused with its reason. */
  handleTunnelFailed(proxy: ProxySession, id: string, code: string, message: string): void {
    const pending = proxy.pending.get(id);
    if (!pending) return;
    this.log.info(`tunnel refused: ${message}`, { publication: pending.publication.name, code });
    this.refusePending(pending, 'UP_ERR_TARGET_REFUSED', message);
  }

  /** The proxy went away: every request waiting on it is refused. */
  dropProxy(proxy: ProxySession): void {
    for (const pending of [...proxy.pending.values()])
      this.refusePending(pending, 'UP_ERR_OFFLINE', 'the service proxy went away');
  }

  /**
   * Refuses a waiting request. A held tunnel's legs go too, after the refusal, so that the redirector
   * reads the refusal's reason rather than a reset; the proxy's stream is reset with them.
   */
  private refusePending(pending: PendingTunnel, code: ErrorCode, message: string): void {
    this.forget(pending);
    this.responder.refuse(pending.client, code, message);
    if (pending.held !== null) {
      this.trafficOf(pending.publication).opened -= 1;
      pending.held.destroy();
    }
  }

  /** The traffic of publication `id` so far, if it had any. */
  trafficOfId(id: string): Traffic | undefined {
    return this.traffic.get(id);
  }

  /** Tunnels open now, over every publication. */
  get open(): number {
    let open = 0;
    for (const t of this.traffic.values()) open += t.open;
    return open;
  }

  private forget(pending: PendingTunnel): void {
    clearTimeout(pending.timer);
    // Nothing of the request may outlive it: an open tunnel keeps only its two streams.
    pending.client.off('close', pending.onClientClose);
    const waiting = (this.pendingBySession.get(pending.requester) ?? 1) - 1;
    if (waiting <= 0) this.pendingBySession.delete(pending.requester);
    else this.pendingBySession.set(pending.requester, waiting);
    this.pending.delete(pending.id);
    pending.proxy.pending.delete(pending.id);
  }

  private trafficOf(publication: Publication): Traffic {
    const id = publicationId(publication.account, publication.name);
    let traffic = this.traffic.get(id);
    if (traffic === undefined) {
      const metered = this.metrics?.meter(publication.name);
      const t: Traffic = {
        open: 0,
        opened: 0,
        up: 0,
        down: 0,
        // Bytes for the status page, and for the metrics when they are on.
        meter: {
          aToB: (n) => {
            t.up += n;
            metered?.aToB(n);
          },
          bToA: (n) => {
            t.down += n;
            metered?.bToA(n);
          },
        },
        closed: () => (t.open -= 1),
      };
      traffic = t;
      this.traffic.set(id, traffic);
    }
    return traffic;
  }

  /**
   * The debug line an ended tunnel logs (beside leaving the open count). Made apart from the request's
   * scope so that an open tunnel keeps no part of its request (pending entry, timer, headers) alive:
   * ~0.5 KiB each.
   */
  private tunnelClosedLogger(publication: string, traffic: Traffic): (result: SpliceResult) => void {
    const started = Date.now();
    return (result) => {
      traffic.closed(result);
      this.log.debug('tunnel closed', {
        publication,
        up: result.aToB,
        down: result.bToA,
        ms: Date.now() - started,
        ...(result.error ? { aborted: true } : {}),
      });
    };
  }
}
