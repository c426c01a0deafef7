/**
 * The service proxy: the far end of every tunnel. It runs next to the real server, dials out to
 * the tunnel server, publishes `NAME=HOST:PORT`, keeps service key → HOST:PORT, and for every tunnel the
 * server forwards it connects to HOST:PORT and opens the stream that carries the bytes — or reports why it
 * could not, so the client's connect() fails instead of hanging.
 */
import { EventEmitter } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import type { DirectListing, ServerMessage } from '../protocol/control';
import type { TicketBody } from '../protocol/direct-ticket';
import type { ErrorCode } from '../protocol/errors';
import { Headers, Paths, type SessionInfo } from '../protocol/wire';
import type { Logger } from '../runtime/log';
import type { MetricsSnapshot } from '../runtime/metrics';
import { openTrace } from '../runtime/open-trace';
import { ResumableStream } from '../runtime/resumable-stream';
import { ServerLink } from '../runtime/server-link';
import { dialTarget } from '../runtime/dial';
import { LookupCache } from '../runtime/lookup-cache';
import { abort, ignoreError, splice } from '../runtime/splice';
import { proxyHeader, type ProxyClient } from './proxy-protocol';
import { proxyConfig, type ProxyConfig, type ProxyOptions, type Target } from './config';
import { DirectListener, refuseStream } from './direct-listener';

/** The opening steps of each tunnel, when UNDERPASS_OPEN_TRACE asks for them (the bench's timeline). */
const trace = openTrace('proxy');

/**
 * Standby streams kept at a server that offers them: tunnels opened faster than the proxy replaces
 * them go the control line's way, as they do with a server that offers none.
 */
const STANDBY_STREAMS = 2;

/** The longest a used standby stream waits for its replacement (ms), for a target that says nothing first. */
const STANDBY_REPLACE_MS = 50;

/** What `--json` prints, one object a line. */
export type ProxyEvent =
  | { event: 'published'; name: string; host: string; key: string; target: string }
  | { event: 'refused'; name: string; code: string; message: string }
  | { event: 'disconnected' }
  | { event: 'reconnected' };

export class ServiceProxy extends EventEmitter {
  readonly link: ServerLink;
  /** Service key → target: the proxy alone knows where a key leads; the server never sees HOST:PORT. */
  private readonly byKey = new Map<string, Target>();
  /** Pseudo name → target, for the direct listener's tunnels (they name the publication, not a key). */
  private readonly byHost = new Map<string, Target>();
  /** The targets' host names, resolved once every few seconds rather than once a tunnel. */
  private readonly lookups = new LookupCache();
  /** Target → `NAME:PORT`, made once: each tunnel's request and leg name it. */
  private readonly authorities = new Map<Target, string>();
  private wasUp = false;
  private readonly direct: DirectListener | null;
  /** What every publish announces of the direct listener, once it listens. */
  private listing: DirectListing | null = null;
  /**
   * On a server with standby streams: the targets whose publish this session has not had answered yet.
   * The streams open once it is empty, so that no tunnel request on one can come before the service key
   * it names (a stream's answer can overtake a control line).
   */
  private unpublished: { session: http2.ClientHttp2Session; names: Set<string> } | null = null;

  private readonly options: ProxyConfig;

  constructor(options: ProxyOptions) {
    super();
    this.options = proxyConfig(options);
    this.direct =
      this.options.directListen === undefined
        ? null
        : new DirectListener(this.options.logger, (host, ticket, stream) => this.openDirect(host, ticket, stream));
    this.link = new ServerLink({ ...this.options.link, publishes: this.options.targets.map((t) => t.name) });
    this.link.on('up', (session: http2.ClientHttp2Session, info: SessionInfo) => this.publishAll(session, info));
    this.link.on('message', (message: ServerMessage) => this.handleServerMessage(message));
    this.link.on('down', () => this.emitEvent({ event: 'disconnected' }));
  }

  private get log(): Logger {
    return this.options.logger;
  }

  async start(): Promise<void> {
    if (this.direct !== null && this.options.directListen !== undefined)
      this.listing = await this.direct.start(this.options.directListen);
    await this.link.start();
  }

  stop(): void {
    this.direct?.stop();
    this.link.stop();
  }

  private emitEvent(event: ProxyEvent): void {
    this.emit('event', event);
  }

  /** Publishes every target on each new or resumed session: the server forgets publications with their control stream. */
  private publishAll(session: http2.ClientHttp2Session, info: SessionInfo): void {
    if (this.wasUp) this.emitEvent({ event: 'reconnected' });
    this.wasUp = true;
    if (info.resume?.resumed === true) this.log.debug('session resumed');
    this.unpublished =
      info.features?.includes('standby') === true
        ? { session, names: new Set(this.options.targets.map((t) => t.name)) }
        : null;
    for (const target of this.options.targets)
      this.link.send({
        type: 'publish',
        name: target.name,
        port: target.port,
        // Asked for only when needed: a server older than `wants` would refuse the field.
        ...(target.proxyProtocol !== undefined ? { wants: ['client' as const] } : {}),
        // Likewise: only a proxy with a direct listener sends the field.
        ...(this.listing !== null ? { direct: this.listing } : {}),
      });
  }

  private handleServerMessage(message: ServerMessage): void {
    switch (message.type) {
      case 'published': {
        const target = this.options.targets.find((t) => t.name === message.name);
        if (!target) return;
        for (const [key, t] of this.byKey) if (t === target && key !== message.key) this.byKey.delete(key);
        this.byKey.set(message.key, target);
        this.byHost.set(message.host, target);
        if (message.direct !== undefined) this.direct?.allow(message.host, message.port, message.direct.secret);
        // Announced on every acceptance, after a reconnect too: a restarted server that kept its store
        // shows the same name and key here.
        this.log.info('published', {
          name: message.name,
          host: message.host,
          port: message.port,
          target: `${target.host}:${target.port}`,
        });
        this.emitEvent({
          event: 'published',
          name: message.name,
          host: message.host,
          key: message.key,
          target: `${target.host}:${target.port}`,
        });
        this.noteAnswered(message.name);
        return;
      }
      case 'refused':
        this.log.error(`the server refused publication '${message.name}': ${message.message}`);
        this.emitEvent({ event: 'refused', name: message.name, code: message.code, message: message.message });
        this.noteAnswered(message.name);
        return;
      case 'tunnel':
        this.handleTunnel(message.id, message.key, message.client);
        return;
    }
  }

  /** A tunnel request: connect to the key's target, then open the stream that carries the bytes, or say why not. */
  private handleTunnel(id: string, key: string, client: ProxyClient | undefined): void {
    const opening = this.tryOpening(id, key);
    if (opening === null) return;
    const { target, asked, fail } = opening;
    this.dial(target, client, {
      failed: fail,
      connected: (socket) => {
        trace?.markId(id, 'target-connected');
        const live = this.link.current();
        if (!live) {
          socket.destroy();
          return;
        }
        this.carryTunnel(this.openStream(live.session, id, target, socket), target, asked, socket);
      },
    });
  }

  /** The server answered the publish of `name`: once it answered every one, the standby streams open. */
  private noteAnswered(name: string): void {
    const waiting = this.unpublished;
    if (waiting === null || !waiting.names.delete(name) || waiting.names.size > 0) return;
    this.unpublished = null;
    for (let i = 0; i < STANDBY_STREAMS; i++) this.openStandby(waiting.session);
  }

  /**
   * The start of tunnel `id`'s opening: its target by service key, when it began, and how to tell the
   * server it failed; null, the server told, when the key is none of ours.
   */
  private tryOpening(
    id: string,
    key: string,
    onFailed?: () => void,
  ): { target: Target; asked: number; fail: (code: string, message: string) => void } | null {
    const asked = performance.now();
    trace?.markId(id, 'tunnel-in');
    const fail = (code: string, message: string): void => {
      this.options.metrics?.tunnelOpened(code);
      this.link.send({ type: 'tunnel-failed', id, code, message });
      onFailed?.();
    };
    const target = this.byKey.get(key);
    if (!target) {
      fail('UP_ERR_NOT_FOUND', 'the proxy holds no publication with that service key');
      return null;
    }
    return { target, asked, fail };
  }

  /**
   * Keeps a stream in waiting at a server that offers them (SessionInfo.features `standby`): the server
   * answers it with its next tunnel request and the app's first bytes right behind, so they reach this
   * proxy with the request instead of after a control line, a connect and a stream of our own. Each one
   * used is replaced at once; one the server refuses is not.
   */
  private openStandby(session: http2.ClientHttp2Session): void {
    if (session.closed || session.destroyed) return;
    const stream = session.request({ ':method': 'POST', ':path': Paths.standby, ...this.link.authHeaders() });
    stream.on('error', ignoreError);
    stream.once('response', (headers) => {
      const id = headers[Headers.tunnelId];
      const key = headers[Headers.serviceKey];
      if (Number(headers[':status']) !== 200 || typeof id !== 'string' || typeof key !== 'string') {
        stream.close();
        return;
      }
      this.handleStandbyTunnel(stream, id, key, session);
    });
  }

  /**
   * A tunnel request that came on a standby stream: its leg is that stream, already carrying the app's
   * first bytes; they go to the target once it answers, and the server hears `tunnel-ready` then (its
   * 200 to the redirector waits for it). A failure is said on the control stream, and the server resets
   * the stream: a reset from here could overtake that line and leave the app without its reason.
   */
  private handleStandbyTunnel(
    stream: http2.ClientHttp2Stream,
    id: string,
    key: string,
    session: http2.ClientHttp2Session,
  ): void {
    // The stream is replaced once this tunnel's opening is over — its dial failed, or the target's first
    // bytes left for the server, or STANDBY_REPLACE_MS passed — not now: a stream made now, and the
    // server's work to take it, would sit on this tunnel's way to its tunnel-ready and its first bytes.
    let replaced = false;
    let watched: net.Socket | null = null;
    const onFirstBytes = (): void => void setImmediate(replace);
    const replace = (): void => {
      if (replaced) return;
      replaced = true;
      clearTimeout(timer);
      // Nothing of this stays with the open tunnel.
      watched?.off('data', onFirstBytes);
      this.openStandby(session);
    };
    const timer = setTimeout(replace, STANDBY_REPLACE_MS);
    timer.unref();
    const opening = this.tryOpening(id, key, () => setImmediate(replace));
    if (opening === null) return;
    const { target, asked, fail } = opening;
    // The server sends these only for publications that did not ask for who connects.
    if (target.proxyProtocol !== undefined) {
      fail('UP_ERR_PROTOCOL', `${target.name} wants the PROXY protocol, which a standby tunnel does not carry`);
      return;
    }
    const leg = new ResumableStream(this.authorityOf(target));
    // Until the splice handles them: the server resets the stream of a tunnel that failed.
    leg.on('error', ignoreError);
    leg.attach(stream, 0);
    this.link.tunnels.add(id, leg);
    this.dial(target, undefined, {
      failed: fail,
      connected: (socket) => {
        trace?.markId(id, 'target-connected');
        // The app gave up meanwhile: the target connection goes at once.
        if (leg.destroyed) {
          socket.destroy();
          return;
        }
        this.link.send({ type: 'tunnel-ready', id });
        trace?.markId(id, 'ready-out');
        this.carryTunnel(leg, target, asked, socket);
        // After the splice's listener: the bytes are written by then, and leave before the immediate.
        watched = socket;
        socket.once('data', onFirstBytes);
      },
    });
  }

  /** `NAME:PORT` of `target`, made once: each tunnel's request and leg name it, and keep the string. */
  private authorityOf(target: Target): string {
    let authority = this.authorities.get(target);
    if (authority === undefined) {
      authority = `${target.name}:${target.port}`;
      this.authorities.set(target, authority);
    }
    return authority;
  }

  /** Opens the stream that carries tunnel `id` as a resumable leg joined to the target's `socket`. */
  private openStream(
    session: http2.ClientHttp2Session,
    id: string,
    target: Target,
    socket: net.Socket,
  ): ResumableStream {
    const authority = this.authorityOf(target);
    const stream = session.request({
      ':method': 'CONNECT',
      ':authority': authority,
      [Headers.tunnelId]: id,
      ...this.link.authHeaders(),
    });
    // Not a closure: one made here would keep this call's scope (socket, leg) for the tunnel's life.
    stream.on('error', ignoreError);
    trace?.markId(id, 'connect-out');
    const leg = new ResumableStream(authority);
    leg.attach(stream, 0);
    this.link.tunnels.add(id, leg);
    // A refusal (the client gave up meanwhile) resets the target connection before the stream's end
    // could close it in order.
    stream.once('response', (headers) => {
      trace?.markId(id, 'ok-in');
      if (Number(headers[':status']) !== 200) {
        abort(socket);
        leg.destroy();
      }
    });
    return leg;
  }

  /**
   * Connects to a tunnel's target. `connected` gets the socket with the PROXY protocol header, when the
   * target wants one, already written: it is the first thing the target reads, whatever the client sends.
   */
  private dial(
    target: Target,
    client: ProxyClient | undefined,
    outcome: { connected: (socket: net.Socket) => void; failed: (code: ErrorCode, message: string) => void },
  ): void {
    const timeoutMs = target.connectTimeoutMs ?? this.options.connectTimeoutMs;
    dialTarget(
      target.host,
      target.port,
      timeoutMs,
      {
        failed: (reason) => {
          this.log.warn(`cannot connect to ${target.host}:${target.port} (${reason})`, { publication: target.name });
          outcome.failed(
            'UP_ERR_TARGET_REFUSED',
            `${target.name}'s target ${target.host}:${target.port} refused the connection (${reason})`,
          );
        },
        connected: (socket) => {
          if (target.proxyProtocol !== undefined && client !== undefined && socket.remoteAddress !== undefined)
            socket.write(
              proxyHeader(target.proxyProtocol, client, {
                address: socket.remoteAddress,
                port: socket.remotePort ?? 0,
              }),
            );
          outcome.connected(socket);
        },
      },
      this.lookups.lookup,
    );
  }

  /**
   * A tunnel through the direct listener, its ticket checked: the same target and header as a relayed
   * one, its bytes on the redirector's own stream. Not resumable: a direct path that dies resets its
   * tunnels, as a relayed tunnel is reset once its grace period passed.
   */
  private openDirect(host: string, ticket: TicketBody, stream: http2.ServerHttp2Stream): void {
    const target = this.byHost.get(host);
    const { metrics } = this.options;
    if (target === undefined) {
      refuseStream(stream, 'UP_ERR_NOT_FOUND', `${host} is not published by this proxy`);
      return;
    }
    const asked = performance.now();
    const peer = stream.session?.socket;
    const client: ProxyClient = {
      ...(peer?.remoteAddress !== undefined ? { address: peer.remoteAddress, port: peer.remotePort ?? 0 } : {}),
      account: ticket.a,
      host,
    };
    this.dial(target, client, {
      failed: (code, message) => {
        metrics?.tunnelOpened(code);
        refuseStream(stream, code, message);
      },
      connected: (socket) => {
        if (stream.destroyed || stream.closed) {
          socket.destroy();
          return;
        }
        stream.respond({ ':status': 200 });
        metrics?.tunnelOpened('ok', target.name, (performance.now() - asked) / 1000);
        this.log.debug('direct tunnel', { publication: target.name, account: ticket.a });
        splice(socket, stream, undefined, undefined, metrics?.meter(target.name, 'b'));
      },
    });
  }

  /**
   * The target answered: splice its socket to the tunnel's leg. At once, not after the server's 200:
   * what the target says first (a banner, a greeting) travels right behind the HEADERS.
   */
  private carryTunnel(leg: ResumableStream, target: Target, asked: number, socket: net.Socket): void {
    // The proxy's splice has the service on side a: its bytes go downstream.
    const { metrics } = this.options;
    metrics?.tunnelOpened('ok', target.name, (performance.now() - asked) / 1000);
    splice(socket, leg, undefined, undefined, metrics?.meter(target.name, 'b'));
    if (trace !== null && leg.id !== null) {
      trace.markFirstData(leg, leg.id, 'data-in');
      trace.markFirstData(socket, leg.id, 'target-data-in');
    }
  }

  /** What the metrics read at scrape time. */
  snapshot(): MetricsSnapshot {
    return { sessions: this.link.current() !== null ? 1 : 0, tunnelsOpen: this.link.tunnels.size };
  }
}
