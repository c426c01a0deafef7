/**
 * A plain listener on a loopback IPv4 address for clients the hook never entered: the SOCKS5 and HTTP
 * CONNECT listeners of the redirector and `underpass forward`'s port (issue 12). Any local user can reach
 * a loopback port, so each accepted socket stays paused — its first bytes waiting in the kernel — until
 * peer-owner.ts has read its owner from /proc: only the listener's own user and root get through, as at
 * the pseudo listeners (README, Security). There is no hook here to claim a connection, so every one
 * takes the /proc check.
 *
 * Why IPv4 loopback only: the owner check reads /proc/net/tcp{,6} rows of IPv4 endpoints, and a client on
 * another machine has no row at all; a listener anywhere else could only refuse everyone.
 */
import net from 'node:net';
import { ConfigError } from '../protocol/errors';
import { tryParseHostPort } from '../protocol/names';
import type { Logger } from '../runtime/log';
import { PeerOwners } from './peer-owner';

/** `HOST:PORT` of a loopback listener, checked: 127.0.0.0/8 only. Throws ConfigError naming `flag`. */
export function parseLoopbackAddress(input: string, flag: string): { host: string; port: number } {
  const parsed = tryParseHostPort(input);
  if (parsed === null || !net.isIPv4(parsed.host) || !parsed.host.startsWith('127.')) {
    throw new ConfigError(
      `${flag} '${input}' must be a loopback IPv4 HOST:PORT such as 127.0.0.1:1080 (only this machine's own user may use it)`,
    );
  }
  return parsed;
}

export interface LoopbackListenerOptions {
  host: string;
  port: number;
  /** What the listener is, for log lines and errors: `SOCKS5 listener`, `forward`. */
  label: string;
  logger: Logger;
  /** Runs for each admitted connection, with the socket still paused. */
  onConnection: (socket: net.Socket) => void;
  /** The owner check; one per listener unless given. */
  owners?: PeerOwners;
}

/** Listens on a loopback HOST:PORT and hands over each connection of the listener's user, paused. */
export class LoopbackListener {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly owners: PeerOwners;

  constructor(private readonly options: LoopbackListenerOptions) {
    this.owners = options.owners ?? new PeerOwners();
    this.server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true });
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      socket.on('error', () => undefined);
      this.owners.admit(socket, options.logger, () => options.onConnection(socket));
    });
  }

  get address(): string {
    return `${this.options.host}:${this.options.port}`;
  }

  /** Starts listening; rejects with ConfigError (one line with the fix) when the port is taken. */
  start(): Promise<net.AddressInfo> {
    const { host, port, label } = this.options;
    return new Promise((resolve, reject) => {
      this.server.once('error', (e: NodeJS.ErrnoException) => {
        const why = e.code === 'EADDRINUSE' ? 'another program holds it' : (e.code ?? e.message);
        reject(new ConfigError(`cannot listen on ${host}:${port} for the ${label} (${why}): choose another port`));
      });
      this.server.listen({ host, port, exclusive: true }, () => {
        // Past the start, an error (an accept failing for want of descriptors) is logged, never thrown.
        this.server.on('error', (e) => this.options.logger.warn(`${label} on ${host}:${port}: ${e.message}`));
        resolve(this.server.address() as net.AddressInfo);
      });
    });
  }

  stop(): void {
    this.server.close();
    for (const socket of this.sockets) socket.destroy();
  }
}
