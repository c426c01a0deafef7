/**
 * Joins two byte streams into one virtual TCP connection: bytes both ways with backpressure (the source
 * pauses while the destination holds RELAY_BUFFER unflushed bytes), a half-close on one side carried to the other as
 * end-of-stream, and an abort on either side carried to the other as an abort: a TCP RST for a socket,
 * RST_STREAM for an HTTP/2 stream. An app therefore sees a reset where the real server reset, and an
 * orderly close where it closed.
 */
import http2 from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';

/**
 * A stream's 'error' listener where another part reports the error (a splice, a pending request's
 * answer, a 'close'): Node would throw an unheard one. One function, not a closure per stream.
 */
export function ignoreError(): void {}

/** Counts bytes as they are relayed (metrics), each chunk as it passes. */
export interface SpliceMeter {
  aToB(bytes: number): void;
  bToA(bytes: number): void;
}

export interface SpliceResult {
  /** Bytes moved a → b and b → a. */
  aToB: number;
  bToA: number;
  /** Set when one side aborted rather than closing in order. */
  error?: Error;
}

/** Aborts a stream the way its transport spells it: TCP RST, or RST_STREAM(CANCEL); a TLS socket just closes. */
export function abort(stream: Duplex): void {
  if (stream.destroyed) return;
  // A TLS socket's handle is TLS's own, which cannot send a TCP reset (Node throws): closing is the nearest.
  if (stream instanceof TLSSocket) stream.destroy();
  else if (stream instanceof net.Socket) stream.resetAndDestroy();
  else if (isHttp2Stream(stream)) stream.close(http2.constants.NGHTTP2_CANCEL);
  else stream.destroy();
}

function isHttp2Stream(stream: Duplex): stream is http2.Http2Stream {
  return (
    typeof (stream as Partial<http2.Http2Stream>).rstCode !== 'undefined' ||
    typeof (stream as Partial<http2.Http2Stream>).aborted === 'boolean'
  );
}
// (A ResumableStream is a plain Duplex here: it settles ends and resets of its streams itself.)

/**
 * Whether a stream ended abnormally. Node ends an HTTP/2 stream's readable side even when the peer
 * reset it, so for those the reset code decides, not `readableEnded`.
 */
function wasAborted(stream: Duplex): boolean {
  // RST_STREAM(NO_ERROR) is the peer declining further data after its own complete answer, not a reset.
  if (isHttp2Stream(stream)) return stream.rstCode !== undefined && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR;
  return !stream.readableEnded;
}

/**
 * Bytes one direction may have written but not yet flushed before its source pauses. Larger than the
 * streams' 16 KiB default so that a relay hop keeps several TLS records and HTTP/2 frames in flight
 * instead of stopping after each one; still a fixed bound per direction.
 */
export const RELAY_BUFFER = 1024 * 1024;

/** How long an HTTP/2 stream's end waits to be told apart from a reset (ms). */
export const RESET_GRACE_MS = 20;

/**
 * A splice's state. Each stream points back at its splice, so that one set of listener functions serves
 * every splice: per-splice closures (and their contexts) were ~1 KiB of heap per idle tunnel.
 */
class Splice {
  readonly result: SpliceResult = { aToB: 0, bToA: 0 };
  /** Whether a write into a (b) is corked until the next turn of the event loop. */
  corkedA = false;
  corkedB = false;
  private closed = 0;
  private finished = false;

  constructor(
    readonly a: Duplex,
    readonly b: Duplex,
    readonly limit: number,
    private readonly onDone: ((result: SpliceResult) => void) | undefined,
    private readonly meter: SpliceMeter | undefined,
  ) {}

  other(stream: Duplex): Duplex {
    return stream === this.a ? this.b : this.a;
  }

  /** Copies a chunk src → the other side, pausing src while the other holds `limit` unflushed bytes. */
  handleData(src: Duplex, chunk: Buffer): void {
    const toB = src === this.a;
    const dst = toB ? this.b : this.a;
    if (toB) {
      this.result.aToB += chunk.length;
      this.meter?.aToB(chunk.length);
    } else {
      this.result.bToA += chunk.length;
      this.meter?.bToA(chunk.length);
    }
    // Chunks that arrive in one turn of the event loop leave a socket in one writev(2): on a fast local
    // hop the per-call cost of write(2), not the bytes, is what a relay spends its CPU on.
    if (dst instanceof net.Socket && !(toB ? this.corkedB : this.corkedA)) {
      if (toB) this.corkedB = true;
      else this.corkedA = true;
      dst.cork();
      setImmediate(uncorkLater, this, dst);
    }
    if (!dst.write(chunk) && dst.writableLength >= this.limit) src.pause();
  }

  /** src ended: the other side's writing half ends, once it is sure the end was not an abort. */
  handleEnd(src: Duplex): void {
    const dst = this.other(src);
    if (!isHttp2Stream(src)) {
      dst.end();
      return;
    }
    // Node ends an HTTP/2 stream's readable side also when the peer reset it, and learns the reset
    // code only a little later, locally (no network round trip is involved). So the end is passed on
    // once the stream closed or RESET_GRACE_MS passed, and only when it was an orderly one.
    const decide = (): void => {
      clearTimeout(timer);
      src.off('close', decide);
      if (!wasAborted(src)) dst.end();
    };
    const timer = setTimeout(decide, RESET_GRACE_MS);
    src.on('close', decide);
  }

  handleError(error: Error): void {
    this.result.error ??= error;
  }

  /**
   * A side that closes before its reading half ended was aborted (reset, RST_STREAM, error): abort the
   * other. A side that ended in order has already ended the other's writing half through handleEnd().
   */
  handleClose(self: Duplex): void {
    if (wasAborted(self) || this.result.error !== undefined) {
      this.result.error ??= new Error('aborted');
      abort(this.other(self));
    }
    this.closed += 1;
    if (this.closed === 2 && !this.finished) {
      this.finished = true;
      this.onDone?.(this.result);
    }
  }
}

const SPLICE = Symbol('underpass.splice');
type Spliced = Duplex & { [SPLICE]?: Splice };

function spliceOf(stream: Duplex): Splice | undefined {
  return (stream as Spliced)[SPLICE];
}

function uncorkLater(splice: Splice, dst: Duplex): void {
  if (dst === splice.a) splice.corkedA = false;
  else splice.corkedB = false;
  dst.uncork();
}

function onData(this: Duplex, chunk: Buffer): void {
  spliceOf(this)?.handleData(this, chunk);
}

/** The destination drained: its source may go on. */
function onDrain(this: Duplex): void {
  const splice = spliceOf(this);
  splice?.other(this).resume();
}

// 'end' and 'close' come at most once per stream: plain listeners spare a `once` wrapper (~150 B) each.
function onEnd(this: Duplex): void {
  spliceOf(this)?.handleEnd(this);
}

function onError(this: Duplex, error: Error): void {
  spliceOf(this)?.handleError(error);
}

function onClose(this: Duplex): void {
  spliceOf(this)?.handleClose(this);
}

/** Relays src → dst (the listeners on src, and dst's 'drain'). */
function relay(src: Duplex, dst: Duplex): void {
  src.on('data', onData);
  dst.on('drain', onDrain);
  src.on('end', onEnd);
  // A 'data' listener does not start a stream that was explicitly paused (pauseOnConnect does that).
  src.resume();
}

/** Joins a and b (each may be in one splice only); `onDone` runs once both have closed. */
export function splice(
  a: Duplex,
  b: Duplex,
  onDone?: (result: SpliceResult) => void,
  limit = RELAY_BUFFER,
  meter?: SpliceMeter,
): void {
  const state = new Splice(a, b, limit, onDone, meter);
  (a as Spliced)[SPLICE] = state;
  (b as Spliced)[SPLICE] = state;
  relay(a, b);
  relay(b, a);
  a.on('error', onError);
  b.on('error', onError);
  a.on('close', onClose);
  b.on('close', onClose);
}
