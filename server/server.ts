/**
 * The publishing/tunneling server. Service proxies publish to it over a control
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
 *
 * This file authenticates every stream and routes it to the room that serves it, along the lines of frp's
 * server: listener.ts (TLS, HTTP/2, the WebSocket carrier), endpoints.ts (the endpoint registry and
 * resumption), publications.ts (control streams, the store, access; directory.ts says which proxy serves
 * a publication, behind an interface a shared directory can implement), tunnels.ts (matching a tunnel
 * request with its proxy's answer), respond.ts (refusals), forwarding.ts (forwarding mode).
 *
 * Length: about 470 lines, over the ~350 the house aims at: the one routing switch for every path (a
 * cluster node's included: the node links' streams, assignment at the session hello) and joining the
 * cluster, which touch every room at once; what a cluster node does for other nodes lives in
 * cluster/cluster-node.ts, the status page's view in status-page.ts.
 */
import fs from 'node:fs/promises';
import type http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { BadMessageError, NotFoundError, OfflineError } from '../protocol/errors';
import { formatHostPort, nameOfPublication, tryParseHostPort } from '../protocol/names';
import { Headers, Paths, WIRE_VERSION, type SessionInfo } from '../protocol/wire';
import { keepalive, raiseSessionWindow } from '../runtime/h2';
import type { Logger } from '../runtime/log';
import type { MetricsSnapshot } from '../runtime/metrics';
import { Accounts, AuthThrottle, loadAccountsFile, loadOrCreateToken, parseAccounts } from './accounts';
import { ensureIdentity } from './certificate';
import type { ClusterView, Membership, Ownership } from './cluster/cluster';
import { joinCluster } from './cluster/join';
import { LocalCluster, type LocalState } from './cluster/local-cluster';
import { proofOf, type LocalEndpoint } from './cluster/endpoint-directory';
import { serverConfig, type ClusterConfig, type ServerConfig, type ServerOptions } from './config';
import { MemoryDirectory, type PublicationDirectory } from './directory';
import { EndpointRegistry, type EndpointSession, parseResumeToken } from './endpoints';
import { Listener } from './listener';
import { Publications, type ProxySession } from './publications';
import { Forwarder } from './forwarding';
import { DirectTickets } from './direct-tickets';
import { Responder } from './respond';
import { PublicationStore } from './store';
import { TokenStore } from './token-store';
import { appendAudit, tryTokenId, type TokenGrant } from './tokens';
import { statusOf, type ServerStatus } from './status-page';
import { TunnelMatcher, type TunnelClient } from './tunnels';
import { monotonicMs, openTrace } from '../runtime/open-trace';
import { ClusterNode } from './cluster/cluster-node';

/** The opening steps of each tunnel, when UNDERPASS_OPEN_TRACE asks for them (the bench's timeline). */
const trace = openTrace('server');

/** What the session answer announces beyond version 1 as first written (SessionInfo.features). */
const SERVER_FEATURES = ['standby'];

/** One shared no-op listener (a fresh closure per stream is 56 B of heap for the stream's life). */
function ignore(): void {}

export class TunnelServer {
  private listener: Listener | null = null;
  private store!: PublicationStore;
  private publications!: Publications;
  private readonly accounts = new Accounts();
  private readonly throttle = new AuthThrottle();
  /** Sessions that have presented a valid token. */
  private readonly authenticated = new WeakSet<http2.Http2Session>();
  private tokens: TokenStore | null = null;
  /** The issued token each session last authenticated with: revoking it ends the session. */
  private readonly grantOf = new WeakMap<http2.Http2Session, TokenGrant>();
  /** Each session's transport (TLS socket or carried WebSocket stream), to end it at once. */
  private readonly transportOf = new WeakMap<http2.Http2Session, Duplex>();
  private readonly sessions = new Set<http2.Http2Session>();
  /** Which proxy session serves each publication now. */
  private readonly directory: PublicationDirectory<ProxySession> = new MemoryDirectory();
  private readonly endpoints: EndpointRegistry;
  private readonly tunnels: TunnelMatcher;
  private readonly forwarder: Forwarder;
  private readonly responder: Responder;
  /** In a cluster: endpoints and tunnels that belong on other nodes. */
  private node: ClusterNode | null = null;
  private readonly startedAt = new Date().toISOString();
  /** Each endpoint session's resumption secret hashed, for the endpoint directory (made once). */
  private readonly proofs = new WeakMap<EndpointSession, string>();
  /** Where it listens once started (what a cluster of one advertises). */
  private address: AddressInfo | null = null;
  private clusterView: Membership;
  readonly zone: string;
  certPath = '';
  tokenFile: string | null = null;

  private readonly config: ServerConfig;

  constructor(options: ServerOptions) {
    this.config = serverConfig(options);
    this.zone = this.config.zone;
    const { metrics } = this.config;
    this.responder = new Responder(metrics);
    this.endpoints = new EndpointRegistry(this.config.graceMs, this.log, metrics);
    this.tunnels = new TunnelMatcher(this.config, this.responder, this.log, metrics, (proxy, id, key, client) =>
      this.publications.sendControl(proxy, { type: 'tunnel', id, key, ...(client !== undefined ? { client } : {}) }),
    );
    this.forwarder = new Forwarder(this.config.forwardAllow, this.responder, this.log, metrics, (fields) =>
      this.audit(fields),
    );
    this.clusterView = new LocalCluster(this.localState());
  }

  /** The cluster this server is a node of: a cluster of one without `--cluster`. */
  get cluster(): ClusterView {
    return this.clusterView;
  }

  /** What this node's cluster view reads of it. */
  private localState(): LocalState {
    return {
      advertise: () =>
        this.address === null ? '' : formatHostPort({ host: this.address.address, port: this.address.port }),
      sessions: () => this.endpoints.size,
      tunnels: () => this.tunnels.open,
      holds: (id) => this.directory.holderOf(id) !== undefined,
      endpoints: () => this.localEndpoints(),
    };
  }

  /** This node's connected endpoint sessions, as the cluster's endpoint directory records them. */
  private localEndpoints(): LocalEndpoint[] {
    const publishes = new Map<EndpointSession, Set<string>>();
    for (const proxy of new Set(this.directory.holders())) {
      const names = publishes.get(proxy.endpoint) ?? new Set<string>();
      publishes.set(proxy.endpoint, names);
      for (const id of proxy.publications) names.add(nameOfPublication(id));
    }
    const connected = [...this.endpoints.all()].filter((e) => e.h2 !== null);
    return connected.map((e) => {
      let proof = this.proofs.get(e);
      if (proof === undefined) this.proofs.set(e, (proof = proofOf(e.secret)));
      const names = [...(publishes.get(e) ?? [])];
      return {
        id: e.id,
        account: e.account,
        role: names.length > 0 ? 'proxy' : 'client',
        publishes: names.sort(),
        remote: e.h2?.socket?.remoteAddress ?? '',
        since: e.since,
        proof,
      };
    });
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
    if (this.config.cluster !== undefined) await this.join(this.config.cluster);
    else {
      const { token, file } = await loadOrCreateToken(dataDir, this.config.token);
      this.tokenFile = file;
      this.accounts.add(token);
      if (this.config.accountsFile !== undefined) await loadAccountsFile(this.config.accountsFile, this.accounts);
      this.store = await PublicationStore.open(dataDir);
    }
    this.publications = new Publications({
      cluster: this.clusterView,
      zone: this.zone,
      store: this.store,
      accounts: this.accounts,
      directory: this.directory,
      endpoints: this.endpoints,
      tunnels: this.tunnels,
      directTickets: new DirectTickets(),
      log: this.log,
      audit: (fields) => this.audit(fields),
    });
    // A cluster of one has no other node to send endpoints or relay tunnels to.
    if (this.config.cluster !== undefined)
      this.node = new ClusterNode({
        cluster: this.cluster,
        cert: identity.cert,
        placement: this.config.placement,
        keepaliveMs: this.config.keepaliveMs,
        publications: this.publications,
        endpoints: this.endpoints,
        responder: this.responder,
        load: () => this.endpoints.size + this.tunnels.open,
        log: this.log,
        metrics: this.config.metrics,
      });
    this.tokens = new TokenStore(
      dataDir,
      (ids, reason) => this.endTokenSessions(ids, reason),
      (e) => this.log.error(`kept the tokens as they were: ${e.message}`),
    );
    this.tokens.start();
    this.listener = new Listener(
      identity,
      {
        onSession: (session, transport) => this.handleSession(session, transport),
        onStream: (stream, headers) => this.handleStream(stream, headers),
      },
      this.log,
    );
    this.address = await this.listener.listen(this.config.port, this.config.host);
    this.clusterView.listening();
    return this.address;
  }

  /** Becomes a node of the cluster: its token, accounts and publications are the cluster's. */
  private async join(config: ClusterConfig): Promise<void> {
    const joined = await joinCluster(config, {
      dataDir: this.config.dataDir,
      token: this.config.token,
      accountsFile: this.config.accountsFile,
      state: this.localState(),
      log: this.log,
      onAccounts: (text) => this.takeAccounts(joined.token, text),
    });
    this.clusterView = joined.cluster;
    this.tokenFile = joined.tokenFile;
    this.takeAccounts(joined.token, joined.accounts, true);
    this.store = joined.store;
    joined.cluster.on('lost', (id: string, by: Ownership) => this.lost(id, by));
    this.log.info(`joined the cluster as node ${config.node}`, { cluster: config.url });
  }

  /**
   * The cluster's accounts (its token of account `default`, and an --accounts file's text). A damaged
   * text stops the node at start, and later keeps the accounts as they were.
   */
  private takeAccounts(token: string, text: string | null, atStart = false): void {
    const next = new Accounts();
    next.add(token);
    try {
      if (text !== null) parseAccounts(text, "the cluster's accounts", next);
    } catch (e) {
      if (atStart) throw e;
      this.log.error(`kept the accounts as they were: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    this.accounts.replaceWith(next);
  }

  /** Another node claimed a publication a proxy session here held: that session is stale for it. */
  private lost(id: string, by: Ownership): void {
    const holder = this.directory.holderOf(id);
    if (holder === undefined) return;
    this.directory.release(id, holder);
    holder.publications.delete(id);
    this.log.info('publication moved to another node', { publication: id, node: by.node, epoch: by.epoch });
  }

  async stop(): Promise<void> {
    await this.clusterView.stop();
    this.tokens?.stop();
    this.node?.stop();
    for (const session of this.sessions) session.destroy();
    await this.listener?.close();
  }

  private handleSession(session: http2.ServerHttp2Session, transport: Duplex | undefined): void {
    this.sessions.add(session);
    raiseSessionWindow(session);
    // With the transport: a session destroyed over a link that went silent would wait to flush for ever,
    // and its tunnels would never start their grace period.
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

  private handleStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    const started = trace === null ? 0 : monotonicMs();
    stream.on('error', ignore);
    if (headers[Headers.node] !== undefined) {
      this.handleNodeStream(stream, headers);
      return;
    }
    const auth = headers.authorization;
    const token = typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7) : '';
    const remote = stream.session?.socket?.remoteAddress ?? 'websocket';
    // The throttle holds back sessions that have not yet shown a valid token, so a token guesser
    // sharing an address with working endpoints (a NAT, loopback) never costs those endpoints anything.
    const trusted = stream.session !== undefined && this.authenticated.has(stream.session);
    if (!trusted && this.throttle.isBlocked(remote)) {
      this.responder.refuse(
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
        this.responder.refuse(stream, 'UP_ERR_AUTH', verdict.message);
        return;
      }
    }
    if (account === null) {
      // A session that shows a wrong token is guessing, whatever it showed before: it loses the exemption.
      if (stream.session !== undefined) this.authenticated.delete(stream.session);
      this.throttle.fail(remote);
      this.log.warn('refused a request with a wrong or missing token', { remote });
      this.responder.refuse(
        stream,
        'UP_ERR_AUTH',
        'wrong or missing token: check --token (the server prints where its token is)',
      );
      return;
    }
    if (stream.session !== undefined) {
      this.authenticated.add(stream.session);
      if (grant !== undefined) this.grantOf.set(stream.session, grant);
      else this.grantOf.delete(stream.session);
    }
    const version = Number(headers[Headers.version] ?? WIRE_VERSION);
    if (version !== WIRE_VERSION) {
      this.responder.refuse(
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
        if (typeof resumeId === 'string') this.endpoints.resumeTunnel(stream, resumeId, headers[Headers.received]);
        else if (typeof tunnelId === 'string') this.tunnels.answer(stream, tunnelId);
        else if (headers[Headers.forward] === '1') {
          const target = tryParseHostPort(headers[':authority'] ?? '');
          if (target === null) throw new BadMessageError('a forward names no HOST:PORT');
          void this.forwarder.open(stream, account, target.host, target.port, () =>
            this.endpoints.endpointFor(stream, account),
          );
        } else {
          trace?.mark(stream, 'connect-in', started);
          this.responder.markTunnelRequest(stream);
          this.handleTunnelRequest(stream, account, headers, grant);
        }
      } else if (method === 'GET' && path === Paths.session) {
        void this.openSession(stream, account, headers).catch((e: unknown) => this.responder.fail(stream, e));
      } else if (method === 'GET' && (path.startsWith(Paths.names) || path.startsWith(Paths.direct))) {
        // A name's answer, or a ticket for its direct listener: the same access check either way.
        const given = headers[Headers.serviceKey];
        const key = typeof given === 'string' ? given : undefined;
        const direct = path.startsWith(Paths.direct);
        const host = decodeURIComponent(path.slice((direct ? Paths.direct : Paths.names).length));
        if (direct) this.responder.json(stream, this.publications.directOffer(account, host, key, grant));
        else {
          const info = this.publications.nameInfo(account, host, key, grant);
          if (this.node === null) this.responder.json(stream, info);
          else this.node.answerName(stream, info);
        }
      } else if (method === 'GET' && (path === Paths.list || path.startsWith(`${Paths.list}?`))) {
        const under = new URL(path, 'http://server').searchParams.get('under') ?? '';
        this.responder.json(stream, this.publications.list(account, under.toLowerCase(), grant));
      } else if (method === 'POST' && path === Paths.control) {
        this.publications.handleControl(stream, account, grant);
      } else if (method === 'POST' && path === Paths.standby) {
        this.publications.handleStandby(stream);
      } else {
        this.responder.refuse(stream, 'UP_ERR_NOT_FOUND', `no such endpoint: ${String(method)} ${path}`);
      }
    } catch (e) {
      this.responder.fail(stream, e);
    }
  }

  /** GET /v1/session: the endpoint's session here, new or resumed, unless its cluster places it elsewhere. */
  private async openSession(
    stream: http2.ServerHttp2Stream,
    account: string,
    headers: http2.IncomingHttpHeaders,
  ): Promise<void> {
    if (this.node !== null && (await this.node.sendAway(stream, account, headers))) return;
    const token = headers[Headers.resume];
    const h2 = stream.session as http2.Http2Session;
    const { endpoint, resumed } = this.endpoints.open(h2, account, typeof token === 'string' ? token : undefined);
    // A session another node held (the endpoint failed over): its entry in the directory moves here.
    const presented = !resumed && typeof token === 'string' ? parseResumeToken(token) : null;
    if (presented !== null) this.clusterView.adopt(presented.id, presented.secret);
    const info: SessionInfo = {
      v: WIRE_VERSION,
      account,
      zone: this.zone,
      resume: { token: `${endpoint.id}.${endpoint.secret}`, resumed, graceMs: this.config.graceMs },
      features: SERVER_FEATURES,
      ...(this.node !== null ? { node: this.cluster.node } : {}),
    };
    this.responder.json(stream, info);
  }

  /** Another node relays a redirector's CONNECT to a publication whose proxy is here. */
  private handleNodeStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    try {
      if (this.node === null) throw new NotFoundError('this server is not a node of a cluster');
      const asker = this.node.relayedAsker(stream, headers);
      if (asker === null) return;
      this.responder.markTunnelRequest(stream);
      this.handleTunnelRequest(stream, asker.account, headers, undefined, asker);
    } catch (e) {
      this.responder.fail(stream, e);
    }
  }

  /**
   * A redirector asks for a tunnel to PSEUDO_NAME:PORT, here or, in a cluster, through the node that
   * holds the publication; `relayed` is who asks when another node relays the request.
   */
  private handleTunnelRequest(
    stream: http2.ServerHttp2Stream,
    account: string,
    headers: http2.IncomingHttpHeaders,
    grant: TokenGrant | undefined,
    relayed?: TunnelClient,
  ): void {
    const { host, port } = tryParseHostPort(headers[':authority'] ?? '') ?? { host: '', port: 0 };
    if (relayed === undefined && this.node?.relayAway(stream, account, headers, grant) === true) return;
    const key = headers[Headers.serviceKey];
    const serviceKey = typeof key === 'string' ? key : undefined;
    const publication = this.publications.lookup(account, host, serviceKey, grant);
    if (port !== publication.port) {
      throw new NotFoundError(`${host} is published on port ${publication.port}, not ${port}`);
    }
    const proxy = this.publications.holderOf(publication);
    if (!proxy) throw new OfflineError(`${host} is offline: its service proxy is not connected`);
    this.tunnels.request(
      stream,
      host,
      publication,
      proxy,
      relayed ?? ((): EndpointSession => this.endpoints.endpointFor(stream, account)),
    );
  }

  /** What the metrics read at scrape time. */
  snapshot(): MetricsSnapshot {
    return {
      sessions: this.sessions.size,
      endpoints: this.endpoints.size,
      publicationsOnline: this.directory.size,
      tunnelsOpen: this.tunnels.open,
    };
  }

  /** The status page's data; a cluster node's adds every node's endpoints, from the endpoint directory. */
  async status(): Promise<ServerStatus> {
    const { zone, startedAt, store, tunnels, directory, endpoints } = this;
    const status = statusOf({ zone, startedAt, store, tunnels, directory, endpoints });
    if (this.node === null) return status;
    const { cluster } = this;
    try {
      return { ...status, cluster: { node: cluster.node, endpoints: await cluster.endpoints() } };
    } catch (e) {
      return {
        ...status,
        cluster: { node: cluster.node, endpoints: [], error: e instanceof Error ? e.message : String(e) },
      };
    }
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
      const endpoint = this.endpoints.of(session);
      const tunnels = endpoint?.tunnels.size ?? 0;
      this.log.warn(`ending a session: its token ${grant.id} was ${reason}; resetting ${tunnels} tunnel(s)`, {
        account: grant.account,
        remote: session.socket?.remoteAddress,
      });
      if (endpoint !== undefined) {
        this.endpoints.forget(endpoint);
        endpoint.tunnels.abortAll(`its token was ${reason}`);
      }
      // The transport first: destroying the session alone would try to flush to a peer first.
      this.transportOf.get(session)?.destroy();
      session.destroy();
    }
    if (reason === 'expired') for (const id of ids) this.audit({ event: 'token.expired', id });
  }
}
