/**
 * Dials a TCP destination for a tunnel — the service proxy's target, or a forwarding server's plain
 * destination — the one way both need: half-close kept (the tunnel carries each direction's end), no
 * Nagle delay, a deadline, and exactly one of two outcomes. A failure after bytes moved is the tunnel's
 * business (the splice carries it as a reset), not a failed dial.
 */
import net from 'node:net';

export interface DialOutcome {
  connected: (socket: net.Socket) => void;
  /** The connection could not be made: `reason` is its errno code (ETIMEDOUT for the deadline). */
  failed: (reason: string) => void;
}

export function dialTarget(host: string, port: number, timeoutMs: number, outcome: DialOutcome): net.Socket {
  const socket = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
  const timer = setTimeout(
    () => socket.destroy(Object.assign(new Error('ETIMEDOUT'), { code: 'ETIMEDOUT' })),
    timeoutMs,
  );
  socket.once('error', (e: NodeJS.ErrnoException) => {
    clearTimeout(timer);
    if (socket.connecting || socket.bytesRead + socket.bytesWritten === 0) outcome.failed(e.code ?? e.message);
  });
  socket.once('connect', () => {
    clearTimeout(timer);
    outcome.connected(socket);
  });
  return socket;
}
