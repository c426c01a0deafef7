/**
 * How the server answers a stream it will not serve: a status and an `underpass-error` code with one
 * readable line, counted in the metrics. A refusal ends that stream only, never another stream or the
 * session.
 */
import http2 from 'node:http2';
import { isUnderpassError, type ErrorCode } from '../protocol/errors';
import { Headers, StatusOf } from '../protocol/wire';
import type { Metrics } from '../runtime/metrics';

export class Responder {
  /** Streams that are tunnel requests: their refusals count as failed openings. */
  private readonly tunnelRequests = new WeakSet<http2.ServerHttp2Stream>();

  constructor(private readonly metrics: Metrics | undefined) {}

  /** Marks `stream` as a tunnel request, for the metrics. */
  markTunnelRequest(stream: http2.ServerHttp2Stream): void {
    this.tunnelRequests.add(stream);
  }

  refuse(stream: http2.ServerHttp2Stream, code: ErrorCode, message: string): void {
    if (stream.destroyed || stream.closed) return;
    this.metrics?.refused(code);
    if (this.tunnelRequests.has(stream)) this.metrics?.tunnelOpened(code);
    if (stream.headersSent) {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      return;
    }
    stream.respond(
      { ':status': StatusOf[code] ?? 400, [Headers.errorCode]: code, [Headers.errorMessage]: message },
      { endStream: true },
    );
  }

  /** Refuses with what `error` says: its code and line when it is one of ours. */
  fail(stream: http2.ServerHttp2Stream, error: unknown): void {
    if (isUnderpassError(error)) this.refuse(stream, error.code, error.message);
    else this.refuse(stream, 'UP_ERR_PROTOCOL', 'bad request');
  }

  /** Sends an endpoint opening its session to another node (assignment): `UP_ERR_MOVED` with the address. */
  moved(stream: http2.ServerHttp2Stream, address: string, message: string): void {
    if (stream.destroyed || stream.closed) return;
    stream.respond(
      {
        ':status': StatusOf.UP_ERR_MOVED ?? 307,
        [Headers.errorCode]: 'UP_ERR_MOVED',
        [Headers.errorMessage]: message,
        [Headers.moveTo]: address,
      },
      { endStream: true },
    );
  }

  json(stream: http2.ServerHttp2Stream, body: unknown): void {
    stream.respond({ ':status': 200, 'content-type': 'application/json' });
    stream.end(JSON.stringify(body));
  }
}
