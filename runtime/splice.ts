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

export interface SpliceResult {
  /** Bytes moved a → b and b → a. */
  aToB: number;
  bToA: number;
  /** Set when one side aborted rather than closing in order. */
  error?: Error;
}

/** Aborts a stream the way its transport spells it: TCP RST, or RST_STREAM(CANCEL). */
export function abort(stream: Duplex): void {
  if (stream.destroyed) return;
  if (stream instanceof net.Socket) stream.resetAndDestroy();
  else if (isHttp2Stream(stream)) stream.close(http2.constants.NGHTTP2_CANCEL);
  else stream.destroy();
}

function isHttp2Stream(stream: Duplex): stream is http2.Http2Stream {
  return typeof (stream as Partial<http2.Http2Stream>).rstCode !== 'undefined' || typeof (stream as Partial<http2.Http2Stream>).aborted === 'boolean';
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

/** Copies src → dst with backpressure at `limit` buffered bytes; ends dst when src ends. */
function relay(src: Duplex, dst: Duplex, limit: number, count: (n: number) => void): void {
  // Chunks that arrive in one turn of the event loop leave a socket in one writev(2): on a fast local
  // hop the per-call cost of write(2), not the bytes, is what a relay spends its CPU on.
  const batch = dst instanceof net.Socket;
  let corked = false;
  const uncork = (): void => {
    corked = false;
    dst.uncork();
  };
  src.on('data', (chunk: Buffer) => {
    count(chunk.length);
    if (batch && !corked) {
      corked = true;
      dst.cork();
      setImmediate(uncork);
    }
    if (!dst.write(chunk) && dst.writableLength >= limit) src.pause();
  });
  dst.on('drain', () => src.resume());
  // 'end' and 'close' come at most once per stream: plain listeners spare a `once` wrapper (~150 B) each.
  src.on('end', () => {
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
  });
  // A 'data' listener does not start a stream that was explicitly paused (pauseOnConnect does that).
  src.resume();
}

export function splice(a: Duplex, b: Duplex, onDone?: (result: SpliceResult) => void, limit = RELAY_BUFFER): void {
  const result: SpliceResult = { aToB: 0, bToA: 0 };
  let finished = false;
  relay(a, b, limit, (n) => (result.aToB += n));
  relay(b, a, limit, (n) => (result.bToA += n));

  let closed = 0;
  const finish = (): void => {
    if (!finished) {
      finished = true;
      onDone?.(result);
    }
  };
  const onError = (error: Error): void => {
    result.error ??= error;
  };
  a.on('error', onError);
  b.on('error', onError);
  // A side that closes before its reading half ended was aborted (reset, RST_STREAM, error): abort the
  // other. A side that ended in order has already ended the other's writing half through relay().
  const onClose = (self: Duplex, other: Duplex) => (): void => {
    if (wasAborted(self) || result.error !== undefined) {
      result.error ??= new Error('aborted');
      abort(other);
    }
    closed += 1;
    if (closed === 2) finish();
  };
  a.on('close', onClose(a, b));
  b.on('close', onClose(b, a));
}
