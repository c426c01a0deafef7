/**
 * What the redirector's listeners for unhooked clients (SOCKS5, HTTP CONNECT) need from it: a tunnel to
 * `NAME:PORT` opened in-process, on the redirector's one session, by the same request path the pseudo
 * listeners use — never by connecting to a pseudo listener and paying a second local hop. Definitions
 * only; the Redirector implements them.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { UnderpassError } from '../protocol/errors';

/** Why a dial failed, in the terms a SOCKS reply or an HTTP status can carry. */
export type DialFailure =
  /** Not a pseudo name under the zone: this redirector tunnels publications only. */
  | 'outside-zone'
  /** Under the zone, but no publication this account may reach. */
  | 'no-such-name'
  /** The name exists but the port is not its published one, the service is offline or refused. */
  | 'refused'
  /** No session to the tunnel server, or it is busy: worth trying again. */
  | 'unavailable';

export class DialError extends UnderpassError {
  constructor(
    readonly kind: DialFailure,
    message: string,
  ) {
    super(
      kind === 'outside-zone'
        ? 'UP_ERR_FORBIDDEN'
        : kind === 'no-such-name'
          ? 'UP_ERR_NOT_FOUND'
          : kind === 'refused'
            ? 'UP_ERR_TARGET_REFUSED'
            : 'UP_ERR_UNREACHABLE',
      message,
    );
  }
}

/** A tunnel the server accepted (the proxy reached the real server), not yet joined to a client. */
export interface OpenedTunnel {
  /** Joins `socket` to the tunnel, both ways, resumable across session drops like any tunnel. */
  carry(socket: net.Socket): void;
  /** The tunnel as a stream, for a client of our own (the HTTP proxy's requests in absolute form). */
  open(): Duplex;
  /** Gives the tunnel up (its client went away before it was joined). */
  cancel(): void;
}

export interface TunnelDialer {
  /** Opens a tunnel to the publication `name` on `port`; rejects with DialError. */
  dial(name: string, port: number): Promise<OpenedTunnel>;
}
