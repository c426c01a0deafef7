/**
 * Claims: the fast way a listener learns that a connection is its own user's (README "Security").
 *
 * Looking the client up in /proc/net/tcp (peer-owner.ts) walks every TCP socket of the network namespace,
 * milliseconds per accept on a busy machine. But a hooked app already speaks to the redirector over an
 * IPC socket only its user can open, so right after its connect() returns, the hook names the connection
 * it just opened — its four ends — in a `claim` request. The listener admits an accepted socket whose ends
 * were claimed at once; the /proc check remains the fallback for clients that claim nothing (not hooked,
 * or an older hook) and the judge of other users' connections.
 *
 * The two events race: for a blocking connect the accept always comes first (the claim is sent once the
 * handshake is done), for a non-blocking one either may. So a claim that finds an accept waiting for it
 * wakes that accept, and one that finds none is kept until its accept comes, for CLAIM_TTL_MS at most.
 *
 * A claim admits only what its sender, the redirector's own user, could let through anyway (it could relay
 * any connection itself). What must not happen is a claim outliving its connection and admitting a later
 * one with the same four ends. Claims are therefore used once, live a few seconds, and are kept only for
 * listeners that exist; a waiting accept takes a claim the moment it arrives, and keeps waiting (to spend a
 * late claim) until its connection closes, even when the /proc check admitted it first. The table is bounded: past
 * MAX_CLAIMS the oldest claim goes, and its connection, if it still comes, is checked through /proc.
 */
import { unmapIPv4 } from '../protocol/ipc-wire';
import type { ConnectionEnds } from './peer-owner';

/**
 * How long an accepted connection that nobody claimed yet waits for its claim before the /proc check
 * (ms). A hooked blocking connect claims right after the handshake, so its accept always waits: here
 * the claim follows in well under a millisecond on an idle machine and within tens of milliseconds when
 * two cores are shared by every daemon and the client. Two hundred leaves room for that; it is the
 * price an unhooked client of the redirector's user pays on top of the /proc check, and a claim that
 * comes later still cuts that check short.
 */
export const CLAIM_WAIT_MS = 200;

/** How long a claim waits for its accept (ms): covers the SYN-ACK retries (1 s, then 3 s) of a full backlog. */
export const CLAIM_TTL_MS = 5_000;

/**
 * Claims kept at most. At one claim per connection that is 8192 connections opened within CLAIM_TTL_MS,
 * above the 1 700 tunnels/s measured here, in about 1 MiB.
 */
export const MAX_CLAIMS = 8192;

export interface ClaimTableOptions {
  ttlMs?: number;
  maxClaims?: number;
  /** A monotonic clock in ms; tests pass their own. */
  now?: () => number;
}

/** The key of a connection: the client's end, then the listener's. */
export function claimKey(ends: ConnectionEnds): string {
  return `${unmapIPv4(ends.peerAddress)}:${ends.peerPort}>${unmapIPv4(ends.localAddress)}:${ends.localPort}`;
}

export class ClaimTable {
  /** Key → expiry; in insertion order, which is expiry order since every claim lives the same time. */
  private readonly claims = new Map<string, number>();
  private readonly waiters = new Map<string, () => void>();
  private readonly ttlMs: number;
  private readonly maxClaims: number;
  private readonly now: () => number;

  constructor(options: ClaimTableOptions = {}) {
    this.ttlMs = options.ttlMs ?? CLAIM_TTL_MS;
    this.maxClaims = options.maxClaims ?? MAX_CLAIMS;
    this.now = options.now ?? ((): number => performance.now());
  }

  /** Claims kept now (expired ones included until the next `add`). */
  get size(): number {
    return this.claims.size;
  }

  /**
   * Records that the connection with these ends belongs to the redirector's user. Returns 'woke' when an
   * accept was waiting for it (the claim is then spent), 'kept' otherwise.
   */
  add(ends: ConnectionEnds): 'woke' | 'kept' {
    const key = claimKey(ends);
    const waiter = this.waiters.get(key);
    if (waiter !== undefined) {
      this.waiters.delete(key);
      waiter();
      return 'woke';
    }
    const now = this.now();
    for (const [oldest, expires] of this.claims) {
      if (expires > now && this.claims.size < this.maxClaims) break;
      this.claims.delete(oldest);
    }
    // Delete first, so that a repeated claim moves to the end and the order stays the expiry order.
    this.claims.delete(key);
    this.claims.set(key, now + this.ttlMs);
    return 'kept';
  }

  /** True, and the claim spent, when a live claim names these ends. */
  take(ends: ConnectionEnds): boolean {
    const key = claimKey(ends);
    const expires = this.claims.get(key);
    if (expires === undefined) return false;
    this.claims.delete(key);
    return expires > this.now();
  }

  /**
   * Calls `onClaimed` when a claim for these ends arrives (once, and not after the returned function was
   * called). One accept waits per set of ends: the kernel never has two live connections with the same.
   */
  wait(ends: ConnectionEnds, onClaimed: () => void): () => void {
    const key = claimKey(ends);
    this.waiters.set(key, onClaimed);
    return () => {
      if (this.waiters.get(key) === onClaimed) this.waiters.delete(key);
    };
  }
}
