/**
 * The endpoint registry: every endpoint session the server knows, by id and by the HTTP/2 session that
 * carries it now. An endpoint's session outlives its connection: when the link drops, its tunnels wait
 * for the grace period, and an endpoint that comes back with the session's resumption token (`ID.SECRET`)
 * gets them back where they were (PROTOCOL.md "Resumption").
 */
import crypto from 'node:crypto';
import type http2 from 'node:http2';
import { BadMessageError, NotFoundError } from '../protocol/errors';
import { Headers } from '../protocol/wire';
import type { Logger } from '../runtime/log';
import type { Metrics } from '../runtime/metrics';
import { TunnelTable } from '../runtime/tunnel-table';
import { secretsEqual } from './accounts';

/**
 * An endpoint's session as the server knows it: it outlives the HTTP/2 connection that carries it for
 * the grace period, holding the endpoint's side of its tunnels.
 */
export interface EndpointSession {
  id: string;
  secret: string;
  account: string;
  /** When it began (ms since 1970). */
  since: number;
  h2: http2.Http2Session | null;
  control: http2.ServerHttp2Stream | null;
  tunnels: TunnelTable;
}

/** A resumption token's two parts, `ID.SECRET`; null for a token of another shape. */
export function parseResumeToken(token: string): { id: string; secret: string } | null {
  const dot = token.indexOf('.');
  return dot > 0 ? { id: token.slice(0, dot), secret: token.slice(dot + 1) } : null;
}

export class EndpointRegistry {
  /** Endpoint sessions by id, connected or waiting out their grace period. */
  private readonly byId = new Map<string, EndpointSession>();
  private readonly byH2 = new WeakMap<http2.Http2Session, EndpointSession>();

  constructor(
    private readonly graceMs: number,
    private readonly log: Logger,
    private readonly metrics: Metrics | undefined,
  ) {}

  get size(): number {
    return this.byId.size;
  }

  all(): IterableIterator<EndpointSession> {
    return this.byId.values();
  }

  /** The endpoint session `h2` carries, if it has one. */
  of(h2: http2.Http2Session): EndpointSession | undefined {
    return this.byH2.get(h2);
  }

  /** Whether resumption token `token` names a session this server holds (it is resumed here, never moved). */
  holds(token: string): boolean {
    const parts = parseResumeToken(token);
    return parts !== null && this.byId.has(parts.id);
  }

  /** Forgets an endpoint session at once (its token ended): it cannot be resumed. */
  forget(endpoint: EndpointSession): void {
    this.byId.delete(endpoint.id);
  }

  /**
   * The endpoint session an HTTP/2 session carries: the one a valid resumption token names (its tunnels
   * then wait for re-opening on this connection), or a new one.
   */
  open(h2: http2.Http2Session, account: string, token?: string): { endpoint: EndpointSession; resumed: boolean } {
    const current = this.byH2.get(h2);
    if (current) return { endpoint: current, resumed: false };
    const parts = token !== undefined ? parseResumeToken(token) : null;
    if (parts !== null) {
      const known = this.byId.get(parts.id);
      if (known && known.account === account && secretsEqual(parts.secret, known.secret)) {
        this.log.info('session resumed', { account, tunnels: known.tunnels.size });
        this.metrics?.resumed('session');
        this.carry(known, h2);
        return { endpoint: known, resumed: true };
      }
    }
    const endpoint: EndpointSession = {
      id: crypto.randomBytes(9).toString('base64url'),
      secret: crypto.randomBytes(18).toString('base64url'),
      account,
      since: Date.now(),
      h2: null,
      control: null,
      tunnels: new TunnelTable({
        graceMs: this.graceMs,
        send: (bytes) => endpoint.control?.write(bytes),
        logger: this.log,
        onExpired: () => {
          if (endpoint.h2 === null) this.byId.delete(endpoint.id);
        },
      }),
    };
    this.byId.set(endpoint.id, endpoint);
    this.carry(endpoint, h2);
    return { endpoint, resumed: false };
  }

  /** The endpoint session of a request, made on the spot for a client that did not ask for one. */
  endpointFor(stream: http2.ServerHttp2Stream, account: string): EndpointSession {
    const h2 = stream.session as http2.Http2Session;
    return this.byH2.get(h2) ?? this.open(h2, account).endpoint;
  }

  /** An endpoint that came back re-opens one of its tunnels from the byte count it has. */
  resumeTunnel(stream: http2.ServerHttp2Stream, id: string, receivedHeader: string | string[] | undefined): void {
    const leg = stream.session ? this.byH2.get(stream.session)?.tunnels.get(id) : undefined;
    if (!leg) throw new NotFoundError('no such tunnel to resume: it ended, or its grace period passed');
    const received = Number(receivedHeader);
    if (typeof receivedHeader !== 'string' || !Number.isSafeInteger(received) || received < 0) {
      throw new BadMessageError(`${Headers.received} must be a byte count`, { whole: true });
    }
    stream.respond({ ':status': 200, [Headers.received]: String(leg.received) });
    leg.attach(stream, received);
    this.metrics?.resumed('tunnel');
  }

  /** The endpoint session runs over `h2` from now on; a connection it had before is closed. */
  private carry(endpoint: EndpointSession, h2: http2.Http2Session): void {
    const previous = endpoint.h2;
    endpoint.h2 = h2;
    this.byH2.set(h2, endpoint);
    // What the table reports as abandoned needs no message from here: the endpoint re-opens every
    // tunnel it still has, and one the server dropped is answered UP_ERR_NOT_FOUND, which resets it.
    endpoint.tunnels.resume();
    h2.once('close', () => {
      if (endpoint.h2 !== h2) return;
      endpoint.h2 = null;
      endpoint.control = null;
      if (endpoint.tunnels.size === 0) this.byId.delete(endpoint.id);
      else endpoint.tunnels.suspend();
    });
    // The old connection may not have noticed its link is gone; its streams are superseded.
    if (previous && !previous.destroyed) previous.destroy();
  }
}
