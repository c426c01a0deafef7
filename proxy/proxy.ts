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
import { Headers, type SessionInfo } from '../protocol/wire';
import type { Logger } from '../runtime/log';
import type { MetricsSnapshot } from '../runtime/metrics';
import { openTrace } from '../runtime/open-trace';
import { ResumableStream } from '../runtime/resumable-stream';
import { ServerLink } from '../runtime/server-link';
import { dialTarget } from '../runtime/dial';
import { abort, splice } from '../runtime/splice';
import { proxyHeader, type ProxyClient } from './proxy-protocol';
import { proxyConfig, type ProxyConfig, type ProxyOptions, type Target } from './config';
import { DirectListener, refuseStream } from './direct-listener';

/** The opening steps of each tunnel, when UNDERPASS_OPEN_TRACE asks for them (the bench's timeline). */
const trace = openTrace('proxy');

/** What `--json` prints, one object a line. */
export type ProxyEvent =
  | { event: 'published'; name: string; host: string; key: string; target: string }
  | { event: 'refused'; name: string; code: string; message: string }
  | { event: 'disconnected' }
  | { event: 'reconnected' };

function ignoreError(): void {}

export class ServiceProxy extends EventEmitter {
  readonly link: ServerLink;
  /** Service key → target: the proxy alone knows where a key leads; the server never sees HOST:PORT. */
  private readonly byKey = new Map<string, Target>();
  /** Pseudo name → target, for the direct listener's tunnels (they name the publication, not a key). */
  private readonly byHost = new Map<string, Target>();
  /** Target → `NAME:PORT`, made once: each tunnel's request and leg name it. */
  private readonly authorities = new Map<Target, string>();
  private wasUp = false;
  private readonly direct: DirectListener | null;
  /** What every publish announces of the direct listener, once it listens. */
  private listing: DirectListing | null = null;

  private readonly options: ProxyConfig;

  constructor(options: ProxyOptions) {
    super();
    this.options = proxyConfig(options);
    this.direct =
      this.options.directListen === undefined
        ? null
        : new DirectListener(this.options.logger, (host, ticket, stream) => this.openDirect(host, ticket, stream));
    this.link = new ServerLink({ ...this.options.link, publishes: this.options.targets.map((t) => t.name) });
    this.link.on('up', (_session: http2.ClientHttp2Session, info: SessionInfo) => this.publishAll(info));
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
  private publishAll(info: SessionInfo): void {
    if (this.wasUp) this.emitEvent({ event: 'reconnected' });
    this.wasUp = true;
    if (info.resume?.resumed === true) this.log.debug('session resumed');
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
        return;
      }
      case 'refused':
        this.log.error(`the server refused publication '${message.name}': ${message.message}`);
        this.emitEvent({ event: 'refused', name: message.name, code: message.code, message: message.message });
        return;
      case 'tunnel':
        this.handleTunnel(message.id, message.key, message.client);
        return;
    }
  }

  /** A tunnel request: connect to the key's target, then open the stream that carries the bytes, or say why not. */
  private handleTunnel(id: string, key: string, client: ProxyClient | undefined): void {
    const asked = performance.now();
    trace?.markId(id, 'tunnel-in');
    const fail = (code: string, message: string): void => {
      this.options.metrics?.tunnelOpened(code);
      this.link.send({ type: 'tunnel-failed', id, code, message });
    };
    const target = this.byKey.get(key);
    if (!target) {
      fail('UP_ERR_NOT_FOUND', 'the proxy holds no publication with that service key');
      return;
    }
    this.dial(target, client, { failed: fail, connected: (socket) => this.carryTunnel(id, target, asked, socket) });
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
    dialTarget(target.host, target.port, target.connectTimeoutMs ?? this.options.connectTimeoutMs, {
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
            proxyHeader(target.proxyProtocol, client, { address: socket.remoteAddress, port: socket.remotePort ?? 0 }),
          );
        outcome.connected(socket);
      },
    });
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

  /** The target answered: open the stream that carries the tunnel, and splice the two. */
  private carryTunnel(id: string, target: Target, asked: number, socket: net.Socket): void {
    trace?.markId(id, 'target-connected');
    const live = this.link.current();
    if (!live) {
      socket.destroy();
      return;
    }
    let authority = this.authorities.get(target);
    if (authority === undefined) {
      authority = `${target.name}:${target.port}`;
      this.authorities.set(target, authority);
    }
    const stream = live.session.request({
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
    // Spliced at once: what the target says first (a banner, a greeting) travels right behind the
    // HEADERS instead of waiting for the server's 200. A refusal (the client gave up meanwhile) resets
    // the target connection before the stream's end could close it in order.
    stream.once('response', (headers) => {
      trace?.markId(id, 'ok-in');
      if (Number(headers[':status']) !== 200) {
        abort(socket);
        leg.destroy();
      }
    });
    // The proxy's splice has the service on side a: its bytes go downstream.
    const { metrics } = this.options;
    metrics?.tunnelOpened('ok', target.name, (performance.now() - asked) / 1000);
    splice(socket, leg, undefined, undefined, metrics?.meter(target.name, 'b'));
    if (trace !== null) {
      trace.markFirstData(leg, id, 'data-in');
      trace.markFirstData(socket, id, 'target-data-in');
    }
  }

  /** What the metrics read at scrape time. */
  snapshot(): MetricsSnapshot {
    return { sessions: this.link.current() !== null ? 1 : 0, tunnelsOpen: this.link.tunnels.size };
  }
}
