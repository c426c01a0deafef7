/**
 * The publishing/tunneling server (seed figures 4 and 7). Service proxies publish to it over a control
 * stream and get a service key and a pseudo DNS name; redirectors ask it for tunnels with HTTP/2 CONNECT;
 * it finds the session of the proxy that holds the publication, forwards the request with the key, and
 * splices the redirector's stream to the stream the proxy opens in answer.
 *
 * Every session is an HTTP/2 connection over TLS that an endpoint dialled. A bad request ends that stream
 * with a status and an `underpass-error` code; it never touches another stream or session.
 *
 * An endpoint's session outlives its connection: when the link drops, the tunnels on it wait for the grace
 * period, and an endpoint that comes back with the session's resumption token gets them back where they
 * were (PROTOCOL.md "Resumption").
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import http2 from 'node:http2';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import tlsDefaults, { type TLSSocket } from 'node:tls';
import { createWebSocketStream, WebSocketServer } from 'ws';
import { ControlDecoder, encodeControl, EndpointMessage, type ServerMessage } from '../protocol/control';
import {
  BadMessageError,
  type ErrorCode,
  ForbiddenError,
  isUnderpassError,
  LimitError,
  NotFoundError,
  OfflineError,
} from '../protocol/errors';
import { label, pseudoName, tryParseHostPort, tryParsePseudoName } from '../protocol/names';
import {
  Headers,
  Paths,
  SERVER_CIPHERS,
  StatusOf,
  WIRE_VERSION,
  type NameInfo,
  type SessionInfo,
} from '../protocol/wire';
import { keepalive, raiseSessionWindow, sessionOptions } from '../runtime/h2';
import type { Logger } from '../runtime/log';
import { ResumableStream } from '../runtime/resumable-stream';
import { splice, type SpliceResult } from '../runtime/splice';
import { TunnelTable } from '../runtime/tunnel-table';
import { WS_PATH } from '../runtime/transport';
import { Accounts, AuthThrottle, loadAccountsFile, loadOrCreateToken, secretsEqual } from './accounts';
import { ensureIdentity } from './certificate';
import { serverConfig, type ServerConfig, type ServerOptions } from './config';
import { PublicationStore, type Publication } from './store';
import { appendAudit, TokenStore, tryTokenId, type TokenGrant } from './tokens';
import type { MetricsSnapshot } from '../runtime/metrics';
import type { SpliceMeter } from '../runtime/splice';

/** What the status page shows: the server's state now, nothing secret (no keys, no tokens). */
export interface ServerStatus {
  zone: string;
  startedAt: string;
  publications: {
    host: string;
    account: string;
    name: string;
    port: number;
    online: boolean;
    tunnelsOpen: number;
    tunnelsOpened: number;
    bytesUp: number;
    bytesDown: number;
  }[];
  endpoints: { account: string; remote: string; role: 'proxy' | 'client'; tunnels: number; connected: boolean }[];
}

/** One publication's traffic since the server started, for the status page. */
interface Traffic {
  open: number;
  opened: number;
  up: number;
  down: number;
  /** Shared by the publication's tunnels: nothing per tunnel beyond the splice itself. */
  meter: SpliceMeter;
  closed: (result: SpliceResult) => void;
}

/**
 * An endpoint's session as the server knows it: it outlives the HTTP/2 connection that carries it for
 * the grace period, holding the endpoint's side of its tunnels.
 */
interface EndpointSession {
  id: string;
  secret: string;
  account: string;
  h2: http2.Http2Session | null;
  control: http2.ServerHttp2Stream | null;
  tunnels: TunnelTable;
}

/** A control stream's proxy role: the publications it holds and the tunnel requests waiting on it. */
interface ProxySession {
  id: number;
  account: string;
  /** The issued token's scopes the proxy authenticated with, if it used one. */
  grant: TokenGrant | undefined;
  session: http2.Http2Session;
  endpoint: EndpointSession;
  control: http2.ServerHttp2Stream;
  publications: Set<string>;
  pending: Map<string, PendingTunnel>;
}

/** A redirector's CONNECT waiting for the proxy to connect to the target. */
interface PendingTunnel {
  id: string;
  proxy: ProxySession;
  client: http2.ServerHttp2Stream;
  /** The session the request came on, for its pending count. */
  requester: http2.Http2Session;
  requesterEndpoint: EndpointSession;
  publication: Publication;
  /** performance.now() when the request came, for the open latency. */
  started: number;
  timer: NodeJS.Timeout;
  onClientClose: () => void;
}

/** One shared no-op listener (a fresh closure per stream is 56 B of heap for the stream's life). */
function ignore(): void {}

/**
 * A TLS session's socket, marked on it before http2 makes the session. `session.socket` is a proxy that
 * refuses `destroy()` but routes every other property to the socket, so the mark is how the socket is
 * found again. (A carried session wraps its WebSocket stream, so there the server remembers the stream.)
 */
const TRANSPORT = Symbol('underpass.transport');
type MarkedSocket = Duplex & { [TRANSPORT]?: Duplex };

function markSocket(socket: Duplex): void {
  (socket as MarkedSocket)[TRANSPORT] = socket;
}

function markedSocketOf(session: http2.Http2Session): Duplex | undefined {
  try {
    return (session.socket as unknown as MarkedSocket)[TRANSPORT];
  } catch {
    return undefined; // the session has already let go of its socket
  }
}

function pubId(account: string, name: string): string {
  return `${account}/${name}`;
}

export class TunnelServer {
  private server: http2.Http2SecureServer | null = null;
  private store!: PublicationStore;
  private readonly accounts = new Accounts();
  private readonly throttle = new AuthThrottle();
  /** Sessions that have presented a valid token. */
  private readonly authenticated = new WeakSet<http2.Http2Session>();
  private tokens: TokenStore | null = null;
  /** The issued token each session last authenticated with: revoking it ends the session. */
  private readonly grantOf = new WeakMap<http2.Http2Session, TokenGrant>();
  /** Each session's transport (TLS socket or carried WebSocket stream), to end it at once. */
  private readonly transportOf = new WeakMap<http2.Http2Session, Duplex>();
  /** Tunnel requests waiting for a proxy's answer, per requesting session. */
  private readonly pendingBySession = new Map<http2.Http2Session, number>();
  /** Publication id → the proxy session serving it now. */
  private readonly holders = new Map<string, ProxySession>();
  private readonly tunnels = new Map<string, PendingTunnel>();
  private readonly sessions = new Set<http2.Http2Session>();
  /** Endpoint sessions by id, connected or waiting out their grace period. */
  private readonly endpoints = new Map<string, EndpointSession>();
  private readonly endpointOf = new WeakMap<http2.Http2Session, EndpointSession>();
  /** The WebSocket stream of the carried session being made, while http2 makes it. */
  private carrying: Duplex | undefined;
  /** Streams that are tunnel requests: their refusals count as failed openings. */
  private readonly tunnelRequests = new WeakSet<http2.ServerHttp2Stream>();
  private readonly traffic = new Map<string, Traffic>();
  private readonly startedAt = new Date().toISOString();
  private nextProxyId = 1;
  readonly zone: string;
  certPath = '';
  tokenFile: string | null = null;

  private readonly config: ServerConfig;

  constructor(options: ServerOptions) {
    this.config = serverConfig(options);
    this.zone = this.config.zone;
  }

  private get log(): Logger {
    return this.config.logger;
  }

  /** Opens the data dir, the identity and the store, then listens. Resolves with the bound address. */
  async start(): Promise<AddressInfo> {
    const { dataDir } = this.config;
    await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
    const identity = await ensureIdentity(dataDir, this.config.host, this.config.cert);
    this.certPath = identity.certPath;
    const { token, file } = await loadOrCreateToken(dataDir, this.config.token);
    this.tokenFile = file;
    this.accounts.add(token);
    if (this.config.accountsFile !== undefined) await loadAccountsFile(this.config.accountsFile, this.accounts);
    this.store = await PublicationStore.open(dataDir);
    this.tokens = new TokenStore(
      dataDir,
      (ids, reason) => this.endTokenSessions(ids, reason),
      (e) => this.log.error(`kept the tokens as they were: ${e.message}`),
    );
    this.tokens.start();

    // HTTP/1.1 is allowed only to carry the WebSocket upgrade for networks that pass nothing but web
    // traffic; sessions that arrive that way run HTTP/2 in clear inside the WebSocket's TLS.
    // A TLS handshake that does not finish within 10 s costs its sender the connection, nothing more.
    const server = http2.createSecureServer({
      ...sessionOptions,
      cert: identity.cert,
      key: identity.key,
      allowHTTP1: true,
      handshakeTimeout: 10_000,
      ciphers: `${SERVER_CIPHERS}:${tlsDefaults.DEFAULT_CIPHERS}`,
      honorCipherOrder: true,
    });
    this.server = server;
    // Ahead of http2's own listener, which makes the session from the socket.
    server.prependListener('secureConnection', markSocket);
    const carried = http2.createServer(sessionOptions);
    for (const h2 of [server, carried] as http2.Http2Server[]) {
      h2.on('session', (session: http2.ServerHttp2Session) => this.handleSession(session));
      h2.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) =>
        this.handleStream(stream, headers),
      );
    }
    const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 8 * 1024 * 1024 });
    server.on('upgrade', (request: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      if (request.url !== WS_PATH) {
        socket.destroy();
        return;
      }
      wss.handleUpgrade(request, socket, head, (ws) => {
        const stream = createWebSocketStream(ws);
        // http2 makes the session, and emits 'session', within this call.
        this.carrying = stream;
        try {
          carried.emit('connection', stream);
        } finally {
          this.carrying = undefined;
        }
      });
    });
    // A TLS client that did not pick HTTP/2 gets a short while to send its upgrade; ws clears the timeout.
    server.on('secureConnection', (socket: TLSSocket) => {
      if (socket.alpnProtocol !== 'h2') socket.setTimeout(10_000, () => socket.destroy());
    });
    server.on('tlsClientError', (err) => this.log.debug(`TLS handshake failed: ${err.message}`));
    server.on('sessionError', (err) => this.log.debug(`session error: ${err.message}`));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.config.port, this.config.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return server.address() as AddressInfo;
  }

  async stop(): Promise<void> {
    this.tokens?.stop();
    for (const session of this.sessions) session.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private handleSession(session: http2.ServerHttp2Session): void {
    this.sessions.add(session);
    raiseSessionWindow(session);
    // With the transport: a session destroyed over a link that went silent would wait to flush for ever,
    // and its tunnels would never start their grace period.
    const transport = markedSocketOf(session) ?? this.carrying;
    if (transport !== undefined) this.transportOf.set(session, transport);
    keepalive(
      session,
      this.config.keepaliveMs,
      () => this.log.warn('dropped a session that stopped answering keepalives'),
      transport,
    );
    session.on('error', () => undefined);
    session.once('close', () => this.sessions.delete(session));
  }

  private refuse(stream: http2.ServerHttp2Stream, code: ErrorCode, message: string): void {
    if (stream.destroyed || stream.closed) return;
    this.config.metrics?.refused(code);
    if (this.tunnelRequests.has(stream)) this.config.metrics?.tunnelOpened(code);
    if (stream.headersSent) {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      return;
    }
    stream.respond(
      { ':status': StatusOf[code] ?? 400, [Headers.errorCode]: code, [Headers.errorMessage]: message },
      { endStream: true },
    );
  }

  private respondJson(stream: http2.ServerHttp2Stream, body: unknown): void {
    stream.respond({ ':status': 200, 'content-type': 'application/json' });
    stream.end(JSON.stringify(body));
  }

  private handleStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', ignore);
    const auth = headers.authorization;
    const token = typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7) : '';
    const remote = stream.session?.socket?.remoteAddress ?? 'websocket';
    // The throttle holds back sessions that have not yet shown a valid token, so a token guesser
    // sharing an address with working endpoints (a NAT, loopback) never costs those endpoints anything.
    const trusted = stream.session !== undefined && this.authenticated.has(stream.session);
    if (!trusted && this.throttle.isBlocked(remote)) {
      this.refuse(
        stream,
        'UP_ERR_LIMIT',
        'too many failed authentications from this address: wait and check the token',
      );
      stream.session?.close();
      return;
    }
    let account = token === '' ? null : this.accounts.tryAccountOf(token);
    let grant: TokenGrant | undefined;
    if (account === null && this.tokens !== null && tryTokenId(token) !== null) {
      const verdict = this.tokens.verify(token);
      if (verdict.ok) {
        grant = verdict.grant;
        account = grant.account;
      } else if (verdict.reason !== 'unknown') {
        // The right secret of a token that ended: its holder, not a guesser, so no throttle; one line each.
        this.log.warn(`refused a request: ${verdict.message}`, { remote, token: verdict.id });
        this.audit({ event: 'token.refused', id: verdict.id, reason: verdict.reason, remote });
        this.refuse(stream, 'UP_ERR_AUTH', verdict.message);
        return;
      }
    }
    if (account === null) {
      // A session that shows a wrong token is guessing, whatever it showed before: it loses the exemption.
      if (stream.session !== undefined) this.authenticated.delete(stream.session);
      this.throttle.fail(remote);
      this.log.warn('refused a request with a wrong or missing token', { remote });
      this.refuse(stream, 'UP_ERR_AUTH', 'wrong or missing token');
      return;
    }
    if (stream.session !== undefined) {
      this.authenticated.add(stream.session);
      if (grant !== undefined) this.grantOf.set(stream.session, grant);
      else this.grantOf.delete(stream.session);
    }
    const version = Number(headers[Headers.version] ?? WIRE_VERSION);
    if (version !== WIRE_VERSION) {
      this.refuse(
        stream,
        'UP_ERR_PROTOCOL',
        `wire version ${String(headers[Headers.version])} is not supported (server speaks ${WIRE_VERSION}): upgrade the older side`,
      );
      return;
    }
    const method = headers[':method'];
    const path = headers[':path'] ?? '';
    try {
      if (method === 'CONNECT') {
        const tunnelId = headers[Headers.tunnelId];
        const resumeId = headers[Headers.resumeTunnel];
        if (typeof resumeId === 'string') this.handleTunnelResume(stream, resumeId, headers[Headers.received]);
        else if (typeof tunnelId === 'string') this.handleProxyAnswer(stream, tunnelId);
        else {
          this.tunnelRequests.add(stream);
          this.handleTunnelRequest(stream, account, headers, grant);
        }
      } else if (method === 'GET' && path === Paths.session) {
        const token = headers[Headers.resume];
        const { endpoint, resumed } = this.openEndpoint(
          stream.session as http2.Http2Session,
          account,
          typeof token === 'string' ? token : undefined,
        );
        const graceMs = this.config.graceMs;
        const info: SessionInfo = {
          v: WIRE_VERSION,
          account,
          zone: this.zone,
          resume: { token: `${endpoint.id}.${endpoint.secret}`, resumed, graceMs },
        };
        this.respondJson(stream, info);
      } else if (method === 'GET' && path.startsWith(Paths.names)) {
        const key = headers[Headers.serviceKey];
        this.handleNameLookup(
          stream,
          account,
          decodeURIComponent(path.slice(Paths.names.length)),
          typeof key === 'string' ? key : undefined,
          grant,
        );
      } else if (method === 'POST' && path === Paths.control) {
        this.handleControl(stream, account, grant);
      } else {
        this.refuse(stream, 'UP_ERR_NOT_FOUND', `no such endpoint: ${String(method)} ${path}`);
      }
    } catch (e) {
      this.refuse(
        stream,
        isUnderpassError(e) ? e.code : 'UP_ERR_PROTOCOL',
        isUnderpassError(e) ? e.message : 'bad request',
      );
    }
  }

  /**
   * The endpoint session an HTTP/2 session carries: the one a valid resumption token names (its tunnels
   * then wait for re-opening on this connection), or a new one.
   */
  private openEndpoint(
    h2: http2.Http2Session,
    account: string,
    token?: string,
  ): { endpoint: EndpointSession; resumed: boolean } {
    const current = this.endpointOf.get(h2);
    if (current) return { endpoint: current, resumed: false };
    if (token !== undefined) {
      const dot = token.indexOf('.');
      const known = this.endpoints.get(token.slice(0, dot));
      if (dot > 0 && known && known.account === account && secretsEqual(token.slice(dot + 1), known.secret)) {
        this.log.info('session resumed', { account, tunnels: known.tunnels.size });
        this.config.metrics?.resumed('session');
        this.carry(known, h2);
        return { endpoint: known, resumed: true };
      }
    }
    const endpoint: EndpointSession = {
      id: crypto.randomBytes(9).toString('base64url'),
      secret: crypto.randomBytes(18).toString('base64url'),
      account,
      h2: null,
      control: null,
      tunnels: new TunnelTable({
        graceMs: this.config.graceMs,
        send: (bytes) => endpoint.control?.write(bytes),
        logger: this.log,
        onExpired: () => {
          if (endpoint.h2 === null) this.endpoints.delete(endpoint.id);
        },
      }),
    };
    this.endpoints.set(endpoint.id, endpoint);
    this.carry(endpoint, h2);
    return { endpoint, resumed: false };
  }

  /** The endpoint session runs over `h2` from now on; a connection it had before is closed. */
  private carry(endpoint: EndpointSession, h2: http2.Http2Session): void {
    const previous = endpoint.h2;
    endpoint.h2 = h2;
    this.endpointOf.set(h2, endpoint);
    // What the table reports as abandoned needs no message from here: the endpoint re-opens every
    // tunnel it still has, and one the server dropped is answered UP_ERR_NOT_FOUND, which resets it.
    endpoint.tunnels.resume();
    h2.once('close', () => {
      if (endpoint.h2 !== h2) return;
      endpoint.h2 = null;
      endpoint.control = null;
      if (endpoint.tunnels.size === 0) this.endpoints.delete(endpoint.id);
      else endpoint.tunnels.suspend();
    });
    // The old connection may not have noticed its link is gone; its streams are superseded.
    if (previous && !previous.destroyed) previous.destroy();
  }

  /** The endpoint session of a request, made on the spot for a client that did not ask for one. */
  private endpointFor(stream: http2.ServerHttp2Stream, account: string): EndpointSession {
    const h2 = stream.session as http2.Http2Session;
    return this.endpointOf.get(h2) ?? this.openEndpoint(h2, account).endpoint;
  }

  /** An endpoint that came back re-opens one of its tunnels from the byte count it has. */
  private handleTunnelResume(
    stream: http2.ServerHttp2Stream,
    id: string,
    receivedHeader: string | string[] | undefined,
  ): void {
    const leg = stream.session ? this.endpointOf.get(stream.session)?.tunnels.get(id) : undefined;
    if (!leg) throw new NotFoundError('no such tunnel to resume: it ended, or its grace period passed');
    const received = Number(receivedHeader);
    if (typeof receivedHeader !== 'string' || !Number.isSafeInteger(received) || received < 0) {
      throw new BadMessageError(`${Headers.received} must be a byte count`, { whole: true });
    }
    stream.respond({ ':status': 200, [Headers.received]: String(leg.received) });
    leg.attach(stream, received);
    this.config.metrics?.resumed('tunnel');
  }

  /** Finds the publication a pseudo name stands for, if the account (and the token's scope) may use it. */
  private lookup(account: string, host: string, serviceKey?: string, grant?: TokenGrant): Publication {
    const parsed = tryParsePseudoName(host, this.zone);
    const publication = parsed ? this.store.get(parsed.account, parsed.publication) : undefined;
    if (!parsed || !publication) throw new NotFoundError(`${host} is not a publication on this server`);
    if (grant !== undefined && !grant.mayConnect(`${publication.name}.${publication.account}`)) {
      this.audit({ event: 'scope.refused', id: grant.id, account, connect: host });
      throw new ForbiddenError(`token ${grant.id} may not reach ${host}: its --connect scope does not cover it`);
    }
    if (serviceKey !== undefined && !secretsEqual(serviceKey, publication.key)) {
      throw new ForbiddenError(`wrong service key for ${host}: ask its owner for the key the proxy printed`);
    }
    if (serviceKey === undefined && !this.accounts.mayUse(account, publication.account, publication.name)) {
      throw new ForbiddenError(
        `${host} belongs to another account: present its service key (--service-key ${host}=KEY) or ask its owner for a grant`,
      );
    }
    return publication;
  }

  private handleNameLookup(
    stream: http2.ServerHttp2Stream,
    account: string,
    host: string,
    key: string | undefined,
    grant: TokenGrant | undefined,
  ): void {
    const publication = this.lookup(account, host, key, grant);
    const info: NameInfo = {
      name: publication.name,
      host: pseudoName(publication.name, publication.account, this.zone),
      port: publication.port,
      online: this.holders.has(pubId(publication.account, publication.name)),
    };
    this.respondJson(stream, info);
  }

  /** Seed figure 7: a redirector asks for a tunnel to PSEUDO_NAME:PORT. */
  private handleTunnelRequest(
    stream: http2.ServerHttp2Stream,
    account: string,
    headers: http2.IncomingHttpHeaders,
    grant: TokenGrant | undefined,
  ): void {
    const { host, port } = tryParseHostPort(headers[':authority'] ?? '') ?? { host: '', port: 0 };
    const key = headers[Headers.serviceKey];
    const publication = this.lookup(account, host, typeof key === 'string' ? key : undefined, grant);
    if (port !== publication.port) {
      throw new NotFoundError(`${host} is published on port ${publication.port}, not ${port}`);
    }
    const proxy = this.holders.get(pubId(publication.account, publication.name));
    if (!proxy) throw new OfflineError(`${host} is offline: its service proxy is not connected`);
    const limit = this.config.maxPendingPerProxy;
    if (proxy.pending.size >= limit) throw new LimitError(`too many tunnels waiting for ${host}'s proxy`);
    const requester = stream.session as http2.Http2Session;
    const waiting = this.pendingBySession.get(requester) ?? 0;
    if (waiting >= this.config.maxPendingPerSession)
      throw new LimitError('too many tunnel requests waiting on this session');
    this.pendingBySession.set(requester, waiting + 1);

    const id = crypto.randomBytes(12).toString('base64url');
    const timer = setTimeout(() => {
      if (this.tunnels.get(id) !== pending) return;
      this.forget(pending);
      this.refuse(stream, 'UP_ERR_UNREACHABLE', `${host}'s proxy did not answer in time`);
    }, this.config.tunnelTimeoutMs);
    timer.unref();
    const onClientClose = (): void => {
      if (this.tunnels.get(id) === pending) this.forget(pending);
    };
    const pending: PendingTunnel = {
      id,
      proxy,
      client: stream,
      requester,
      requesterEndpoint: this.endpointFor(stream, account),
      publication,
      started: performance.now(),
      timer,
      onClientClose,
    };
    this.tunnels.set(id, pending);
    proxy.pending.set(id, pending);
    stream.once('close', onClientClose);
    this.sendControl(proxy, { type: 'tunnel', id, key: publication.key });
  }

  private forget(pending: PendingTunnel): void {
    clearTimeout(pending.timer);
    // Nothing of the request may outlive it: an open tunnel keeps only its two streams.
    pending.client.off('close', pending.onClientClose);
    const waiting = (this.pendingBySession.get(pending.requester) ?? 1) - 1;
    if (waiting <= 0) this.pendingBySession.delete(pending.requester);
    else this.pendingBySession.set(pending.requester, waiting);
    this.tunnels.delete(pending.id);
    pending.proxy.pending.delete(pending.id);
  }

  /** Step 715's answer: the proxy reached the target and opens the stream that carries the bytes. */
  private handleProxyAnswer(stream: http2.ServerHttp2Stream, id: string): void {
    const pending = this.tunnels.get(id);
    if (!pending || pending.proxy.session !== stream.session) {
      throw new NotFoundError('no tunnel request with that id is waiting on this session');
    }
    this.forget(pending);
    const client = pending.client;
    if (client.destroyed || client.closed) {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      return;
    }
    stream.respond({ ':status': 200 });
    client.respond({ ':status': 200, [Headers.tunnelId]: id });
    // Each leg outlives its stream for the grace period should its endpoint's link drop.
    // The server never resumes a tunnel itself (its endpoints do), so its legs name no authority.
    const clientLeg = new ResumableStream('');
    const proxyLeg = new ResumableStream('');
    clientLeg.attach(client, 0);
    proxyLeg.attach(stream, 0);
    pending.requesterEndpoint.tunnels.add(id, clientLeg);
    pending.proxy.endpoint.tunnels.add(id, proxyLeg);
    const { metrics } = this.config;
    const traffic = this.trafficOf(pending.publication);
    traffic.open += 1;
    traffic.opened += 1;
    metrics?.tunnelOpened('ok', pending.publication.name, (performance.now() - pending.started) / 1000);
    splice(
      clientLeg,
      proxyLeg,
      this.log.isDebugEnabled() ? this.tunnelClosedLogger(pending.publication.name, traffic) : traffic.closed,
      undefined,
      traffic.meter,
    );
  }

  private trafficOf(publication: Publication): Traffic {
    const id = pubId(publication.account, publication.name);
    let traffic = this.traffic.get(id);
    if (traffic === undefined) {
      const metered = this.config.metrics?.meter(publication.name);
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

  /** What the metrics read at scrape time. */
  snapshot(): MetricsSnapshot {
    let open = 0;
    for (const t of this.traffic.values()) open += t.open;
    return {
      sessions: this.sessions.size,
      endpoints: this.endpoints.size,
      publicationsOnline: this.holders.size,
      tunnelsOpen: open,
    };
  }

  /** The status page's data. */
  status(): ServerStatus {
    const publications = this.store.all().map((p) => {
      const t = this.traffic.get(pubId(p.account, p.name));
      return {
        host: pseudoName(p.name, p.account, this.zone),
        account: p.account,
        name: p.name,
        port: p.port,
        online: this.holders.has(pubId(p.account, p.name)),
        tunnelsOpen: t?.open ?? 0,
        tunnelsOpened: t?.opened ?? 0,
        bytesUp: t?.up ?? 0,
        bytesDown: t?.down ?? 0,
      };
    });
    const proxies = new Set<EndpointSession>();
    for (const proxy of this.holders.values()) proxies.add(proxy.endpoint);
    const endpoints = [...this.endpoints.values()].map((e) => ({
      account: e.account,
      remote: e.h2?.socket?.remoteAddress ?? '',
      role: proxies.has(e) ? ('proxy' as const) : ('client' as const),
      tunnels: e.tunnels.size,
      connected: e.h2 !== null,
    }));
    return { zone: this.zone, startedAt: this.startedAt, publications, endpoints };
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

  private sendControl(proxy: ProxySession, message: ServerMessage): void {
    if (!proxy.control.destroyed) proxy.control.write(encodeControl(message));
  }

  /** Seed figure 4: a proxy's control stream, on which it publishes and receives tunnel requests. */
  private handleControl(stream: http2.ServerHttp2Stream, account: string, grant: TokenGrant | undefined): void {
    const endpoint = this.endpointFor(stream, account);
    const proxy: ProxySession = {
      id: this.nextProxyId++,
      account,
      grant,
      session: stream.session as http2.Http2Session,
      endpoint,
      control: stream,
      publications: new Set(),
      pending: new Map(),
    };
    endpoint.control = stream;
    stream.respond({ ':status': 200, 'content-type': 'application/x-ndjson' });
    const decoder = new ControlDecoder(EndpointMessage);
    stream.on('data', (chunk: Buffer) => {
      let messages: EndpointMessage[];
      try {
        messages = decoder.push(chunk);
      } catch (e) {
        this.log.warn(`closing a proxy's control stream: ${isUnderpassError(e) ? e.message : String(e)}`, {
          proxy: proxy.id,
        });
        stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
        return;
      }
      for (const message of messages) this.handleProxyMessage(proxy, message);
    });
    stream.once('close', () => {
      if (endpoint.control === stream) endpoint.control = null;
      this.dropProxy(proxy);
    });
  }

  private handleProxyMessage(proxy: ProxySession, message: EndpointMessage): void {
    switch (message.type) {
      case 'publish':
        void this.publish(proxy, message.name, message.port);
        return;
      case 'ack':
        proxy.endpoint.tunnels.handleAck(message);
        return;
      case 'reset':
        proxy.endpoint.tunnels.handleReset(message.id);
        return;
      case 'tunnel-failed':
        break;
    }
    const pending = proxy.pending.get(message.id);
    if (!pending) return;
    this.forget(pending);
    this.log.info(`tunnel refused: ${message.message}`, { publication: pending.publication.name, code: message.code });
    this.refuse(pending.client, 'UP_ERR_TARGET_REFUSED', message.message);
  }

  private async publish(proxy: ProxySession, rawName: string, port: number): Promise<void> {
    let name: string;
    try {
      name = label(rawName, 'publication name');
    } catch (e) {
      this.sendControl(proxy, {
        type: 'refused',
        name: rawName,
        code: 'UP_ERR_BAD_MESSAGE',
        message: isUnderpassError(e) ? e.message : 'bad name',
      });
      return;
    }
    if (proxy.grant !== undefined && !proxy.grant.mayPublish(name)) {
      const message = `token ${proxy.grant.id} may not publish '${name}': its --publish scope does not cover it`;
      this.log.warn(`refused a publication: ${message}`, { account: proxy.account });
      this.audit({ event: 'scope.refused', id: proxy.grant.id, account: proxy.account, publish: name });
      this.sendControl(proxy, { type: 'refused', name, code: 'UP_ERR_FORBIDDEN', message });
      return;
    }
    const before = this.store.get(proxy.account, name);
    const publication = await this.store.publish(proxy.account, name, port);
    if (before === undefined || before.port !== port)
      this.audit({
        event: before === undefined ? 'publication.create' : 'publication.port',
        account: proxy.account,
        name,
        port,
        ...(proxy.grant !== undefined ? { id: proxy.grant.id } : {}),
      });
    if (proxy.control.destroyed) return;
    const id = pubId(proxy.account, name);
    const previous = this.holders.get(id);
    if (previous && previous !== proxy) {
      previous.publications.delete(id);
      this.log.info('publication taken over by a newer proxy session', {
        publication: name,
        from: previous.id,
        to: proxy.id,
      });
    }
    this.holders.set(id, proxy);
    if (proxy.publications.size === 0)
      this.log.info('service proxy connected', {
        proxy: proxy.id,
        account: proxy.account,
        remote: proxy.session.socket?.remoteAddress,
      });
    proxy.publications.add(id);
    const host = pseudoName(name, proxy.account, this.zone);
    this.log.info('published', { publication: name, host, port, proxy: proxy.id });
    this.sendControl(proxy, { type: 'published', name, host, key: publication.key, port });
  }

  private audit(fields: Record<string, unknown>): void {
    try {
      appendAudit(this.config.dataDir, fields);
    } catch (e) {
      this.log.error(`cannot write the audit log: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /**
   * Tokens that were revoked or expired lose their sessions now: their tunnels are reset rather than
   * left for a grace period the token no longer earns, and the session cannot be resumed.
   */
  private endTokenSessions(ids: string[], reason: 'revoked' | 'expired'): void {
    const ended = new Set(ids);
    for (const session of [...this.sessions]) {
      const grant = this.grantOf.get(session);
      if (grant === undefined || !ended.has(grant.id)) continue;
      const endpoint = this.endpointOf.get(session);
      const tunnels = endpoint?.tunnels.size ?? 0;
      this.log.warn(`ending a session: its token ${grant.id} was ${reason}; resetting ${tunnels} tunnel(s)`, {
        account: grant.account,
        remote: session.socket?.remoteAddress,
      });
      if (endpoint !== undefined) {
        this.endpoints.delete(endpoint.id);
        endpoint.tunnels.abortAll(`its token was ${reason}`);
      }
      // The transport first: destroying the session alone would try to flush to a peer first.
      this.transportOf.get(session)?.destroy();
      session.destroy();
    }
    if (reason === 'expired') for (const id of ids) this.audit({ event: 'token.expired', id });
  }

  private dropProxy(proxy: ProxySession): void {
    for (const id of proxy.publications) if (this.holders.get(id) === proxy) this.holders.delete(id);
    for (const pending of [...proxy.pending.values()]) {
      this.forget(pending);
      this.refuse(pending.client, 'UP_ERR_OFFLINE', 'the service proxy went away');
    }
    if (proxy.publications.size > 0) this.log.info('service proxy disconnected', { proxy: proxy.id });
  }
}
