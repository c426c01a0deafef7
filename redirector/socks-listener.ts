/**
 * SOCKS5 with remote names (`curl --socks5-hostname`, `socks5h://`, browsers, anything with proxy
 * settings; issue 12): the client names `NAME:PORT`, and a pseudo name under the zone goes through the
 * tunnel, opened in-process by the redirector (tunnel-dialer.ts). Every other destination is refused
 * with "connection not allowed by ruleset": this is no general-purpose proxy. An IPv4 destination that
 * is a pseudo address (a client that resolved by itself, through the DNS responder) stands for its name.
 *
 * The framing is @pondwader/socks5-server's (pinned; TypeScript, no dependencies; handshake, CONNECT
 * and 10-byte replies with any status). Around it: the loopback listener's owner check before the
 * package reads a byte, a deadline for the handshake (the package has none), and the bytes a client
 * may send before the grant kept for the tunnel (the package resumes the socket before its handler's
 * answer).
 */
import type net from 'node:net';
import { Socks5Server } from '@pondwader/socks5-server';
import type { Logger } from '../runtime/log';
import { DialError, type DialFailure, type TunnelDialer } from './tunnel-dialer';

type ConnectionHandler = Socks5Server['connectionHandler'];
type SocksStatus = Parameters<Parameters<ConnectionHandler>[1]>[0];

/** How long a client may take over its greeting and request (ms). */
const HANDSHAKE_MS = 10_000;

const STATUS_OF: Record<DialFailure, SocksStatus> = {
  'outside-zone': 'CONNECTION_NOT_ALLOWED',
  'no-such-name': 'HOST_UNREACHABLE',
  refused: 'CONNECTION_REFUSED',
  unavailable: 'GENERAL_FAILURE',
};

/**
 * What a loopback listener (loopback-listener.ts) does with each admitted connection to be a SOCKS5
 * proxy: the package reads the handshake, and the redirector dials the destination.
 */
export function socksConnections(dialer: TunnelDialer, logger: Logger): (socket: net.Socket) => void {
  const proxy = new SocksProxy(dialer, logger);
  return (socket) => proxy.handleSocket(socket);
}

class SocksProxy {
  private readonly socks = new Socks5Server();

  constructor(
    private readonly dialer: TunnelDialer,
    private readonly logger: Logger,
  ) {
    this.socks.setConnectionHandler((connection, sendStatus) => this.handleConnect(connection, sendStatus));
  }

  handleSocket(socket: net.Socket): void {
    socket.setTimeout(HANDSHAKE_MS, () => socket.destroy());
    this.socks._handleConnection(socket);
  }

  private handleConnect(connection: Parameters<ConnectionHandler>[0], sendStatus: (status: SocksStatus) => void): void {
    const socket = connection.socket as net.Socket;
    socket.setTimeout(0);
    const destination = `${connection.destAddress}:${connection.destPort}`;
    // The package resumes the socket once this returns: what arrives before the grant waits here.
    const early: Buffer[] = [];
    const keep = (chunk: Buffer): void => void early.push(chunk);
    socket.on('data', keep);
    this.dialer.dial(connection.destAddress, connection.destPort).then(
      (tunnel) => {
        socket.off('data', keep);
        if (socket.destroyed) {
          tunnel.cancel();
          return;
        }
        socket.pause();
        sendStatus('REQUEST_GRANTED');
        if (early.length > 0) socket.unshift(Buffer.concat(early));
        tunnel.carry(socket);
      },
      (e: unknown) => {
        socket.off('data', keep);
        const kind = e instanceof DialError ? e.kind : 'unavailable';
        this.logger.info(`SOCKS5: refused ${destination}: ${e instanceof Error ? e.message : String(e)}`);
        if (!socket.destroyed) sendStatus(STATUS_OF[kind]);
      },
    );
  }
}
