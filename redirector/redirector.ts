/**
 * The redirector: the daemon on the client machine. It holds one session to the tunnel server, serves
 * hooks over IPC, owns the machine's pseudo-address table, and opens the local listeners that tunneled
 * connections flow through.
 *
 * Each listener sits on the pseudo address and the published port itself (127.77.0.5:6379, say), so the
 * app's connect() needs no rewriting: its sockaddr, getpeername() and error paths stay its own, and a port
 * that was not published has no listener and is refused by the kernel. A blocking connect first asks over
 * IPC; the redirector opens the tunnel and answers only once the service proxy reached the real server
 * (so that connect() fails as it would against a real server that refuses), parking the ready stream for
 * the accept that follows. A non-blocking connect asks nothing: the tunnel is opened on accept and a
 * failure resets the connection the app already holds.
 * When another program holds the published port on every local address, the listener takes another port
 * of the pseudo address and tells the hook which (pseudo-listener.ts).
 *
 * Length: about 600 lines, over the ~350 the house aims at. Admission (admission.ts), the IPC server,
 * the pseudo table, the listeners' ports, the fallback doors, the status and ls reports (reports.ts) and
 * which of a hooked app's lookups and connects are forwarded (hook-forwarding.ts) and whether a tunnel
 * goes straight to its proxy (direct-hop.ts) are their own files
 * already; what is left is the IPC answers about names and connects, the lookups with their cache, the
 * tunnel requests, and a listener's park-accept-join path, which all share the listeners and the session. The next cut is the name answers (hello, resolve, reverse) into their own file.
 */
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { isUnderpassError, ProtocolError, UnderpassError, UnreachableError } from '../protocol/errors';
import {
  IPC_VERSION,
  type MovedPort,
  type ClaimRequest,
  type ConnectReply,
  type ErrorReply,
  type HelloReply,
  type ResolveReply,
  type ReverseReply,
} from '../protocol/ipc';
import { formatHostPort, tryParsePseudoName, type HostPort } from '../protocol/names';
import { tryMatchRule } from '../protocol/forward-rules';
import { Headers, NameInfo, Paths, type SessionInfo } from '../protocol/wire';
import type { Logger } from '../runtime/log';
import type { MetricsSnapshot } from '../runtime/metrics';
import { ResumableStream } from '../runtime/resumable-stream';
import { getJson, refusalFrom } from '../runtime/requests';
import { ServerLink } from '../runtime/server-link';
import { monotonicMs, openTrace } from '../runtime/open-trace';
import { abort, ignoreError, splice, type SpliceMeter } from '../runtime/splice';
import { Admission } from './admission';
import { redirectorConfig, type RedirectorConfig, type RedirectorOptions } from './config';
import { IpcServer } from './ipc-server';
import { listenOnPseudo, movedListenerWarning } from './pseudo-listener';
import { AppPublications } from './app-publications';
import { Reports } from './reports';
import { PseudoAddressTable } from './pseudo-table';
import { FallbackListeners } from './fallback-listeners';
import { HookForwarding, SERVER_REFUSED_FORWARD } from './hook-forwarding';
import { DialError, type OpenedTunnel, type TunnelDialer } from './tunnel-dialer';
import { DirectHop } from './direct-hop';

/** One pseudo address:port the redirector listens on, and the tunnels parked for it. */
interface Listener {
  host: string;
  address: string;
  /** The published port. */
  port: number;
  /**
   * `HOST:PORT` as its tunnel requests, legs and metrics name it (a pseudo name or an IPv4 address, so
   * never bracketed), made once: every tunnel's stream keeps the string it sent.
   */
  authority: string;
  /** Where the hook must connect instead of `port`, when the listener could not take it. */
  moved: MovedPort | null;
  /** Forwarding mode: the tunnel server dials `host:port` itself (hook-forwarding.ts). */
  forward: boolean;
  server: net.Server;
  parked: Array<{ tunnel: Answered; timer: NodeJS.Timeout }>;
}

/** A tunnel the server accepted: its stream and the id that lets it be resumed; or the proxy's direct listener did. */
interface Answered {
  stream: http2.ClientHttp2Stream;
  id: string;
  /** Straight to the proxy (direct-hop.ts): not resumable, spliced as is. */
  direct?: true;
}

/** A tunnel requested while its connection waits for admission, and what resets it should that fail. */
interface EarlyTunnel {
  leg: ResumableStream;
  cancel: () => void;
}

const NAME_TTL_MS = 30_000;

/** The opening steps of each tunnel, when UNDERPASS_OPEN_TRACE asks for them (the bench's timeline). */
const trace = openTrace('redirector');

/** Marks a tunnel request as forwarding mode's: the server dials the authority itself. */
const FORWARD_HEADERS: http2.OutgoingHttpHeaders = { [Headers.forward]: '1' };

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The `moved` field of a reply about `listener`'s publication: present only when the listener moved. */
function movedOf(listener: Listener): { moved?: MovedPort } {
  return listener.moved === null ? {} : { moved: listener.moved };
}

export class Redirector implements TunnelDialer {
  readonly link: ServerLink;
  readonly table: PseudoAddressTable;
  private readonly ipc: IpcServer;
  /** By pseudo address and published port. */
  private readonly listeners = new Map<string, Listener>();
  /** The same, by the address and port each one holds (what a claim names). */
  private readonly bound = new Map<string, Listener>();
  private readonly opening = new Map<string, Promise<Listener>>();
  /** Names the DNS responder had to refuse because their listener moved (logged once each). */
  private readonly refusedToResponder = new Set<string>();
  private readonly names = new Map<string, { info: NameInfo; at: number }>();
  private info: SessionInfo | null = null;
  private readonly sockets = new Set<net.Socket>();
  private readonly admission: Admission;
  private readonly reports: Reports;
  private readonly appPublications: AppPublications;
  private readonly fallbacks: FallbackListeners;
  private readonly forwarding: HookForwarding;
  private readonly direct: DirectHop;

  private readonly options: RedirectorConfig;
  /** Every accepted socket's 'close' listener. */
  private readonly forgetSocket: (this: net.Socket) => void;

  constructor(options: RedirectorOptions) {
    this.options = redirectorConfig(options);
    const sockets = this.sockets;
    this.forgetSocket = function (this: net.Socket): void {
      sockets.delete(this);
    };
    this.admission = new Admission(this.options.claimWaitMs, this.options.logger);
    this.table = new PseudoAddressTable(
      options.pseudoNet,
      path.join(path.dirname(options.ipcPath), `${path.basename(options.ipcPath)}.addresses.json`),
    );
    this.forwarding = new HookForwarding(this.options.forward, this.table, () => this.zone());
    this.link = new ServerLink(options.link);
    this.link.on('up', (_session: http2.ClientHttp2Session, info: SessionInfo) => {
      this.info = info;
    });
    this.appPublications = new AppPublications(options.link, options.logger);
    this.direct = new DirectHop(this.link, (host) => this.headersFor(host), options.logger, this.options.direct);
    this.reports = new Reports({
      link: this.link,
      info: () => this.info,
      zone: () => this.zone(),
      listeners: () => this.listeners.values(),
      via: (host) => {
        const via = this.direct.via(host);
        // A publication without a direct listener, or not yet tried, is relayed.
        return via === 'untried' ? (this.offersDirect(host) ? null : 'relay') : via;
      },
      fallbacks: () => this.handleHello().listeners ?? {},
      keyedHosts: () => this.options.serviceKeys.keys(),
      lookup: (host) => this.lookup(host),
      log: (line) => this.log.info(line),
    });
    this.ipc = new IpcServer(
      options.ipcPath,
      {
        hello: () => this.handleHello(),
        resolve: async (r) =>
          this.reports.noted(this.forwarding.tryResolve(r.name) ?? (await this.handleResolve(r.name))),
        connect: async (r) => this.reports.noted(await this.handleConnect(r.address, r.port)),
        reverse: (r) => this.reports.noted(this.handleReverse(r.address)),
        claim: (r) => this.handleClaim(r),
        status: () => this.reports.status(),
        publish: async (r) => this.reports.noted(await this.appPublications.publish(r)),
        list: async (r) => this.reports.noted(await this.reports.list(r.under)),
      },
      options.logger,
    );
    this.fallbacks = new FallbackListeners(this.options.fallbacks, {
      dialer: this,
      resolve: (name) => this.resolveForResponder(name),
      zone: () => this.info?.zone ?? null,
      pseudoNet: { base: this.table.base, prefix: this.table.prefix },
      logger: options.logger,
    });
  }

  private get log(): Logger {
    return this.options.logger;
  }

  async start(): Promise<SessionInfo> {
    const info = await this.link.start();
    this.info = info;
    // A wrong service key is said at start, in one line, not discovered by an app later.
    for (const host of this.options.serviceKeys.keys()) {
      await this.lookup(host).catch((e: unknown) => {
        this.link.stop();
        throw isUnderpassError(e) ? e : new ProtocolError(String(e));
      });
    }
    await this.fallbacks.start().catch((e: unknown) => {
      this.link.stop();
      throw e;
    });
    await this.ipc.start();
    return info;
  }

  /** Request headers: the token, and the service key of `host` when one was given. */
  private headersFor(host: string): http2.OutgoingHttpHeaders {
    const key = this.options.serviceKeys.get(host);
    return key === undefined ? this.link.authHeaders() : { ...this.link.authHeaders(), [Headers.serviceKey]: key };
  }

  stop(): void {
    this.direct.stop();
    this.appPublications.stop();
    this.ipc.stop();
    this.fallbacks.stop();
    for (const l of this.listeners.values()) {
      l.server.close();
      for (const p of l.parked) p.tunnel.stream.close(http2.constants.NGHTTP2_CANCEL);
    }
    for (const s of this.sockets) s.destroy();
    this.link.stop();
  }

  private zone(): string {
    if (!this.info) throw new UnreachableError('no session to the tunnel server yet');
    return this.info.zone;
  }

  private handleHello(): HelloReply {
    return {
      ok: true,
      v: IPC_VERSION,
      zones: [this.zone()],
      pseudoNet: { base: this.table.baseAddress, prefix: this.table.prefix },
      features: ['claim'],
      listeners: this.fallbacks.describe(),
      ...this.forwarding.hello(),
    };
  }

  /** Asks the server what a pseudo name stands for; answers from a short cache while the link is down. */
  private async lookup(host: string): Promise<NameInfo> {
    const cached = this.names.get(host);
    const live = this.link.current();
    if (cached && (Date.now() - cached.at < NAME_TTL_MS || !live)) return cached.info;
    if (!live) throw new UnreachableError('no session to the tunnel server (reconnecting)');
    const info = await getJson(
      live.session,
      { ':path': Paths.names + encodeURIComponent(host), ...this.headersFor(host) },
      NameInfo,
      {
        refused: `lookup of ${host} failed`,
        closed: (e) => new UnreachableError(`the session closed during a name lookup${e ? ` (${e.message})` : ''}`, e),
        malformed: `the server sent a malformed answer to the lookup of ${host}`,
      },
    );
    this.names.set(host, { info, at: Date.now() });
    return info;
  }

  private async handleResolve(name: string): Promise<ResolveReply | ErrorReply> {
    const parsed = tryParsePseudoName(name, this.zone());
    if (!parsed) return { ok: false, code: 'NOT_FOUND', message: `${name} is not a pseudo name under ${this.zone()}` };
    let info: NameInfo;
    try {
      info = await this.lookup(parsed.host);
    } catch (e) {
      if (isUnderpassError(e) && (e.code === 'UP_ERR_NOT_FOUND' || e.code === 'UP_ERR_FORBIDDEN')) {
        if (e.code === 'UP_ERR_FORBIDDEN') this.log.warn(e.message);
        return { ok: false, code: 'NOT_FOUND', message: e.message };
      }
      return { ok: false, code: 'UNAVAILABLE', message: isUnderpassError(e) ? e.message : String(e) };
    }
    // A name resolves only while something serves it. One already in use keeps resolving while its proxy
    // is away, so that the apps using it meet a refused connect (the service is down) rather than a name
    // that vanished under them.
    if (!info.online && ![...this.listeners.values()].some((l) => l.host === parsed.host)) {
      return { ok: false, code: 'NOT_FOUND', message: `${parsed.host} is offline: its service proxy is not connected` };
    }
    const address = this.table.addressOf(parsed.host);
    const listener = await this.tryListener(parsed.host, address, info.port, false);
    if ('ok' in listener) return listener;
    this.log.debug('resolved', { name: parsed.host, address, port: info.port });
    return { ok: true, name: parsed.host, address, ...movedOf(listener) };
  }

  /**
   * The DNS responder's resolve. It answers SERVFAIL for a publication whose listener moved (its program,
   * which has no hook, would reach the local program on the published port): said here once per name.
   */
  private async resolveForResponder(name: string): Promise<ResolveReply | ErrorReply> {
    const reply = await this.handleResolve(name);
    if (reply.ok && reply.moved !== undefined && !this.refusedToResponder.has(reply.name)) {
      this.refusedToResponder.add(reply.name);
      const { port } = reply.moved;
      this.log.warn(
        `DNS: no address for ${reply.name} to a program without the hook: port ${port} of ${reply.address} is held ` +
          `by another program (see its warning above); give that program 'underpass forward LOCAL_PORT ${reply.name}:${port}'`,
      );
    }
    return reply;
  }

  private handleReverse(address: string): ReverseReply | ErrorReply {
    const name = this.table.tryNameOf(address);
    if (name === null) return { ok: false, code: 'NOT_FOUND', message: `${address} is not a pseudo address` };
    const listener = [...this.listeners.values()].find((l) => l.address === address);
    return {
      ok: true,
      name,
      ...(listener === undefined ? {} : movedOf(listener)),
      ...(this.forwarding.isForwarded(name) ? { forward: true } : {}),
    };
  }

  /** A hook names a connection it opened to one of our listeners: admit it without the /proc check. */
  private handleClaim(claim: ClaimRequest): void {
    // Claims for listeners we do not have would only take room in the table.
    if (!this.bound.has(`${claim.address}:${claim.port}`)) {
      if (this.log.isDebugEnabled())
        this.log.debug(`ignored a claim for ${claim.address}:${claim.port}: no listener there`);
      return;
    }
    this.admission.claim({
      peerAddress: claim.localAddress,
      peerPort: claim.localPort,
      localAddress: claim.address,
      localPort: claim.port,
    });
  }

  /** A blocking connect: answer only once the chain reached the real server, so a refusal is connect()'s own. */
  private async handleConnect(address: string, port: number): Promise<ConnectReply | ErrorReply> {
    const target = this.forwarding.tryTarget(address, port);
    if (target !== null && 'ok' in target) return target;
    let listener = this.listeners.get(`${target?.address ?? address}:${port}`);
    const fresh = !listener && target !== null;
    if (!listener && target !== null) {
      const opened = await this.tryListener(target.host, target.address, port, true);
      if ('ok' in opened) return opened;
      listener = opened;
    }
    if (!listener) {
      const name = this.table.tryNameOf(address);
      return {
        ok: false,
        code: 'REFUSED',
        message: name ? `${name} is not published on port ${port}` : `${address} is not a pseudo address`,
      };
    }
    const asked = trace === null ? 0 : monotonicMs();
    try {
      const tunnel = await this.openTunnel(listener);
      this.park(listener, tunnel);
      trace?.markId(tunnel.id, 'ipc-connect-in', asked);
      trace?.markId(tunnel.id, 'ok-in');
      return { ok: true, ...movedOf(listener), ...(target?.standIn === true ? { via: target.address } : {}) };
    } catch (e) {
      this.log.info(`tunnel to ${listener.host}:${port} refused: ${isUnderpassError(e) ? e.message : String(e)}`);
      // A destination tried once and refused keeps no listener: an app probing many ports would pile them up.
      if (fresh) this.dropIdleListener(listener);
      const fix = listener.forward ? { fix: SERVER_REFUSED_FORWARD } : {};
      return { ok: false, code: 'REFUSED', message: isUnderpassError(e) ? e.message : String(e), ...fix };
    }
  }

  /** Closes a listener nothing waits on and no connection uses (a new one opens on the next connect). */
  private dropIdleListener(listener: Listener): void {
    listener.server.getConnections((error, count) => {
      if (error !== null || count > 0 || listener.parked.length > 0) return;
      if (this.listeners.get(`${listener.address}:${listener.port}`) !== listener) return;
      this.listeners.delete(`${listener.address}:${listener.port}`);
      this.bound.delete(`${listener.address}:${listener.moved?.listenPort ?? listener.port}`);
      listener.server.close();
    });
  }

  /** The listener for `host` on `address:port` (opened if need be), or the reply saying why there is none. */
  private async tryListener(
    host: string,
    address: string,
    port: number,
    forward: boolean,
  ): Promise<Listener | ErrorReply> {
    try {
      return await this.ensureListener(host, address, port, forward);
    } catch (e) {
      const message = `cannot listen on ${address}:${port} for ${host}: ${errorText(e)}`;
      this.log.warn(message);
      return { ok: false, code: 'UNAVAILABLE', message };
    }
  }

  private park(listener: Listener, tunnel: Answered): void {
    const { stream } = tunnel;
    const entry = {
      tunnel,
      timer: setTimeout(() => {
        const i = listener.parked.indexOf(entry);
        if (i >= 0) listener.parked.splice(i, 1);
        stream.close(http2.constants.NGHTTP2_CANCEL);
      }, this.options.parkMs),
    };
    entry.timer.unref();
    stream.once('close', () => {
      const i = listener.parked.indexOf(entry);
      if (i >= 0) {
        listener.parked.splice(i, 1);
        clearTimeout(entry.timer);
      }
    });
    listener.parked.push(entry);
  }

  private takeParked(listener: Listener): Answered | null {
    for (;;) {
      const entry = listener.parked.shift();
      if (!entry) return null;
      clearTimeout(entry.timer);
      if (!entry.tunnel.stream.destroyed && !entry.tunnel.stream.closed) return entry.tunnel;
    }
  }

  /**
   * Sends the tunnel request. Returns the stream at once, and a promise that settles
   * with the proxy's answer: the stream on success, the refusal otherwise.
   */
  private requestTunnel(
    listener: HostPort & { authority?: string },
    onRefused?: (error: UnderpassError) => void,
    extraHeaders: http2.OutgoingHttpHeaders = {},
  ): { stream: http2.ClientHttp2Stream | null; answered: Promise<Answered> } {
    const live = this.link.current();
    if (!live) {
      const error = new UnreachableError('no session to the tunnel server (reconnecting)');
      onRefused?.(error);
      return { stream: null, answered: Promise.reject(error) };
    }
    const stream = live.session.request({
      ':method': 'CONNECT',
      ':authority': listener.authority ?? formatHostPort(listener),
      ...this.headersFor(listener.host),
      ...extraHeaders,
    });
    const asked = performance.now();
    const answered = new Promise<Answered>((resolve, reject) => {
      // A refusal is handled synchronously, before the stream's end can reach an optimistic splice.
      const refuse = (error: UnderpassError): void => {
        this.options.metrics?.tunnelOpened(error.code, listener.host);
        // A blocking connect's refusal is noted with its IPC reply; an optimistic one has none.
        if (onRefused !== undefined)
          this.reports.noteRefusal(error.code, `${listener.host}:${listener.port}: ${error.message}`);
        onRefused?.(error);
        reject(error);
      };
      const onEarlyClose = (): void => refuse(new UnreachableError('the session closed while opening the tunnel'));
      // Not a closure: one made here would keep this scope alive as long as the tunnel.
      stream.on('error', ignoreError);
      stream.once('close', onEarlyClose);
      stream.once('response', (headers) => {
        stream.off('close', onEarlyClose);
        const id = headers[Headers.tunnelId];
        if (Number(headers[':status']) === 200 && typeof id === 'string') {
          this.options.metrics?.tunnelOpened('ok', listener.host, (performance.now() - asked) / 1000);
          resolve({ stream, id });
          return;
        }
        const refusal = refusalFrom(headers, 'the tunnel was refused');
        refuse(refusal);
        stream.close();
      });
    });
    return { stream, answered };
  }

  private openTunnel(listener: Listener): Promise<Answered> {
    if (listener.forward) return this.requestTunnel(listener, undefined, FORWARD_HEADERS).answered;
    return this.answer(listener);
  }

  /** Whether the publication's proxy has a direct listener (as its latest lookup said). */
  private offersDirect(host: string): boolean {
    return this.names.get(host)?.info.direct === true;
  }

  /** A tunnel straight to the proxy when its direct hop works, through the server otherwise. */
  private async answer(target: HostPort): Promise<Answered> {
    if (this.offersDirect(target.host)) {
      const stream = await this.direct.open(target.host, target.port);
      if (stream !== null) return { stream, id: '', direct: true };
    }
    return this.requestTunnel(target).answered;
  }

  /** The listener of `host`'s publication on `address:port`, opened on first use (once, however many ask). */
  private ensureListener(host: string, address: string, port: number, forward: boolean): Promise<Listener> {
    const key = `${address}:${port}`;
    const existing = this.listeners.get(key);
    if (existing) return Promise.resolve(existing);
    let opening = this.opening.get(key);
    if (!opening) {
      opening = this.openListener(host, address, port, forward).finally(() => this.opening.delete(key));
      this.opening.set(key, opening);
    }
    return opening;
  }

  private async openListener(host: string, address: string, port: number, forward: boolean): Promise<Listener> {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true });
    const authority = formatHostPort({ host, port });
    const listener: Listener = { host, address, port, authority, moved: null, forward, server, parked: [] };
    server.on('connection', (socket) => this.handleAccept(listener, socket));
    const binding = await listenOnPseudo(server, address, port);
    if (binding.moved !== null) {
      listener.moved = { port, listenPort: binding.listenPort };
      this.log.warn(await movedListenerWarning(host, address, port, binding));
    }
    this.listeners.set(`${address}:${port}`, listener);
    this.bound.set(`${address}:${binding.listenPort}`, listener);
    this.log.info(forward ? 'listening for forwarded connections' : 'listening for tunneled connections', {
      name: host,
      address,
      port: binding.listenPort,
    });
    return listener;
  }

  /** A tunneled connection arrives: check who connects before anything is read or forwarded. */
  private handleAccept(listener: Listener, socket: net.Socket): void {
    socket.setNoDelay(true);
    this.sockets.add(socket);
    // Shared listeners, not closures: a closure here would keep this accept's scope (and the early
    // tunnel's) as long as the connection, ~0.9 KiB per idle tunnel with the `once` wrapper.
    socket.on('close', this.forgetSocket);
    socket.on('error', ignoreError);
    // Only the redirector's user (and root) may use its listeners; the socket stays paused until then.
    let early: EarlyTunnel | null = null;
    trace?.mark(socket, 'accept');
    this.admission.admit(
      socket,
      () => {
        trace?.mark(socket, 'admitted');
        this.joinTunnel(listener, socket, early);
      },
      () => (early = this.requestEarly(listener, socket)),
      // The socket's local end is the listener's, which listens on one address.
      { address: listener.address, port: listener.moved?.listenPort ?? listener.port },
    );
  }

  /**
   * A connection waits for its claim (about a millisecond after the accept for a hooked app, the claim
   * wait for others): its tunnel request goes out meanwhile, so the proxy is connecting to the target
   * while the claim travels. Nothing the app sends leaves before admission (the socket stays paused),
   * and a connection that closes unadmitted — refused by the owner check, or given up — resets its
   * tunnel, as the target then sees. A parked tunnel (a blocking connect's) needs no request.
   */
  private requestEarly(listener: Listener, socket: net.Socket): EarlyTunnel | null {
    // A publication that offers a direct hop tries that first, after admission (direct-hop.ts). Without
    // a session the refusal waits for the admission too: a reset right at the accept can reach a blocking
    // connect() before it returned, which then fails where a real server's connect had succeeded.
    if (listener.parked.length > 0 || this.offersDirect(listener.host) || this.link.current() === null) return null;
    const leg = this.startTunnel(listener, socket);
    if (leg === null) return null;
    const cancel = (): void => {
      leg.destroy();
    };
    socket.once('close', cancel);
    return { leg, cancel };
  }

  /**
   * Sends the tunnel request for `socket` and returns its leg, attached to the stream, not yet spliced;
   * null when there is no session (the socket is reset then). Optimistic: the app's first bytes travel
   * right behind the request and wait at the server for the proxy's answer, saving a round trip; a
   * refusal resets the connection the app holds.
   */
  private startTunnel(listener: Listener, socket: net.Socket): ResumableStream | null {
    const leg = new ResumableStream(listener.authority);
    const { stream, answered } = this.requestTunnel(
      listener,
      (e) => {
        this.log.info(`tunnel to ${listener.host}:${listener.port} refused: ${e.message}`);
        abort(socket);
        leg.destroy();
      },
      listener.forward ? FORWARD_HEADERS : {},
    );
    trace?.mark(socket, 'connect-out');
    // Observed before anything else: without a session the answer is already a rejection (the refusal
    // itself is handled above), and one left unobserved would end the process.
    answered.then(
      (tunnel) => {
        trace?.name(socket, tunnel.id);
        trace?.markId(tunnel.id, 'ok-in');
        this.link.tunnels.add(tunnel.id, leg);
      },
      () => undefined,
    );
    if (!stream) return null;
    leg.attach(stream, 0);
    return leg;
  }

  /** An answered tunnel as a leg that outlives a dropped session (registered for resumption); a direct one as is. */
  private legOf(authority: string, tunnel: Answered): Duplex {
    if (tunnel.direct === true) return tunnel.stream;
    const leg = new ResumableStream(authority);
    leg.attach(tunnel.stream, 0);
    this.link.tunnels.add(tunnel.id, leg);
    return leg;
  }

  /** Joins an answered tunnel to a client socket. */
  private carry(authority: string, tunnel: Answered, socket: net.Socket): void {
    this.spliceApp(socket, this.legOf(authority, tunnel), authority);
  }

  /** Joins the app's socket to its tunnel's leg; from here the splice carries a close of either side to the other. */
  private spliceApp(socket: net.Socket, leg: Duplex, authority: string): void {
    splice(socket, leg, undefined, undefined, this.meterOf(authority));
    // After the splice, which reads them: a 'data' listener alone would let bytes flow past it.
    trace?.markFirstData(socket, socket, 'app-data-in');
    trace?.markFirstData(leg, socket, 'data-in');
  }

  /**
   * A tunnel to `name:port` for the listeners of unhooked clients (SOCKS5, HTTP CONNECT; issue 12),
   * opened on this session without a pseudo listener. Rejects with DialError saying why.
   */
  async dial(name: string, port: number): Promise<OpenedTunnel> {
    const zone = this.info?.zone;
    if (zone === undefined) throw new DialError('unavailable', 'no session to the tunnel server yet');
    // An IPv4 destination that is a pseudo address (resolved through the DNS responder) stands for its name.
    const parsed = tryParsePseudoName((net.isIPv4(name) ? this.table.tryNameOf(name) : null) ?? name, zone);
    if (!parsed && tryMatchRule(this.options.forward, name, port) !== null) return this.dialForward(name, port);
    if (!parsed)
      throw new DialError(
        'outside-zone',
        `${name} is not a pseudo name under ${zone}: only publications go through this redirector`,
      );
    let info: NameInfo;
    try {
      info = await this.lookup(parsed.host);
    } catch (e) {
      const gone = isUnderpassError(e) && (e.code === 'UP_ERR_NOT_FOUND' || e.code === 'UP_ERR_FORBIDDEN');
      throw new DialError(
        gone ? 'no-such-name' : 'unavailable',
        gone ? `${parsed.host} is not a publication` : errorText(e),
      );
    }
    if (info.port !== port)
      throw new DialError('refused', `${parsed.host} is published on port ${info.port}, not ${port}`);
    return this.openDialed({ host: parsed.host, port });
  }

  /** Forwarding mode: the tunnel server dials `host:port` itself (it must allow it: `--forward-allow`). */
  private async dialForward(host: string, port: number): Promise<OpenedTunnel> {
    const opened = await this.openDialed({ host, port }, FORWARD_HEADERS);
    this.log.info('forwarded through the tunnel server', { target: formatHostPort({ host, port }) });
    return opened;
  }

  /** Requests the tunnel a dial asked for and hands it over to the listener that dialled. */
  private async openDialed(target: HostPort, extraHeaders?: http2.OutgoingHttpHeaders): Promise<OpenedTunnel> {
    let tunnel: Answered;
    try {
      tunnel =
        extraHeaders === undefined
          ? await this.answer(target)
          : await this.requestTunnel(target, undefined, extraHeaders).answered;
    } catch (e) {
      const busy = isUnderpassError(e) && ['UP_ERR_UNREACHABLE', 'UP_ERR_LIMIT'].includes(e.code);
      throw new DialError(busy ? 'unavailable' : 'refused', errorText(e));
    }
    const authority = formatHostPort(target);
    return {
      carry: (socket) => this.carry(authority, tunnel, socket),
      open: () => this.legOf(authority, tunnel),
      cancel: () => tunnel.stream.close(http2.constants.NGHTTP2_CANCEL),
    };
  }

  /** An admitted connection: join it to its early tunnel, a parked one, or one opened now. */
  private joinTunnel(listener: Listener, socket: net.Socket, early: EarlyTunnel | null): void {
    const { authority } = listener;
    if (early !== null) {
      socket.off('close', early.cancel);
      // Refused meanwhile: the refusal already reset the socket.
      if (!early.leg.destroyed) this.spliceApp(socket, early.leg, authority);
      return;
    }
    const parked = this.takeParked(listener);
    if (parked) {
      if (parked.id !== '') trace?.name(socket, parked.id);
      this.carry(authority, parked, socket);
      return;
    }
    if (!this.offersDirect(listener.host)) {
      this.joinRelayed(listener, socket);
      return;
    }
    // The app's socket stays paused while the direct hop is tried: a fallback to the relay loses nothing.
    this.direct.open(listener.host, listener.port).then(
      (stream) => {
        // The app may have given up meanwhile: nothing is opened for it then.
        if (socket.destroyed) stream?.close(http2.constants.NGHTTP2_CANCEL);
        else if (stream === null) this.joinRelayed(listener, socket);
        else this.carry(authority, { stream, id: '', direct: true }, socket);
      },
      (e: unknown) => {
        this.log.info(`tunnel to ${authority} refused: ${errorText(e)}`);
        abort(socket);
      },
    );
  }

  /** Opens a relayed tunnel for an admitted connection, without waiting for the proxy's answer. */
  private joinRelayed(listener: Listener, socket: net.Socket): void {
    const leg = this.startTunnel(listener, socket);
    if (leg !== null) this.spliceApp(socket, leg, listener.authority);
  }

  /** Counts a tunnel's bytes under its publication (`NAME:PORT` → the pseudo name) when metrics are on. */
  private meterOf(authority: string): SpliceMeter | undefined {
    return this.options.metrics?.meter(authority.slice(0, authority.lastIndexOf(':')));
  }

  /** What the metrics read at scrape time. */
  snapshot(): MetricsSnapshot {
    return { sessions: this.link.current() !== null ? 1 : 0, tunnelsOpen: this.link.tunnels.size };
  }
}
