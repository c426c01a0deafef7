/**
 * Publications: a service proxy's control stream, on which it publishes `NAME` with its
 * port and receives tunnel requests; the store keeps each publication's name, port and service key, the
 * directory which proxy serves it now. And the other side: finding the publication a pseudo name stands
 * for, if the asking account (and its token's scope) may use it.
 */
import http2 from 'node:http2';
import { encodeControl, EndpointMessage, type DirectListing, type ServerMessage } from '../protocol/control';
import { ForbiddenError, isUnderpassError, LimitError, NotFoundError, OfflineError } from '../protocol/errors';
import { publicationId, publicationName, pseudoName, tryParsePseudoName } from '../protocol/names';
import { isUnder, MAX_LISTED, type DirectOffer, type NameInfo, type NameList } from '../protocol/wire';
import { readControl } from '../runtime/control-stream';
import type { Logger } from '../runtime/log';
import { secretsEqual, type Accounts } from './accounts';
import type { Membership } from './cluster/cluster';
import type { PublicationDirectory } from './directory';
import type { DirectTickets } from './direct-tickets';
import type { EndpointRegistry, EndpointSession } from './endpoints';
import type { Publication, PublicationStore } from './store';
import type { TokenGrant } from './tokens';
import type { PendingTunnel, TunnelMatcher } from './tunnels';

/** A control stream's proxy role: the publications it holds and the tunnel requests waiting on it. */
export interface ProxySession {
  id: number;
  account: string;
  /** The issued token's scopes the proxy authenticated with, if it used one. */
  grant: TokenGrant | undefined;
  session: http2.Http2Session;
  endpoint: EndpointSession;
  control: http2.ServerHttp2Stream;
  publications: Set<string>;
  pending: Map<string, PendingTunnel>;
  /** Publications whose tunnel requests carry who asks (the proxy speaks the PROXY protocol to them). */
  wantsClient: Set<string>;
  /**
   * The proxy's streams in waiting (Paths.standby), each answered with a tunnel request and carrying it,
   * with the 'close' listener that drops it from here (taken off when it is given a tunnel).
   */
  standby: Map<http2.ServerHttp2Stream, () => void>;
}

/** Standby streams one proxy session may hold: a few cover the tunnels opened before it replaces them. */
export const MAX_STANDBY = 8;

export interface PublicationsDeps {
  /** The cluster this node is part of: told which publications a proxy session here serves. */
  cluster: Membership;
  zone: string;
  store: PublicationStore;
  accounts: Accounts;
  directory: PublicationDirectory<ProxySession>;
  endpoints: EndpointRegistry;
  tunnels: TunnelMatcher;
  directTickets: DirectTickets;
  log: Logger;
  audit: (fields: Record<string, unknown>) => void;
}

export class Publications {
  private nextProxyId = 1;

  /** Each session's proxy role, for its standby streams (a session has one control stream at most). */
  private readonly proxyOfSession = new WeakMap<http2.Http2Session, ProxySession>();

  constructor(private readonly deps: PublicationsDeps) {}

  private get log(): Logger {
    return this.deps.log;
  }

  /** Finds the publication a pseudo name stands for, if the account (and the token's scope) may use it. */
  lookup(account: string, host: string, serviceKey?: string, grant?: TokenGrant): Publication {
    const parsed = tryParsePseudoName(host, this.deps.zone);
    const publication = parsed ? this.deps.store.get(parsed.account, parsed.publication) : undefined;
    if (!parsed || !publication) throw new NotFoundError(`${host} is not a publication on this server`);
    this.checkScope(account, host, publication, grant);
    if (serviceKey !== undefined && !secretsEqual(serviceKey, publication.key)) {
      throw new ForbiddenError(`wrong service key for ${host}: ask its owner for the key the proxy printed`);
    }
    if (serviceKey === undefined && !this.deps.accounts.mayUse(account, publication.account, publication.name)) {
      throw new ForbiddenError(
        `${host} belongs to another account: present its service key (--service-key ${host}=KEY) or ask its owner for a grant`,
      );
    }
    return publication;
  }

  /** Refuses a token whose --connect scope does not cover the publication. */
  checkScope(
    account: string,
    host: string,
    publication: { account: string; name: string },
    grant: TokenGrant | undefined,
  ): void {
    if (grant !== undefined && !grant.mayConnect(`${publication.name}.${publication.account}`)) {
      this.deps.audit({ event: 'scope.refused', id: grant.id, account, connect: host });
      throw new ForbiddenError(`token ${grant.id} may not reach ${host}: its --connect scope does not cover it`);
    }
  }

  /**
   * The publication a pseudo name stands for when no proxy of this node holds it (another node may):
   * its owner's account and name, and its id; null when a proxy here holds it, or it is no pseudo name.
   */
  heldElsewhere(host: string): { account: string; name: string; id: string } | null {
    const parsed = tryParsePseudoName(host, this.deps.zone);
    if (parsed === null) return null;
    const id = publicationId(parsed.account, parsed.publication);
    if (this.deps.directory.holderOf(id) !== undefined) return null;
    return { account: parsed.account, name: parsed.publication, id };
  }

  /** What GET /v1/names/HOST answers. */
  nameInfo(account: string, host: string, key: string | undefined, grant: TokenGrant | undefined): NameInfo {
    return this.infoOf(this.lookup(account, host, key, grant));
  }

  private infoOf(publication: Publication): NameInfo {
    const holder = this.holderOf(publication);
    return {
      name: publication.name,
      host: pseudoName(publication.name, publication.account, this.deps.zone),
      port: publication.port,
      online: holder !== undefined,
      // Only when true: an older redirector, which ignores the field, is shown nothing new otherwise.
      ...(this.deps.directTickets.has(holder, publication.name) ? { direct: true } : {}),
    };
  }

  /** What GET /v1/direct/HOST answers: checked exactly as a tunnel request is, then a ticket. */
  directOffer(account: string, host: string, key: string | undefined, grant: TokenGrant | undefined): DirectOffer {
    const publication = this.lookup(account, host, key, grant);
    const holder = this.holderOf(publication);
    if (holder === undefined) throw new OfflineError(`${host} is offline: its service proxy is not connected`);
    const canonical = pseudoName(publication.name, publication.account, this.deps.zone);
    return this.deps.directTickets.issue(holder, publication.name, canonical, account);
  }

  /**
   * What GET /v1/list answers: every publication the account owns or was granted, within the token's
   * scope, whose pseudo name lies under `under`; most specific names sort after their parents.
   */
  list(account: string, under: string, grant: TokenGrant | undefined): NameList {
    const names: NameInfo[] = [];
    for (const publication of this.deps.store.all()) {
      if (!this.deps.accounts.mayUse(account, publication.account, publication.name)) continue;
      if (grant !== undefined && !grant.mayConnect(`${publication.name}.${publication.account}`)) continue;
      const host = pseudoName(publication.name, publication.account, this.deps.zone);
      if (!isUnder(host, under)) continue;
      names.push(this.infoOf(publication));
    }
    // Read right to left, as DNS does: a hierarchy's members stand together.
    const key = (host: string): string => host.split('.').reverse().join('.');
    names.sort((a, b) => key(a.host).localeCompare(key(b.host)));
    return { names: names.slice(0, MAX_LISTED), truncated: names.length > MAX_LISTED };
  }

  /** The proxy session serving `publication` now, if any. */
  holderOf(publication: Publication): ProxySession | undefined {
    return this.deps.directory.holderOf(publicationId(publication.account, publication.name));
  }

  sendControl(proxy: ProxySession, message: ServerMessage): void {
    if (!proxy.control.destroyed) proxy.control.write(encodeControl(message));
  }

  /** A proxy's control stream, on which it publishes and receives tunnel requests. */
  handleControl(stream: http2.ServerHttp2Stream, account: string, grant: TokenGrant | undefined): void {
    const endpoint = this.deps.endpoints.endpointFor(stream, account);
    const proxy: ProxySession = {
      id: this.nextProxyId++,
      account,
      grant,
      session: stream.session as http2.Http2Session,
      endpoint,
      control: stream,
      publications: new Set(),
      pending: new Map(),
      wantsClient: new Set(),
      standby: new Map(),
    };
    this.proxyOfSession.set(proxy.session, proxy);
    endpoint.control = stream;
    stream.respond({ ':status': 200, 'content-type': 'application/x-ndjson' });
    readControl(
      stream,
      EndpointMessage,
      (message) => this.handleProxyMessage(proxy, message),
      (why) => {
        this.log.warn(`closing a proxy's control stream: ${why}`, { proxy: proxy.id });
        stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
      },
    );
    stream.once('close', () => {
      if (endpoint.control === stream) endpoint.control = null;
      if (this.proxyOfSession.get(proxy.session) === proxy) this.proxyOfSession.delete(proxy.session);
      this.dropProxy(proxy);
      for (const standby of proxy.standby.keys()) standby.close(http2.constants.NGHTTP2_CANCEL);
    });
  }

  /** A proxy's stream in waiting for its next tunnel (Paths.standby): held, unanswered, until one comes. */
  handleStandby(stream: http2.ServerHttp2Stream): void {
    const proxy = stream.session === undefined ? undefined : this.proxyOfSession.get(stream.session);
    if (proxy === undefined) throw new NotFoundError('a standby stream needs the control stream of its session first');
    if (proxy.standby.size >= MAX_STANDBY)
      throw new LimitError(`a proxy session holds at most ${MAX_STANDBY} standby streams`);
    const onClose = (): void => void proxy.standby.delete(stream);
    proxy.standby.set(stream, onClose);
    stream.once('close', onClose);
  }

  private handleProxyMessage(proxy: ProxySession, message: EndpointMessage): void {
    switch (message.type) {
      case 'publish':
        if (message.wants?.includes('client') === true) proxy.wantsClient.add(message.name.toLowerCase());
        void this.publish(proxy, message.name, message.port, message.direct);
        return;
      case 'ack':
        proxy.endpoint.tunnels.handleAck(message);
        return;
      case 'reset':
        proxy.endpoint.tunnels.handleReset(message.id);
        return;
      case 'tunnel-failed':
        this.deps.tunnels.handleTunnelFailed(proxy, message.id, message.code, message.message);
        return;
      case 'tunnel-ready':
        this.deps.tunnels.handleTunnelReady(proxy, message.id);
        return;
    }
  }

  private async publish(proxy: ProxySession, rawName: string, port: number, direct?: DirectListing): Promise<void> {
    let name: string;
    try {
      name = publicationName(rawName);
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
      this.deps.audit({ event: 'scope.refused', id: proxy.grant.id, account: proxy.account, publish: name });
      this.sendControl(proxy, { type: 'refused', name, code: 'UP_ERR_FORBIDDEN', message });
      return;
    }
    const { store } = this.deps;
    const before = store.get(proxy.account, name);
    let publication: Publication;
    try {
      publication = await store.publish(proxy.account, name, port);
    } catch (e) {
      // A new publication (or port) a cluster node cannot store now: the proxy says so and retries later.
      if (!isUnderpassError(e)) throw e;
      this.log.warn(`refused a publication: ${e.message}`, { account: proxy.account, publication: name });
      this.sendControl(proxy, { type: 'refused', name, code: e.code, message: e.message });
      return;
    }
    if (before === undefined || before.port !== port)
      this.deps.audit({
        event: before === undefined ? 'publication.create' : 'publication.port',
        account: proxy.account,
        name,
        port,
        ...(proxy.grant !== undefined ? { id: proxy.grant.id } : {}),
      });
    if (proxy.control.destroyed) return;
    const id = publicationId(proxy.account, name);
    const previous = this.deps.directory.hold(id, proxy);
    if (previous !== undefined) {
      previous.publications.delete(id);
      this.log.info('publication taken over by a newer proxy session', {
        publication: name,
        from: previous.id,
        to: proxy.id,
      });
    }
    if (proxy.publications.size === 0)
      this.log.info('service proxy connected', {
        proxy: proxy.id,
        account: proxy.account,
        remote: proxy.session.socket?.remoteAddress,
      });
    proxy.publications.add(id);
    this.deps.cluster.claim(id, String(proxy.id));
    const host = pseudoName(name, proxy.account, this.deps.zone);
    this.log.info('published', { publication: name, host, port, proxy: proxy.id, ...(direct ? { direct } : {}) });
    const secret = direct === undefined ? undefined : this.deps.directTickets.announce(proxy, name, direct);
    this.sendControl(proxy, {
      type: 'published',
      name,
      host,
      key: publication.key,
      port,
      ...(secret !== undefined ? { direct: { secret } } : {}),
    });
  }

  private dropProxy(proxy: ProxySession): void {
    for (const id of proxy.publications) {
      this.deps.directory.release(id, proxy);
      if (this.deps.directory.holderOf(id) === undefined) this.deps.cluster.release(id);
    }
    this.deps.tunnels.dropProxy(proxy);
    if (proxy.publications.size > 0) this.log.info('service proxy disconnected', { proxy: proxy.id });
  }
}
