/**
 * What this process learnt of forwarding mode from the redirector's replies (issue 15; the decisions are
 * the redirector's, redirector/hook-forwarding.ts):
 * - which pseudo addresses stand for forwarded names (`forward` in a resolve or reverse reply): a
 *   connect to one asks the redirector first even when non-blocking, so that the tunnel server's refusal
 *   is the connect's own error, said in one line, rather than a reset nobody can explain;
 * - which pseudo address stands in for each forwarded IPv4 address (`via` in an open-tunnel reply): the
 *   connect goes there, and getpeername() answers the address the app asked for.
 * The destinations themselves (which names and networks to hand over) are PseudoSpace's, from hello.
 * Kept for the life of the process (a forked child inherits it), as listen-ports.ts keeps its own.
 */
import { formatIPv4, tryParseIPv4 } from '../../protocol/ipc-wire';
import { setPeersRewritten } from './gates';

/** Pseudo addresses of forwarded names, dotted. */
const forwardedNames = new Set<string>();
/** Forwarded address → the pseudo address standing in for it, and back. */
const standIns = new Map<string, string>();
const standsFor = new Map<string, string>();

/** Records what a reply about the pseudo `address` said of forwarding (`forward`, absent: a publication). */
export function noteForwarded(address: string, forward: boolean | undefined): void {
  if (forward === true) forwardedNames.add(address);
  else forwardedNames.delete(address);
}

/** True when `address` is a forwarded name's: its connects ask first. */
export function isForwardedName(address: string): boolean {
  return forwardedNames.has(address);
}

/** Records that `via` (a reply's, checked: it is written into a sockaddr) stands in for `forwarded`. */
export function noteStandIn(via: string, forwarded: string): void {
  const value = tryParseIPv4(via);
  if (value === null) return;
  const standIn = formatIPv4(value);
  standIns.set(forwarded, standIn);
  standsFor.set(standIn, forwarded);
  setPeersRewritten();
}

/** The pseudo address a connect to the forwarded `address` goes to, or null when none stands in for it. */
export function tryStandInOf(address: string): string | null {
  return standIns.get(address) ?? null;
}

/** The forwarded address the pseudo `standIn` stands for, or null. */
export function tryForwardedAddressOf(standIn: string): string | null {
  return standsFor.get(standIn) ?? null;
}
