/**
 * Where this process's connects to a pseudo address must go (issue 12, "a local server on the same
 * port").
 *
 * The redirector listens on the pseudo address and the published port, except when another program holds
 * that port on every local address (or it is privileged): then its listener is on another port of the
 * same pseudo address, and its replies say so (`moved`, protocol/ipc.ts). The hook sends connect() there,
 * and getpeername() on such a socket answers the published port again, so the app sees only what it
 * asked for.
 *
 * What the replies said is kept here per pseudo address, for the life of the process (a forked child
 * inherits it): a resolve, a blocking connect and a reverse lookup each refresh it, and a non-blocking
 * connect, which asks the redirector nothing before it returns, reads it. An address it never heard of
 * (the app got the address some other way than a lookup in this process) costs that connect one reverse
 * request, once. The native getpeername gate enters JavaScript only once some listener is known to have
 * moved (gates.ts).
 */
import type { MovedPort } from '../../protocol/ipc';
import { setPeersRewritten } from './gates';

/** By pseudo address (dotted quad): where its listener moved, or null when it sits on the published port. */
const known = new Map<string, MovedPort | null>();

/** Records what a reply about `address` said: `moved`, or nothing when its listener did not move. */
export function noteListener(address: string, moved: MovedPort | undefined): void {
  const entry = isMovedPort(moved) ? { port: moved.port, listenPort: moved.listenPort } : null;
  known.set(address, entry);
  if (entry !== null) setPeersRewritten();
}

/** True once `address` was noted, whether its listener moved or not. */
export function isKnown(address: string): boolean {
  return known.has(address);
}

/** The port a connect() to `address:port` must use: the listener's, when it moved; else `port`. */
export function listenPortOf(address: string, port: number): number {
  const moved = known.get(address);
  return moved !== null && moved !== undefined && moved.port === port ? moved.listenPort : port;
}

/** The published port a socket connected to `address:listenPort` stands for, or null when it did not move. */
export function tryPublishedPortOf(address: string, listenPort: number): number | null {
  const moved = known.get(address);
  return moved !== null && moved !== undefined && moved.listenPort === listenPort ? moved.port : null;
}

/** A reply's `moved`, checked: the redirector is trusted, but a bad port would be written into a sockaddr. */
function isMovedPort(value: unknown): value is MovedPort {
  if (typeof value !== 'object' || value === null) return false;
  const { port, listenPort } = value as Partial<MovedPort>;
  return isPort(port) && isPort(listenPort);
}

function isPort(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value > 0 && value <= 0xffff;
}
