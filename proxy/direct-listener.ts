/**
 * The service proxy's direct listener (`--direct-listen HOST:PORT`; seed figure 8, the "hop"): a TLS
 * listener a redirector that can reach this host dials instead of the tunnel server, so the server
 * carries no byte of those tunnels. It speaks the session protocol's tunnel request (HTTP/2 CONNECT over
 * TLS, one stream a tunnel), nothing new.
 *
 * Its certificate is self-signed and made at each start; the proxy announces its SHA-256 fingerprint with
 * every publish, the server hands it to the redirectors it authorises, and they pin it. Who may open a
 * tunnel is the server's decision, carried as a ticket it signed with this publication's secret
 * (protocol/direct-ticket.ts): every CONNECT shows one, and one that is forged, expired, for another
 * publication, or already bound to another session is refused in one line before anything is dialled.
 */
import crypto from 'node:crypto';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import type { DirectListing } from '../protocol/control';
import { verifyTicket, tryTicketHost, type TicketBody } from '../protocol/direct-ticket';
import {
  BadMessageError,
  ConfigError,
  ForbiddenError,
  isUnderpassError,
  NotFoundError,
  UnreachableError,
  type ErrorCode,
} from '../protocol/errors';
import { formatHostPort, tryParseHostPort, type HostPort } from '../protocol/names';
import { ALPN, Headers, StatusOf } from '../protocol/wire';
import { keepalive, raiseSessionWindow, sessionOptions } from '../runtime/h2';
import { KEEPALIVE_MS } from '../protocol/defaults';
import type { Logger } from '../runtime/log';
import { selfSigned } from '../server/certificate';

/** How long a session may stay open without having shown a valid ticket (ms). */
const UNTICKETED_MS = 10_000;

/** What the listener asks of the proxy: open a tunnel to the publication `host` for a checked ticket. */
export type OpenDirect = (host: string, ticket: TicketBody, stream: http2.ServerHttp2Stream) => void;

/** Refuses a tunnel request with the session protocol's refusal headers. */
export function refuseStream(stream: http2.ServerHttp2Stream, code: ErrorCode, message: string): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  stream.respond(
    { ':status': StatusOf[code] ?? 400, [Headers.errorCode]: code, [Headers.errorMessage]: message },
    { endStream: true },
  );
}

/** Where a listener bound to `address` can be reached: the address, or every interface's for a wildcard. */
function reachableAt(address: AddressInfo): string[] {
  if (address.address !== '0.0.0.0' && address.address !== '::')
    return [formatHostPort({ host: address.address, port: address.port })];
  const found: string[] = [];
  for (const list of Object.values(os.networkInterfaces()))
    for (const a of list ?? [])
      if (!a.internal && (address.address === '::' || a.family === 'IPv4'))
        found.push(formatHostPort({ host: a.address, port: address.port }));
  return found.slice(0, 8);
}

export class DirectListener {
  private server: http2.Http2SecureServer | null = null;
  /** Ticket secret and published port, by pseudo name: filled as the server accepts each publication. */
  private readonly publications = new Map<string, { secret: string; port: number }>();
  /** Nonces of tickets already shown, with the session each is bound to, until they expire. */
  private readonly used = new Map<string, { session: http2.Http2Session; expiresAt: number }>();
  private readonly ticketed = new WeakSet<http2.Http2Session>();
  private readonly sessions = new Set<http2.Http2Session>();

  constructor(
    private readonly log: Logger,
    private readonly open: OpenDirect,
  ) {}

  /** Listens on `at`; resolves with what the proxy announces: its addresses and the certificate's fingerprint. */
  async start(at: HostPort): Promise<DirectListing> {
    const pems = await selfSigned(at.host);
    const fingerprint = new crypto.X509Certificate(pems.cert).fingerprint256;
    const server = http2.createSecureServer({
      ...sessionOptions,
      key: pems.private,
      cert: pems.cert,
      ALPNProtocols: [ALPN],
      minVersion: 'TLSv1.2',
    });
    this.server = server;
    server.on('session', (session) => this.handleSession(session));
    server.on('stream', (stream, headers) => this.handleStream(stream, headers));
    // A client that fails its handshake (a port scan, a wrong protocol) costs one line at debug.
    server.on('tlsClientError', (e) => this.log.debug(`direct listener: TLS handshake failed (${e.message})`));
    await new Promise<void>((resolve, reject) => {
      const refuse = (e: NodeJS.ErrnoException): void =>
        reject(
          new ConfigError(
            `--direct-listen ${formatHostPort(at)}: cannot listen there (${e.code ?? e.message}): choose another address or port`,
          ),
        );
      server.once('error', refuse);
      server.listen(at.port, at.host, () => {
        server.off('error', refuse);
        resolve();
      });
    });
    const addresses = reachableAt(server.address() as AddressInfo);
    this.log.info(`direct listener on ${addresses.join(', ')}`, { fingerprint });
    return { addresses, fingerprint };
  }

  /** Tickets for `host` (a publication the server accepted) are signed with `secret`. */
  allow(host: string, port: number, secret: string): void {
    this.publications.set(host, { secret, port });
  }

  stop(): void {
    this.server?.close();
    for (const session of this.sessions) session.destroy();
  }

  private handleSession(session: http2.ServerHttp2Session): void {
    this.sessions.add(session);
    raiseSessionWindow(session);
    session.on('error', () => undefined);
    // A redirector whose path went silent: its tunnels' targets are reset rather than held open.
    keepalive(session, KEEPALIVE_MS, () => session.destroy(new UnreachableError('the redirector stopped answering')));
    const timer = setTimeout(() => {
      if (!this.ticketed.has(session)) session.destroy();
    }, UNTICKETED_MS);
    timer.unref();
    session.once('close', () => {
      clearTimeout(timer);
      this.sessions.delete(session);
    });
  }

  private handleStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => undefined);
    const session = stream.session as http2.Http2Session;
    let ticket: TicketBody;
    let host: string;
    try {
      ({ ticket, host } = this.check(session, headers));
    } catch (e) {
      const message = isUnderpassError(e) ? e.message : String(e);
      const remote = session.socket?.remoteAddress ?? '?';
      this.log.warn(`refused a direct tunnel from ${remote}: ${message}`);
      refuseStream(stream, isUnderpassError(e) ? e.code : 'UP_ERR_PROTOCOL', message);
      // A session that never showed a valid ticket gets nothing more to try on.
      if (!this.ticketed.has(session)) session.close();
      return;
    }
    this.ticketed.add(session);
    this.open(host, ticket, stream);
  }

  /** The ticket and publication of a direct CONNECT; throws ForbiddenError (or NotFoundError) saying why not. */
  private check(session: http2.Http2Session, headers: http2.IncomingHttpHeaders): { ticket: TicketBody; host: string } {
    const raw = headers[Headers.directTicket];
    const target = tryParseHostPort(headers[':authority'] ?? '');
    if (headers[':method'] !== 'CONNECT' || target === null || typeof raw !== 'string')
      throw new BadMessageError(`a direct listener serves CONNECT NAME:PORT with ${Headers.directTicket} only`, {
        whole: true,
      });
    const publication = this.publications.get(target.host);
    if (publication === undefined || publication.port !== target.port)
      throw new NotFoundError(
        `${formatHostPort(target)} is not published here` +
          (tryTicketHost(raw) === null ? '' : ` (the ticket names ${tryTicketHost(raw)})`),
      );
    const now = Date.now();
    const ticket = verifyTicket(raw, publication.secret, target.host, now);
    for (const [nonce, use] of this.used) if (use.expiresAt <= now) this.used.delete(nonce);
    const use = this.used.get(ticket.n);
    if (use !== undefined && use.session !== session)
      throw new ForbiddenError(
        `replayed direct ticket (account ${ticket.a}): each ticket opens one session; ask the tunnel server for a new one`,
      );
    this.used.set(ticket.n, { session, expiresAt: ticket.e });
    return { ticket, host: target.host };
  }
}
