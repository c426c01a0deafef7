/**
 * The redirector's direct hop (seed figure 8): when a publication's proxy has a direct listener
 * (`underpass proxy --direct-listen`) and this machine can reach it, tunnels to that publication go
 * straight to the proxy and the tunnel server carries none of their bytes; otherwise they are relayed as
 * always, and the app never sees which.
 *
 * Per publication it remembers what worked. The first tunnel tries direct: a ticket from the server (the
 * server checks this account's access as for any tunnel, PROTOCOL.md §1.6), then TCP and TLS to the
 * listener within a short deadline, the certificate pinned to the fingerprint the server vouched for,
 * then CONNECT with the ticket on an HTTP/2 session that later tunnels share. A failure sends this and
 * the next tunnels through the relay, and a probe tries direct again later (the retry interval, doubling
 * per failed probe up to 16×); every switch, direct → relay and relay → direct, is one log line.
 *
 * Tunnels already open never move. A direct session that dies resets its tunnels, as a relayed tunnel is
 * reset when its session does not come back; the next tunnel finds out whether direct still works.
 */
import http2 from 'node:http2';
import tls from 'node:tls';
import { DIRECT_DEADLINE_MS, DIRECT_RETRY_MS, KEEPALIVE_MS } from '../protocol/defaults';
import { TlsError, UnreachableError, type ErrorCode, type UnderpassError } from '../protocol/errors';
import { formatHostPort, tryParseHostPort } from '../protocol/names';
import { ALPN, DirectOffer, Headers, Paths } from '../protocol/wire';
import { keepalive, raiseSessionWindow, sessionOptions } from '../runtime/h2';
import type { Logger } from '../runtime/log';
import { getJson, refusalFrom } from '../runtime/requests';
import type { ServerLink } from '../runtime/server-link';

export interface DirectHopOptions {
  /** Delay before a probe tries direct again after a failure (ms); doubles per failed probe, up to 16×. */
  retryMs: number;
  /** How long reaching the direct listener (TCP and TLS), or a PING on an open direct session, may take (ms). */
  deadlineMs: number;
  /** PING interval on a direct session: a path that went silent resets its tunnels within two (ms). */
  keepaliveMs: number;
}

export const defaultDirectHop: DirectHopOptions = {
  retryMs: DIRECT_RETRY_MS,
  deadlineMs: DIRECT_DEADLINE_MS,
  keepaliveMs: KEEPALIVE_MS,
};

/** A ticket this close to its expiry is renewed before use (ms): it must not expire on its way. */
const RENEW_BEFORE_MS = 10_000;

/** Refusals that are the target's, not the path's: the relay would hear the same, so they are the answer. */
const TARGET_CODES: ReadonlySet<ErrorCode> = new Set(['UP_ERR_TARGET_REFUSED', 'UP_ERR_UNREACHABLE']);

/** The proxy answered the direct request with a refusal about its target. */
class TargetAnswer extends Error {
  constructor(readonly refusal: UnderpassError) {
    super(refusal.message);
  }
}

interface Route {
  host: string;
  via: 'untried' | 'direct' | 'relay';
  failures: number;
  probe: NodeJS.Timeout | null;
  offer: DirectOffer | null;
  /** The session the offer's ticket was shown on: the proxy binds a ticket to the first that shows it. */
  ticketShownOn: http2.ClientHttp2Session | null;
  fetching: Promise<DirectOffer> | null;
  session: http2.ClientHttp2Session | null;
  /** The address the session was dialled to, and the fingerprint it showed. */
  sessionAt: string;
  sessionFingerprint: string;
  dialing: Promise<http2.ClientHttp2Session> | null;
  /** The PING in flight on the session, shared by every tunnel that waits on it. */
  pinging: Promise<void> | null;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function ignore(): void {}

export class DirectHop {
  private readonly routes = new Map<string, Route>();

  constructor(
    private readonly link: ServerLink,
    private readonly headersFor: (host: string) => http2.OutgoingHttpHeaders,
    private readonly log: Logger,
    private readonly options: DirectHopOptions,
  ) {}

  /** How tunnels to `host` go now: for `underpass status`. */
  via(host: string): 'untried' | 'direct' | 'relay' {
    return this.routes.get(host)?.via ?? 'untried';
  }

  /**
   * A tunnel to `host:port` straight to its proxy, answered 200 there; null when this one is to be
   * relayed (the direct path failed now or recently). Rejects with the proxy's refusal when the proxy was
   * reached but its target was not: the relay would meet the same refusal.
   */
  async open(host: string, port: number): Promise<http2.ClientHttp2Stream | null> {
    const route = this.routeOf(host);
    if (route.via === 'relay') return null;
    try {
      const stream = await this.request(route, port);
      if (route.via === 'untried') this.log.info(`${host}: direct hop to ${route.sessionAt}`);
      route.via = 'direct';
      return stream;
    } catch (e) {
      if (e instanceof TargetAnswer) throw e.refusal;
      this.failed(route, errorText(e));
      return null;
    }
  }

  stop(): void {
    for (const route of this.routes.values()) {
      if (route.probe !== null) clearTimeout(route.probe);
      route.session?.destroy();
    }
    this.routes.clear();
  }

  private routeOf(host: string): Route {
    let route = this.routes.get(host);
    if (route === undefined) {
      route = {
        host,
        via: 'untried',
        failures: 0,
        probe: null,
        offer: null,
        ticketShownOn: null,
        fetching: null,
        session: null,
        sessionAt: '',
        sessionFingerprint: '',
        dialing: null,
        pinging: null,
      };
      this.routes.set(host, route);
    }
    return route;
  }

  /**
   * The direct path failed: relay from now on, and probe again later. The session is let go, not
   * destroyed: a PING late on a loaded machine is not proof that its tunnels are dead. It closes once
   * they end, or its keepalive resets them if the path really is gone.
   */
  private failed(route: Route, reason: string): void {
    route.session?.close();
    route.session = null;
    route.via = 'relay';
    route.failures += 1;
    const waitMs = this.options.retryMs * 2 ** Math.min(route.failures - 1, 4);
    this.log.warn(`${route.host}: direct → relay: ${reason}; trying direct again in ${waitMs / 1000} s`);
    this.scheduleProbe(route, waitMs);
  }

  private scheduleProbe(route: Route, waitMs: number): void {
    if (route.probe !== null) clearTimeout(route.probe);
    route.probe = setTimeout(() => void this.probe(route), waitMs);
    route.probe.unref();
  }

  /** Tries the direct path without a tunnel waiting on it; tunnels go direct again once it works. */
  private async probe(route: Route): Promise<void> {
    route.probe = null;
    try {
      await this.sessionFor(route, await this.ticket(route));
    } catch (e) {
      route.failures += 1;
      const waitMs = this.options.retryMs * 2 ** Math.min(route.failures - 1, 4);
      this.log.debug(`${route.host}: direct still fails (${errorText(e)}); next try in ${waitMs / 1000} s`);
      this.scheduleProbe(route, waitMs);
      return;
    }
    route.via = 'direct';
    route.failures = 0;
    this.log.info(`${route.host}: relay → direct (${route.sessionAt})`);
  }

  /** A ticket for the route's publication, from the server unless the one held is still good for a while. */
  private ticket(route: Route): Promise<DirectOffer> {
    if (route.offer !== null && route.offer.expiresAt - Date.now() > RENEW_BEFORE_MS)
      return Promise.resolve(route.offer);
    route.fetching ??= this.fetchTicket(route.host)
      .then((offer) => (route.offer = offer))
      .finally(() => (route.fetching = null));
    return route.fetching;
  }

  private async fetchTicket(host: string): Promise<DirectOffer> {
    const live = this.link.current();
    if (live === null) throw new UnreachableError('no session to the tunnel server for a direct ticket');
    return getJson(
      live.session,
      { ':path': Paths.direct + encodeURIComponent(host), ...this.headersFor(host) },
      DirectOffer,
      {
        refused: `the server gave no direct ticket for ${host}`,
        closed: () => new UnreachableError('the session closed while asking for a direct ticket'),
        malformed: `the server sent a malformed direct ticket for ${host}`,
      },
    );
  }

  /** Opens the tunnel's stream on the route's direct session and waits for the proxy's answer. */
  private async request(route: Route, port: number): Promise<http2.ClientHttp2Stream> {
    let offer = await this.ticket(route);
    const reused = route.session !== null && !route.session.destroyed && !route.session.closed;
    const session = await this.sessionFor(route, offer);
    // A new session needs a ticket of its own: one shown on the last would be refused as replayed.
    if (route.ticketShownOn !== null && route.ticketShownOn !== session) {
      route.offer = null;
      offer = await this.ticket(route);
    }
    route.ticketShownOn = session;
    const stream = session.request({
      ':method': 'CONNECT',
      ':authority': formatHostPort({ host: route.host, port }),
      [Headers.directTicket]: offer.ticket,
    });
    stream.on('error', ignore);
    // A session that was open before may have died silently (a firewall that now drops its packets):
    // it must answer a PING within the deadline, or the tunnel goes through the relay instead.
    const alive = reused ? this.alive(route, session) : Promise.resolve();
    return new Promise((resolve, reject) => {
      let answered = false;
      const onClose = (): void => reject(new UnreachableError('the direct session closed'));
      alive.catch((e: unknown) => {
        // Late: the proxy answered first, so the path works and the tunnel stays.
        if (answered) return;
        stream.off('close', onClose);
        stream.close(http2.constants.NGHTTP2_CANCEL);
        reject(e instanceof Error ? e : new Error(String(e)));
      });
      stream.once('close', onClose);
      stream.once('response', (headers) => {
        answered = true;
        stream.off('close', onClose);
        if (Number(headers[':status']) === 200) {
          resolve(stream);
          return;
        }
        const refusal = refusalFrom(headers, 'the direct listener refused the tunnel');
        stream.close();
        if (TARGET_CODES.has(refusal.code)) {
          reject(new TargetAnswer(refusal));
          return;
        }
        // A refused ticket (expired on a skewed clock, a restarted proxy's new secret): fetch another next time.
        route.offer = null;
        reject(refusal);
      });
    });
  }

  /** Resolves when the session answers a PING within the deadline; rejects otherwise. */
  private alive(route: Route, session: http2.ClientHttp2Session): Promise<void> {
    route.pinging ??= new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new UnreachableError(`the direct session to ${route.sessionAt} stopped answering`)),
        this.options.deadlineMs,
      );
      try {
        session.ping((err) => {
          clearTimeout(timer);
          if (err) reject(err);
          else resolve();
        });
      } catch (e) {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    }).finally(() => (route.pinging = null));
    return route.pinging;
  }

  /** The route's direct session, dialled now when there is none (or the proxy's certificate changed). */
  private sessionFor(route: Route, offer: DirectOffer): Promise<http2.ClientHttp2Session> {
    const current = route.session;
    if (current !== null && !current.destroyed && !current.closed && route.sessionFingerprint === offer.fingerprint)
      return Promise.resolve(current);
    current?.close();
    route.session = null;
    route.dialing ??= this.dial(route, offer).finally(() => (route.dialing = null));
    return route.dialing;
  }

  /** Dials every announced address at once; the first to show the pinned certificate wins. */
  private async dial(route: Route, offer: DirectOffer): Promise<http2.ClientHttp2Session> {
    const attempts = offer.addresses.map((address) => this.dialOne(address, offer.fingerprint));
    let winner: { socket: tls.TLSSocket; address: string };
    try {
      winner = await Promise.any(attempts);
    } catch (e) {
      const reasons = e instanceof AggregateError ? e.errors.map(errorText) : [errorText(e)];
      throw new UnreachableError(reasons.join('; '));
    }
    // The losers of the race are not needed.
    for (const attempt of attempts)
      void attempt.then((other) => other.socket !== winner.socket && other.socket.destroy(), ignore);
    const { socket, address } = winner;
    const session = http2.connect(`https://${address}`, { ...sessionOptions, createConnection: () => socket });
    session.on('error', ignore);
    raiseSessionWindow(session);
    keepalive(
      session,
      this.options.keepaliveMs,
      () => {
        this.log.warn(`${route.host}: the direct session stopped answering: its tunnels are reset`);
        // With an error, so that its streams end as aborted and their apps see a reset, not a hang.
        session.destroy(new UnreachableError('the direct session stopped answering'));
      },
      socket,
    );
    session.once('close', () => {
      if (route.session === session) route.session = null;
    });
    route.session = session;
    route.sessionAt = address;
    route.sessionFingerprint = offer.fingerprint;
    return session;
  }

  /** TCP and TLS to one address within the deadline, its certificate the one the server vouched for. */
  private dialOne(address: string, fingerprint: string): Promise<{ socket: tls.TLSSocket; address: string }> {
    const at = tryParseHostPort(address);
    if (at === null) return Promise.reject(new UnreachableError(`'${address}' is not HOST:PORT`));
    return new Promise((resolve, reject) => {
      // The chain is not checked (the certificate is self-signed); the fingerprint below is the check.
      const socket = tls.connect({ host: at.host, port: at.port, ALPNProtocols: [ALPN], rejectUnauthorized: false });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new UnreachableError(`${address} did not answer within ${this.options.deadlineMs} ms`));
      }, this.options.deadlineMs);
      socket.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new UnreachableError(`cannot reach ${address} (${e.code ?? e.message})`));
      });
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        if (socket.getPeerCertificate().fingerprint256 !== fingerprint || socket.alpnProtocol !== ALPN) {
          socket.destroy();
          reject(new TlsError(`${address} showed a certificate other than the one the tunnel server vouched for`));
          return;
        }
        socket.setNoDelay(true);
        resolve({ socket, address });
      });
    });
  }
}
