/**
 * Dials a TCP destination for a tunnel — the service proxy's target, or a forwarding server's plain
 * destination — the one way both need: half-close kept (the tunnel carries each direction's end), no
 * Nagle delay, a deadline, and exactly one of two outcomes. A failure after bytes moved is the tunnel's
 * business (the splice carries it as a reset), not a failed dial.
 */
import net from 'node:net';
import { ignoreError } from './splice';

export interface DialOutcome {
  /** The socket is connected; its errors from now on are the caller's (a no-op listener holds them meanwhile). */
  connected: (socket: net.Socket) => void;
  /** The connection could not be made: `reason` is its errno code (ETIMEDOUT for the deadline). */
  failed: (reason: string) => void;
}

/** `lookup`: how a host name is resolved (a LookupCache's, for the proxy's targets); dns.lookup by default. */
export function dialTarget(
  host: string,
  port: number,
  timeoutMs: number,
  outcome: DialOutcome,
  lookup?: net.LookupFunction,
): net.Socket {
  const socket = net.connect({ host, port, allowHalfOpen: true, noDelay: true, ...(lookup ? { lookup } : {}) });
  const timer = setTimeout(
    () => socket.destroy(Object.assign(new Error('ETIMEDOUT'), { code: 'ETIMEDOUT' })),
    timeoutMs,
  );
  const onError = (e: NodeJS.ErrnoException): void => {
    clearTimeout(timer);
    outcome.failed(e.code ?? e.message);
  };
  socket.once('error', onError);
  socket.once('connect', () => {
    clearTimeout(timer);
    // Nothing of the dial stays with the open connection: a listener holding these closures (and,
    // through them, the timer and the caller's outcome) was ~0.8 KiB per idle tunnel on the proxy.
    socket.off('error', onError);
    socket.on('error', ignoreError);
    outcome.connected(socket);
  });
  return socket;
}
