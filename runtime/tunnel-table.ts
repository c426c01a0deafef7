/**
 * The resumable tunnels of one session, on either side of it: the server keeps one table per endpoint
 * session, each endpoint one for its own session. The table routes acknowledgements both ways (batched
 * onto the control stream, at most one write per ACK_DELAY_MS for trickles), and runs the grace period:
 * while the session is down its tunnels wait; when it is not back in time they are reset, and the apps
 * at both ends see ECONNRESET.
 */
import type { AckMessage, EndpointMessage } from '../protocol/control';
import { encodeControl } from '../protocol/control';
import { TunnelResetError } from '../protocol/errors';
import type { Logger } from './log';
import { ACK_DELAY_MS, type AckSink, ReplayBudget, type ResumableStream } from './resumable-stream';

export interface TunnelTableOptions {
  graceMs: number;
  /** Writes encoded control messages on the session's control stream, when it has one. */
  send: (bytes: Buffer) => void;
  logger: Logger;
  /** Runs when the grace period ended with the session still down. */
  onExpired?: () => void;
}

/** One 'close' listener for every leg (a closure and `once` wrapper per leg cost ~250 B each). */
function onLegClose(this: ResumableStream): void {
  if (this.sink instanceof TunnelTable) this.sink.handleLegClose(this);
}

export class TunnelTable implements AckSink {
  private readonly legs = new Map<string, ResumableStream>();
  private readonly due = new Set<ResumableStream>();
  private flushSoon: NodeJS.Immediate | null = null;
  private flushLater: NodeJS.Timeout | null = null;
  private grace: NodeJS.Timeout | null = null;
  /** Runs a grace period after a resume: legs the peer did not re-open by then are reset. */
  private stale: NodeJS.Timeout | null = null;
  /** Tunnels aborted here while the session was down; the peer learns of them once it is back. */
  private readonly abandoned = new Set<string>();
  private down = false;
  /** What the session's legs hold unacknowledged together. */
  private readonly budget = new ReplayBudget();

  constructor(private readonly options: TunnelTableOptions) {}

  get graceMs(): number {
    return this.options.graceMs;
  }

  get size(): number {
    return this.legs.size;
  }

  /** Whether tunnels are waiting for the session to come back. */
  get waiting(): boolean {
    return this.down && this.legs.size > 0;
  }

  get(id: string): ResumableStream | undefined {
    return this.legs.get(id);
  }

  /** Legs with no stream under them now: the ones a resumed session re-opens. */
  detached(): ResumableStream[] {
    return [...this.legs.values()].filter((leg) => !leg.attached);
  }

  add(id: string, leg: ResumableStream): void {
    leg.id = id;
    leg.sink = this;
    leg.useBudget(this.budget);
    this.legs.set(id, leg);
    leg.on('close', onLegClose);
    // Bytes that arrived before the tunnel had an id are owed an acknowledgement now.
    if (leg.received > leg.acknowledged || leg.peerEnded) this.ackDue(leg, true);
  }

  /** A leg of this table closed (called by its 'close' listener). */
  handleLegClose(leg: ResumableStream): void {
    const id = leg.id;
    if (id === null) return;
    // A leg that closed may still owe its last acknowledgement (of the peer's end): it stays due.
    if (this.legs.get(id) === leg) this.legs.delete(id);
    if (this.down && leg.failed) this.abandoned.add(id);
  }

  ackDue(leg: ResumableStream, urgent: boolean): void {
    this.due.add(leg);
    if (urgent) this.flushSoon ??= setImmediate(() => this.flush());
    else if (!this.flushLater) {
      this.flushLater = setTimeout(() => this.flush(), ACK_DELAY_MS);
      this.flushLater.unref();
    }
  }

  handleAck(message: AckMessage): void {
    this.legs.get(message.id)?.handleAck(message.n, message.fin === true);
  }

  /** The peer aborted this tunnel while the session was down. */
  handleReset(id: string): void {
    this.legs.get(id)?.destroy(new TunnelResetError('the far end reset the tunnel while the session was down'));
  }

  /** The session's link is gone: tunnels wait for it up to the grace period. */
  suspend(): void {
    this.down = true;
    if (this.stale) clearTimeout(this.stale);
    this.stale = null;
    if (this.grace) return;
    this.grace = setTimeout(() => this.expire(), this.options.graceMs);
    this.grace.unref();
  }

  /** The session is back: the grace period stops; answers what the peer must be told to reset. */
  resume(): EndpointMessage[] {
    this.down = false;
    if (this.grace) clearTimeout(this.grace);
    this.grace = null;
    // A tunnel that ended or was reset at the far end while the link was failing unnoticed is never
    // re-opened, and the news of its end was lost with the link: without a deadline its leg would wait
    // for ever, with its replay buffer and the other leg it is spliced to. Legs still attached to the
    // old connection now may detach later, so the deadline is set whenever there are legs at all.
    if (this.stale) clearTimeout(this.stale);
    this.stale = null;
    if (this.legs.size > 0) {
      this.stale = setTimeout(() => this.resetStale(), this.options.graceMs);
      this.stale.unref();
    }
    const resets = [...this.abandoned].map((id): EndpointMessage => ({ type: 'reset', id }));
    this.abandoned.clear();
    return resets;
  }

  /** Resets every tunnel (the peer no longer knows the session). */
  abortAll(reason: string): void {
    this.abandoned.clear();
    for (const leg of [...this.legs.values()]) leg.destroy(new TunnelResetError(reason));
  }

  private expire(): void {
    this.grace = null;
    const waiting = this.detached();
    if (waiting.length > 0)
      this.options.logger.warn(
        `the session did not come back within ${this.options.graceMs / 1000} s: resetting ${waiting.length} tunnel(s)`,
      );
    for (const leg of waiting)
      leg.destroy(new TunnelResetError('the session did not come back within the grace period'));
    this.options.onExpired?.();
  }

  private resetStale(): void {
    this.stale = null;
    const stale = this.detached();
    if (stale.length > 0)
      this.options.logger.warn(
        `${stale.length} tunnel(s) were not re-opened within ${this.options.graceMs / 1000} s of the session's return: resetting them`,
      );
    for (const leg of stale)
      leg.destroy(new TunnelResetError('the tunnel was not re-opened after its session came back'));
  }

  private flush(): void {
    if (this.flushSoon) clearImmediate(this.flushSoon);
    if (this.flushLater) clearTimeout(this.flushLater);
    this.flushSoon = null;
    this.flushLater = null;
    const acks: Buffer[] = [];
    for (const leg of this.due) {
      if (leg.id === null) continue;
      const ack: AckMessage = leg.peerEnded
        ? { type: 'ack', id: leg.id, n: leg.received, fin: true }
        : { type: 'ack', id: leg.id, n: leg.received };
      leg.acknowledged = leg.received;
      acks.push(encodeControl(ack));
    }
    this.due.clear();
    // While the session is down acknowledgements have nowhere to go; a resume exchanges the counts.
    if (acks.length > 0 && !this.down) this.options.send(acks.length === 1 ? acks[0]! : Buffer.concat(acks));
  }
}
