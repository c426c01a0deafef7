/**
 * Who may use the redirector's listeners: only its own user's processes (and root's). A connection its
 * hook claimed over IPC (claims.ts) is admitted at once, or as soon as the claim arrives; one nobody
 * claimed within the claim wait goes through the /proc owner check (peer-owner.ts), which a claim
 * arriving meanwhile still cuts short. Until then the accepted socket stays paused.
 */
import type net from 'node:net';
import type { Logger } from '../runtime/log';
import { ClaimTable } from './claims';
import { PeerOwners, type ConnectionEnds } from './peer-owner';

export class Admission {
  private readonly peerOwners = new PeerOwners();
  private readonly claims = new ClaimTable();

  constructor(
    /** How long an unclaimed connection waits for its claim before the /proc check (ms). */
    private readonly claimWaitMs: number,
    private readonly log: Logger,
  ) {}

  /** A hook's word that the connection with these four ends is its process's. */
  claim(ends: ConnectionEnds): void {
    this.claims.add(ends);
  }

  /**
   * Runs `onAdmitted` for a connection its hook claimed (claims.ts), at once or as soon as the claim
   * arrives; one nobody claimed within claimWaitMs goes through the /proc owner check, which a claim
   * arriving meanwhile still cuts short. `onWaiting` runs first, synchronously, when the connection has
   * to wait: the caller may prepare what needs no admission meanwhile. `local`, the listener's own
   * address and port when the caller knows them, spares asking the socket (Node keeps what it answers
   * with the socket for its life).
   */
  admit(
    socket: net.Socket,
    onAdmitted: () => void,
    onWaiting?: () => void,
    local?: { address: string; port: number },
  ): void {
    const ends: ConnectionEnds = {
      peerAddress: socket.remoteAddress ?? '',
      peerPort: socket.remotePort ?? -1,
      localAddress: local?.address ?? socket.localAddress ?? '',
      localPort: local?.port ?? socket.localPort ?? -1,
    };
    if (this.claims.take(ends)) {
      this.logAdmitted(ends, 'claim, made before the accept');
      onAdmitted();
      return;
    }
    onWaiting?.();
    const accepted = performance.now();
    let undecided = true;
    const decide = (how: 'claim' | 'owner check'): void => {
      if (!undecided || socket.destroyed) return;
      undecided = false;
      clearTimeout(timer);
      // A claim spent here leaves nothing to wait for, and nothing of the wait stays with the open
      // connection (its closures were ~1 KiB per idle tunnel).
      if (how === 'claim') socket.off('close', onClose);
      this.logAdmitted(ends, `${how} after ${(performance.now() - accepted).toFixed(1)} ms`);
      onAdmitted();
    };
    const stopWaiting = this.claims.wait(ends, () => decide('claim'));
    const timer = setTimeout(
      () =>
        this.peerOwners.admit(
          socket,
          this.log,
          () => decide('owner check'),
          () => undecided,
        ),
      this.claimWaitMs,
    );
    timer.unref();
    // After the owner check, the wait for a claim lasts as long as the connection: a claim that comes
    // later is then spent here (decide ignores it) instead of being kept for CLAIM_TTL_MS, where it
    // could admit a later connection with the same four ends.
    const onClose = (): void => {
      undecided = false;
      clearTimeout(timer);
      stopWaiting();
    };
    socket.once('close', onClose);
  }

  private logAdmitted(ends: ConnectionEnds, how: string): void {
    if (this.log.isDebugEnabled())
      this.log.debug(
        `admitted ${ends.peerAddress}:${ends.peerPort} to ${ends.localAddress}:${ends.localPort} by ${how}`,
      );
  }
}
