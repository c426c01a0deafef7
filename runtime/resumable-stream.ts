/**
 * One leg of a tunneled connection — the part between an endpoint and the tunnel server — made to
 * survive the loss of the HTTP/2 session that carries it (PROTOCOL.md "Resumption").
 *
 * Length: a little over 350 lines, kept as one file because it is one state machine (attached,
 * detached, ended) over one replay buffer, with the small budget and acknowledgement types it shares
 * with tunnel-table.ts.
 *
 * To the code on either side it is a plain Duplex that `splice()` joins to a socket or to the other leg.
 * Underneath, it writes into one HTTP/2 stream at a time and keeps what it wrote in a replay buffer until
 * the peer acknowledges it (`ack` on the control stream, counted in bytes since the tunnel began). When
 * the session drops, the leg detaches: it stops reading, goes on accepting writes into the replay buffer
 * up to its bound, and waits. When the endpoint is back, a new stream is attached with the peer's count
 * of what it received; the leg resends exactly the bytes past that count, and the peer does the same, so
 * the app sees a pause — never a reset, a lost byte or a repeated one. The same holds for the end of
 * stream: a leg's end counts as delivered only once the peer acknowledged it (`fin`).
 *
 * Memory is bounded: unacknowledged bytes never exceed REPLAY_LIMIT (the stream window) per leg, nor
 * its session's ReplayBudget over all its legs together, after which writes wait; and the stream's own
 * queue is held to RELAY_BUFFER as splice() does for any destination.
 */
import http2 from 'node:http2';
import { Duplex } from 'node:stream';
import { ProtocolError, TunnelResetError } from '../protocol/errors';
import { SESSION_WINDOW, STREAM_WINDOW } from './h2';
import { ignoreError, RELAY_BUFFER, RESET_GRACE_MS } from './splice';

/** Most bytes written but not yet acknowledged, per leg and direction: one stream window. */
export const REPLAY_LIMIT = STREAM_WINDOW;
/**
 * Received bytes that make an acknowledgement due at once; smaller counts wait ACK_DELAY_MS. A sixteenth
 * of the replay bound keeps the sender far from waiting, at about one small control line per MiB.
 */
export const ACK_BYTES = 1024 * 1024;
/** How long an acknowledgement of a few bytes may wait to be batched with others (ms). */
export const ACK_DELAY_MS = 50;

/** Most bytes written but not yet acknowledged over all the legs of one session: one session window. */
export const SESSION_REPLAY_LIMIT = SESSION_WINDOW;

/**
 * The unacknowledged bytes all legs of one session hold together. Without it a peer that reads its
 * tunnels but never acknowledges them would pin REPLAY_LIMIT per tunnel, with no bound on tunnels.
 */
export class ReplayBudget {
  used = 0;
  private readonly waiting = new Set<ResumableStream>();

  constructor(readonly limit = SESSION_REPLAY_LIMIT) {}

  get exhausted(): boolean {
    return this.used >= this.limit;
  }

  /** A leg waits for room: it is told once acknowledgements brought the total below the limit. */
  wait(leg: ResumableStream): void {
    this.waiting.add(leg);
  }

  take(n: number): void {
    this.used += n;
  }

  give(n: number): void {
    this.used -= n;
    if (this.waiting.size === 0 || this.exhausted) return;
    const legs = [...this.waiting];
    this.waiting.clear();
    for (const leg of legs) leg.release();
  }
}

/** Where a leg's acknowledgements go: batched by the owner onto its control stream. */
export interface AckSink {
  /** The leg received bytes (or its peer's end); `urgent` asks to send without waiting for more. */
  ackDue(leg: ResumableStream, urgent: boolean): void;
}

type WriteCallback = (error?: Error | null) => void;

const EMPTY = Buffer.alloc(0);

/** Whether the peer reset the stream (RST_STREAM(NO_ERROR) is how Node marks an ordinary end too). */
function wasReset(stream: http2.Http2Stream): boolean {
  return stream.rstCode !== undefined && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR;
}

/**
 * The carrying stream points back at its leg, so that one set of listener functions serves every leg:
 * per-leg closures (and `once` wrappers) were ~1 KiB of heap per idle tunnel on the server.
 */
const LEG = Symbol('underpass.leg');
type CarrierStream = http2.Http2Stream & { [LEG]?: ResumableStream | null };

function legOf(stream: http2.Http2Stream): ResumableStream | null {
  return (stream as CarrierStream)[LEG] ?? null;
}

function onStreamData(this: http2.Http2Stream, chunk: Buffer): void {
  legOf(this)?.handleStreamData(this, chunk);
}

function onStreamEnd(this: http2.Http2Stream): void {
  legOf(this)?.handleStreamEnd(this);
}

function onStreamClose(this: http2.Http2Stream): void {
  legOf(this)?.handleStreamClose(this);
}

function onStreamDrain(this: http2.Http2Stream): void {
  legOf(this)?.release();
}

export class ResumableStream extends Duplex {
  /** The tunnel's id, shared by both legs; null until the server named it. */
  id: string | null = null;
  /** Bytes received from the peer so far: what an acknowledgement or a resume states. */
  received = 0;
  /** The last count acknowledged to the peer. */
  acknowledged = 0;
  /** The peer's end of stream arrived. */
  peerEnded = false;
  /** Set on leaving for good: whether it was an abort (as opposed to an orderly end both ways). */
  failed = false;

  private stream: http2.Http2Stream | null = null;
  private session: http2.Http2Session | null = null;
  /** Set while the carrying stream's end waits to be told apart from a reset. */
  private endTimer: NodeJS.Timeout | null = null;
  /** Bytes written since the tunnel began; the replay buffer holds (acked, sent]. */
  private sent = 0;
  private acked = 0;
  /** Unacknowledged chunks, oldest first from `replayHead` (an index, so dropping one costs no shift). */
  private replay: Buffer[] = [];
  private replayHead = 0;
  private localEnded = false;
  private peerHasEnd = false;
  private blocked: WriteCallback | null = null;
  private finished: WriteCallback | null = null;
  sink: AckSink | null = null;
  private budget: ReplayBudget | null = null;

  /** `authority`: what a resuming CONNECT names (the pseudo name or publication and port). */
  constructor(readonly authority: string) {
    super({ allowHalfOpen: true });
  }

  /** Counts this leg's unacknowledged bytes against its session's budget from now on. */
  useBudget(budget: ReplayBudget): void {
    if (this.destroyed) return;
    this.budget?.give(this.sent - this.acked);
    this.budget = budget;
    budget.take(this.sent - this.acked);
  }

  /** Whether an HTTP/2 stream carries the leg now. */
  get attached(): boolean {
    return this.stream !== null;
  }

  /**
   * Carries the leg over `stream` from now on. `peerReceived` is the peer's count of bytes it has from
   * us; everything after it is sent again. Returns false (and aborts the leg) when the count is impossible.
   */
  attach(stream: http2.Http2Stream, peerReceived: number): boolean {
    if (this.destroyed) {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      return false;
    }
    this.detach(true);
    if (!(peerReceived >= this.acked && peerReceived <= this.sent)) {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      this.destroy(
        new ProtocolError(`the peer claims ${peerReceived} bytes of a tunnel that sent ${this.acked}–${this.sent}`),
      );
      return false;
    }
    this.trim(peerReceived);
    this.bind(stream);
    for (let i = this.replayHead; i < this.replay.length; i += 1) stream.write(this.replay[i]!);
    if (this.localEnded) stream.end();
    // Our acknowledgement of the peer's end may have been lost with the old session.
    if (this.peerEnded) this.sink?.ackDue(this, true);
    this.release();
    return true;
  }

  /** The peer acknowledged `n` bytes (and, with `fin`, our end of stream). */
  handleAck(n: number, fin: boolean): void {
    if (n > this.sent) {
      this.destroy(new ProtocolError(`the peer acknowledged ${n} bytes of a tunnel that sent ${this.sent}`));
      return;
    }
    if (n > this.acked) this.trim(n);
    if (fin && this.localEnded && n === this.sent) this.peerHasEnd = true;
    this.release();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: WriteCallback): void {
    // A small view of a large allocation would keep all of it alive while it waits for its ack.
    const kept = chunk.byteLength * 4 < chunk.buffer.byteLength ? Buffer.from(chunk) : chunk;
    this.replay.push(kept);
    this.sent += kept.length;
    this.budget?.take(kept.length);
    this.stream?.write(kept);
    if (this.mayWriteMore()) callback();
    else this.blocked = callback;
  }

  override _final(callback: WriteCallback): void {
    this.localEnded = true;
    this.stream?.end();
    this.finished = callback;
    this.release();
  }

  override _read(): void {
    if (this.stream?.isPaused() === true) this.stream.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const orderly = error === null && this.localEnded && this.peerEnded;
    this.failed = !orderly;
    const stream = this.stream;
    this.detach(false);
    // After an orderly end both ways the stream closes by itself; a reset then could cut off the peer's
    // last acknowledgement. Anything else is an abort the peer must see as one.
    if (stream && !orderly) stream.close(http2.constants.NGHTTP2_CANCEL);
    this.replay = [];
    this.replayHead = 0;
    this.blocked = null;
    const budget = this.budget;
    this.budget = null;
    budget?.give(this.sent - this.acked);
    callback(error);
  }

  /**
   * Whether a held write may go on. When the session's budget is what holds it, the leg also asks the
   * budget to call release() once acknowledgements free room (the one place a leg starts to wait on it).
   */
  private mayWriteMore(): boolean {
    if (this.budget?.exhausted === true) {
      this.budget.wait(this);
      return false;
    }
    return this.sent - this.acked < REPLAY_LIMIT && (this.stream === null || this.stream.writableLength < RELAY_BUFFER);
  }

  /** Lets a held write or the end go on once the bounds allow. */
  release(): void {
    if (this.blocked && this.mayWriteMore()) {
      const callback = this.blocked;
      this.blocked = null;
      callback();
    }
    if (this.finished && this.peerHasEnd) {
      const callback = this.finished;
      this.finished = null;
      callback();
    }
  }

  /** Drops the bytes the peer has from the front of the replay buffer. */
  private trim(n: number): void {
    let drop = n - this.acked;
    while (drop > 0) {
      const head = this.replay[this.replayHead]!;
      if (head.length <= drop) {
        this.replay[this.replayHead] = EMPTY;
        this.replayHead += 1;
        drop -= head.length;
      } else {
        this.replay[this.replayHead] = head.subarray(drop);
        drop = 0;
      }
    }
    const freed = n - this.acked;
    this.acked = n;
    if (this.replayHead === this.replay.length) {
      this.replay = [];
      this.replayHead = 0;
    } else if (this.replayHead >= 1024) {
      this.replay = this.replay.slice(this.replayHead);
      this.replayHead = 0;
    }
    // Last: the room freed may let other legs write, and this one, re-entering _write.
    this.budget?.give(freed);
  }

  private bind(stream: http2.Http2Stream): void {
    this.stream = stream;
    this.session = stream.session ?? null;
    (stream as CarrierStream)[LEG] = this;
    stream.on('data', onStreamData);
    stream.on('end', onStreamEnd);
    stream.on('close', onStreamClose);
    stream.on('drain', onStreamDrain);
    // 'error' stays handled after we let go: the stream may still report one then. (Nothing here
    // removes an 'error' listener, so one the owner added already does.)
    if (stream.listenerCount('error') === 0) stream.on('error', ignoreError);
    if (this.readableLength >= this.readableHighWaterMark) stream.pause();
  }

  // handleStreamData/End/Close and release() are called by the carrying stream's listeners above.

  /** Bytes from the carrying stream. */
  handleStreamData(stream: http2.Http2Stream, chunk: Buffer): void {
    if (this.peerEnded) return;
    this.received += chunk.length;
    if (!this.push(chunk)) stream.pause();
    this.sink?.ackDue(this, this.received - this.acknowledged >= ACK_BYTES);
  }

  /**
   * Node ends an HTTP/2 stream's readable side also when the peer reset it or the session died, and
   * learns which only a little later; an end counts once the stream closed or RESET_GRACE_MS passed.
   */
  handleStreamEnd(stream: http2.Http2Stream): void {
    this.endTimer = setTimeout(() => {
      this.endTimer = null;
      if (this.stream === stream && !this.sessionLost() && !wasReset(stream)) this.handlePeerEnd();
    }, RESET_GRACE_MS);
  }

  /** Lets go of the current stream; `cancel` resets it (it is being replaced). */
  private detach(cancel: boolean): void {
    const stream = this.stream;
    if (!stream) return;
    if (this.endTimer) clearTimeout(this.endTimer);
    this.endTimer = null;
    stream.off('data', onStreamData);
    stream.off('end', onStreamEnd);
    stream.off('close', onStreamClose);
    stream.off('drain', onStreamDrain);
    (stream as CarrierStream)[LEG] = null;
    this.stream = null;
    this.session = null;
    if (cancel) stream.close(http2.constants.NGHTTP2_CANCEL);
  }

  private sessionLost(): boolean {
    return this.session === null || this.session.destroyed || this.session.closed;
  }

  private handlePeerEnd(): void {
    if (this.peerEnded) return;
    this.peerEnded = true;
    this.push(null);
    this.sink?.ackDue(this, true);
  }

  /**
   * The stream closed. A lost session leaves the leg detached, waiting to be resumed; a reset from the
   * peer is an abort; a close after both ends is the end of stream the peer sent.
   */
  handleStreamClose(stream: http2.Http2Stream): void {
    if (this.stream !== stream) return;
    const lost = this.sessionLost();
    const ended = stream.readableEnded;
    this.detach(false);
    // Detached: the owner resumes it when its session is back, or aborts it when the grace period ends.
    if (lost) return;
    if (wasReset(stream)) {
      this.destroy(new TunnelResetError('the tunnel was reset by its far end'));
      return;
    }
    if (ended && this.localEnded) this.handlePeerEnd();
    else this.destroy(new ProtocolError('the far end stopped the tunnel before both sides ended it'));
  }
}
