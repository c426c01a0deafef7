/**
 * The one HTTP/2 session a service proxy or a redirector keeps to the tunnel server (only outbound: the
 * endpoints dial, the server never does). `ServerLink` dials, checks the token, opens the control
 * stream, keeps the session alive with PINGs, and when the session goes away dials again with
 * exponential backoff and jitter, telling its owner through 'up' / 'down'.
 *
 * Tunnels outlive a dropped link: the link keeps the session's resumption token and its table of
 * resumable tunnels; on reconnecting it presents the token and, when the server still holds the session,
 * re-opens every tunnel from the byte counts both sides have (PROTOCOL.md "Resumption").
 *
 * Given several servers (a cluster's nodes, server-list.ts), it dials them from the one that worked
 * last: a session whose node died is on another node at the next attempt.
 *
 * Length: about 415 lines, over the ~350 the house aims at: dialling (the servers, the node assignment
 * sends the endpoint to, then the routes) and resuming share the session's state, and splitting them
 * would pass it all around.
 */
import { EventEmitter } from 'node:events';
import http2 from 'node:http2';
import { encodeControl, ServerMessage, type EndpointMessage } from '../protocol/control';
import {
  AuthError,
  isUnderpassError,
  MovedError,
  ProtocolError,
  TlsError,
  UnderpassError,
  UnreachableError,
} from '../protocol/errors';
import { formatHostPort, tryParseHostPort } from '../protocol/names';
import { Headers, Paths, SessionInfo, WIRE_VERSION } from '../protocol/wire';
import { readControl } from './control-stream';
import { keepalive, raiseSessionWindow, sessionOptions } from './h2';
import { linkConfig, type LinkConfig, type LinkOptions } from './link-config';
import { getJson, refusalFrom } from './requests';
import type { ResumableStream } from './resumable-stream';
import { TunnelTable } from './tunnel-table';
import { Backoff, ServerList, type Candidate } from './server-list';
import { candidateRoutes, describeRoute, openRoute, proxyFor, type Route } from './transport';

const VERSION_TEXT = String(WIRE_VERSION);

/** While tunnels wait for the session, reconnect attempts come at least this often (ms). */
const RESUME_RETRY_MS = 1_000;
/** With several servers, how long one may take to connect before the next is tried (ms). */
const FAILOVER_DIAL_MS = 2_000;

function describeDialError(error: NodeJS.ErrnoException, where: string): UnderpassError {
  const code = error.code ?? '';
  if (code.startsWith('ERR_TLS') || /certificate|self.signed|UNABLE_TO|CERT_/i.test(`${code} ${error.message}`)) {
    return new TlsError(
      `TLS to ${where} failed (${code || error.message}): pass the server's certificate with --ca (the server writes it to DATA_DIR/tls/cert.pem)`,
    );
  }
  return new UnreachableError(
    `cannot reach the tunnel server at ${where} (${code || error.message}): check --server and that 'underpass server' runs there`,
    error,
  );
}

export class ServerLink extends EventEmitter {
  /** The session's resumable tunnels (legs between this endpoint and the server). */
  readonly tunnels: TunnelTable;
  private session: http2.ClientHttp2Session | null = null;
  private control: http2.ClientHttp2Stream | null = null;
  private info: SessionInfo | null = null;
  /** What the server gave to present after a drop; null before the first session. */
  private resumeToken: string | null = null;
  private readonly config: LinkConfig;
  private readonly backoff: Backoff;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private readonly list: ServerList;
  /** The server being dialled, or of the live session (a node assignment sent it to, perhaps). */
  private target: Candidate;
  /** The node assignment last sent this endpoint to (`UP_ERR_MOVED`): dialled first while it answers. */
  private movedTo: Candidate | null = null;
  /** The kind of route that worked last (`describeRoute`); tried first on every reconnect. */
  private preferred: string | null = null;
  private bearer: string | null = null;

  constructor(options: LinkOptions) {
    super();
    const config = linkConfig(options);
    this.config = config;
    this.backoff = new Backoff(config.backoff.minMs, config.backoff.maxMs);
    this.list = new ServerList(config.servers.length > 0 ? config.servers : [config.server]);
    this.target = { server: config.server, address: undefined, where: this.list.where };
    this.tunnels = new TunnelTable({
      graceMs: config.graceMs,
      send: (bytes) => this.control?.write(bytes),
      logger: config.logger,
    });
  }

  /** The tunnel server, HOST:PORT (of the live session, or the one being dialled). */
  get server(): string {
    return this.where;
  }

  private get where(): string {
    return this.target.where;
  }

  /** How the live session reaches the server, for logs and tests. */
  get route(): string | null {
    return this.preferred;
  }

  /** The live session and what the server said of it, or null while reconnecting. */
  current(): { session: http2.ClientHttp2Session; info: SessionInfo } | null {
    return this.session && this.info && !this.session.closed && !this.session.destroyed
      ? { session: this.session, info: this.info }
      : null;
  }

  /** Headers every request carries. */
  authHeaders(): http2.OutgoingHttpHeaders {
    // The values made once: every tunnel's stream keeps the headers it sent, strings included.
    this.bearer ??= `Bearer ${this.config.token}`;
    return { authorization: this.bearer, [Headers.version]: VERSION_TEXT };
  }

  /** Sends a message on the control stream; false while the session is down. */
  send(message: EndpointMessage): boolean {
    if (!this.control || this.control.destroyed) return false;
    this.control.write(encodeControl(message));
    return true;
  }

  /**
   * First connection: resolves once the server accepted the token, rejects with the reason otherwise
   * (the CLI turns that into one line and a non-zero exit). After that, reconnects on its own.
   */
  start(): Promise<SessionInfo> {
    return this.dial();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.tunnels.abortAll('the endpoint is stopping');
    this.session?.close();
    this.session?.destroy();
  }

  /**
   * Tries each server of the list, the last one that worked first (server-list.ts); an authentication
   * failure ends the search at once. With several, one that does not answer is given up on sooner.
   */
  private async dial(): Promise<SessionInfo> {
    const listed = await this.list.candidates();
    const candidates = this.movedTo !== null ? [this.movedTo, ...listed] : listed;
    const hadSession = this.resumeToken !== null;
    let first: UnderpassError | null = null;
    for (const candidate of candidates) {
      this.target = candidate;
      try {
        const info = await this.dialServer(candidates.length > 1 ? FAILOVER_DIAL_MS : undefined);
        if (candidate === this.movedTo) return info;
        if (this.list.use(candidate) && hadSession)
          this.config.logger.info(`the session moved to the tunnel server ${this.where}`);
        return info;
      } catch (e) {
        const error = e as UnderpassError;
        if (error.code === 'UP_ERR_AUTH' || error.code === 'UP_ERR_PROTOCOL') throw error;
        if (candidate === this.movedTo) {
          this.config.logger.warn(`node ${candidate.where} is unreachable (${error.message}): back to --server`);
          this.movedTo = null;
          continue;
        }
        if (candidates.length > 1) this.config.logger.debug(`${candidate.where} failed: ${error.message}`);
        first ??= error;
      }
    }
    this.target = candidates.find((c) => c.where === this.list.where) ?? this.target;
    if (candidates.length === 1 || first === null) throw first ?? new UnreachableError('no tunnel server to dial');
    throw new UnreachableError(
      `cannot reach any of the tunnel servers ${candidates.map((c) => c.where).join(', ')} (first: ${first.message})`,
    );
  }

  /** Tries each route to the target, preferred first. */
  private async dialServer(timeoutMs: number | undefined): Promise<SessionInfo> {
    const routes = candidateRoutes(this.config.transport, proxyFor(this.target.server, this.config.proxy));
    const order = [
      ...routes.filter((r) => describeRoute(r) === this.preferred),
      ...routes.filter((r) => describeRoute(r) !== this.preferred),
    ];
    const failures: Array<{ route: Route; error: UnderpassError }> = [];
    for (const route of order) {
      try {
        const info = await this.dialFollowing(route, timeoutMs);
        if (this.preferred !== describeRoute(route))
          this.config.logger.info(`session to the tunnel server ${this.where} runs over ${describeRoute(route)}`);
        this.preferred = describeRoute(route);
        return info;
      } catch (e) {
        const error = isUnderpassError(e) ? e : describeDialError(e as NodeJS.ErrnoException, this.where);
        if (error.code === 'UP_ERR_AUTH' || error.code === 'UP_ERR_PROTOCOL') throw error;
        this.config.logger.debug(`route ${describeRoute(route)} failed: ${error.message}`);
        failures.push({ route, error });
      }
    }
    const first = failures[0]!.error;
    if (failures.every((f) => f.error.code === first.code)) throw first;
    throw new UnreachableError(
      `cannot reach the tunnel server at ${this.where} by any route: ${failures.map((f) => `${describeRoute(f.route)}: ${f.error.message}`).join('; ')}`,
    );
  }

  /**
   * Dials the target; when that node sends this endpoint to another (assignment, `UP_ERR_MOVED`), dials
   * that one, saying so, so that it is not sent on again.
   */
  private async dialFollowing(route: Route, timeoutMs: number | undefined): Promise<SessionInfo> {
    try {
      return await this.dialRoute(route, false, timeoutMs);
    } catch (e) {
      if (!(e instanceof MovedError)) throw e;
      const to = tryParseHostPort(e.address);
      if (to === null) throw new ProtocolError(`the server sent this endpoint to '${e.address}', not HOST:PORT`);
      this.config.logger.info(`the tunnel server ${this.where} sends this endpoint to ${e.address} (${e.message})`);
      const sender = this.target;
      this.target = { server: to, address: undefined, where: formatHostPort(to) };
      try {
        const info = await this.dialRoute(route, true, timeoutMs);
        this.movedTo = this.target;
        return info;
      } catch (error) {
        if (error instanceof AuthError || !isUnderpassError(error)) throw error;
        // A node that died a moment ago still looks alive to the others until its heartbeat expires:
        // the endpoint stays where it is (saying it was moved, so that it is not sent on again).
        this.config.logger.warn(`${e.address} is unreachable (${error.message}): staying on ${sender.where}`);
        this.target = sender;
        return this.dialRoute(route, true, timeoutMs);
      }
    }
  }

  private async dialRoute(route: Route, moved: boolean, timeoutMs: number | undefined): Promise<SessionInfo> {
    const { ca } = this.config;
    const { server, address } = this.target;
    const stream = await openRoute(route, { host: server.host, port: server.port, ca, address }, timeoutMs).catch(
      (e: unknown) => {
        throw isUnderpassError(e) ? e : describeDialError(e as NodeJS.ErrnoException, this.where);
      },
    );
    const session = http2.connect(`${route.carrier === 'tls' ? 'https' : 'http'}://${formatHostPort(server)}`, {
      ...sessionOptions,
      createConnection: () => stream,
    });
    session.on('error', () => {
      // Reported through 'close' below and the pending request; a session error must never crash us.
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException): void => reject(describeDialError(e, this.where));
      session.once('error', onError);
      session.once('connect', () => {
        session.off('error', onError);
        resolve();
      });
    }).catch((e: unknown) => {
      session.destroy();
      throw e;
    });
    raiseSessionWindow(session);
    let info: SessionInfo;
    try {
      info = await this.hello(session, moved);
    } catch (e) {
      session.destroy();
      throw e;
    }
    this.session = session;
    this.info = info;
    this.backoff.reset();
    keepalive(
      session,
      this.config.keepaliveMs,
      () =>
        this.config.logger.warn('the tunnel server stopped answering keepalives; reconnecting', {
          server: this.where,
        }),
      stream,
    );
    session.once('close', () => this.onClosed(session));
    this.openControl(session);
    this.resumeTunnels(session, info);
    this.emit('up', session, info);
    return info;
  }

  /** The control stream: acknowledgements both ways, and whatever the owner exchanges ('message'). */
  private openControl(session: http2.ClientHttp2Session): void {
    const control = session.request({ ':method': 'POST', ':path': Paths.control, ...this.authHeaders() });
    this.control = control;
    control.on('error', (e: Error) => this.config.logger.debug(`control stream error: ${e.message}`));
    control.once('close', () => {
      if (this.control === control) this.control = null;
    });
    control.on('response', (headers) => {
      if (Number(headers[':status']) !== 200) {
        this.config.logger.error(
          `the server refused the control stream (HTTP ${String(headers[':status'])}): ${String(headers[Headers.errorMessage] ?? '')}`,
        );
        session.close();
      }
    });
    readControl(
      control,
      ServerMessage,
      (message) => {
        if (message.type === 'ack') this.tunnels.handleAck(message);
        else this.emit('message', message);
      },
      (why) => {
        this.config.logger.error(`the server sent a malformed control message (${why}); reconnecting`);
        session.destroy();
      },
    );
  }

  /**
   * After a reconnect: re-opens every tunnel of a session the server kept, each from the byte count the
   * server has; a session the server no longer knows (it restarted, or the grace period passed) resets them.
   */
  private resumeTunnels(session: http2.ClientHttp2Session, info: SessionInfo): void {
    if (info.resume?.resumed !== true) {
      if (this.tunnels.size > 0) {
        this.config.logger.warn(
          `the tunnel server no longer knows this session: resetting ${this.tunnels.size} tunnel(s)`,
        );
        this.tunnels.abortAll('the tunnel server no longer knows the session');
      }
      this.tunnels.resume();
      return;
    }
    const legs = this.tunnels.detached();
    for (const message of this.tunnels.resume()) this.send(message);
    if (legs.length > 0) this.config.logger.info(`session resumed: re-opening ${legs.length} tunnel(s)`);
    for (const leg of legs) this.resumeTunnel(session, leg);
  }

  private resumeTunnel(session: http2.ClientHttp2Session, leg: ResumableStream): void {
    const stream = session.request({
      ':method': 'CONNECT',
      ':authority': leg.authority,
      [Headers.resumeTunnel]: leg.id ?? '',
      [Headers.received]: String(leg.received),
      ...this.authHeaders(),
    });
    stream.on('error', () => undefined);
    stream.once('response', (headers) => {
      const received = Number(headers[Headers.received]);
      if (Number(headers[':status']) === 200 && Number.isSafeInteger(received)) {
        leg.attach(stream, received);
        return;
      }
      stream.close();
      leg.destroy(
        Number(headers[':status']) === 200
          ? new ProtocolError('the server resumed a tunnel without its byte count')
          : refusalFrom(headers, 'the server did not resume the tunnel'),
      );
    });
    // A stream that fails before its answer leaves the leg detached: a reconnect tries again; with the
    // session up, the table resets it a grace period after the session's return (TunnelTable.resume).
  }

  private async hello(session: http2.ClientHttp2Session, moved: boolean): Promise<SessionInfo> {
    const resume = this.resumeToken === null ? {} : { [Headers.resume]: this.resumeToken };
    const { publishes } = this.config;
    const assignment = {
      ...(moved ? { [Headers.moved]: '1' } : {}),
      ...(publishes.length > 0 ? { [Headers.publishes]: publishes.join(',') } : {}),
    };
    const headers = { ':path': Paths.session, ...this.authHeaders(), ...resume, ...assignment };
    const info = await getJson(session, headers, SessionInfo, {
      refused: 'the server refused the session',
      closed: (e) =>
        new UnreachableError(`the tunnel server at ${this.where} closed the session${e ? ` (${e.message})` : ''}`, e),
      malformed: 'the server sent a malformed session answer',
    });
    this.resumeToken = info.resume?.token ?? null;
    return info;
  }

  private onClosed(session: http2.ClientHttp2Session): void {
    if (this.session !== session) return;
    this.session = null;
    this.info = null;
    this.control = null;
    this.tunnels.suspend();
    this.emit('down');
    if (this.stopped) return;
    this.config.logger.warn('lost the session to the tunnel server; reconnecting', { server: this.where });
    this.schedule();
  }

  private schedule(): void {
    // Tunnels waiting out their grace period are worth a quick retry; an idle endpoint backs off fully.
    const delay = this.tunnels.waiting ? Math.min(this.backoff.next(), RESUME_RETRY_MS) : this.backoff.next();
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.stopped) return;
      this.dial().then(
        () => this.config.logger.info('reconnected to the tunnel server', { server: this.where }),
        (e: unknown) => {
          const message = isUnderpassError(e) ? e.message : String(e);
          if (e instanceof AuthError && this.tunnels.size > 0) {
            // A token the server no longer takes (revoked, expired) will not resume anything: the apps
            // see their resets now rather than at the end of the grace period.
            this.config.logger.error(`the tunnel server refused the token (${message}); resetting every tunnel`);
            this.tunnels.abortAll(`the tunnel server refused the token: ${message}`);
          }
          this.config.logger.warn(`reconnect failed: ${message}`, { retryInMs: delay });
          this.schedule();
        },
      );
    }, delay);
  }
}
