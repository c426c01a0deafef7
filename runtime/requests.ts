/**
 * The small requests an endpoint makes on its session besides tunnels and the control stream: a GET
 * whose answer is one JSON body (the session hello, a name lookup), and the refusal a response's headers
 * carry. Everything read here comes from the server and is parsed, never taken on trust.
 */
import http2 from 'node:http2';
import type { z } from 'zod';
import {
  AuthError,
  errorOfCode,
  isErrorCode,
  MovedError,
  ProtocolError,
  type UnderpassError,
} from '../protocol/errors';
import { Headers } from '../protocol/wire';

/** Largest JSON answer an endpoint reads (bytes). */
export const MAX_RESPONSE_BODY = 64 * 1024;

/** Reads a whole (small) response body; refuses more than `limit` bytes. */
function readBody(stream: http2.ClientHttp2Stream, limit = MAX_RESPONSE_BODY): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        reject(new ProtocolError(`response larger than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

/**
 * A refusal read from response headers as an UnderpassError: the code the server sent when it is one of
 * ours (UP_ERR_PROTOCOL otherwise), its message, or `fallback` with the HTTP status.
 */
export function refusalFrom(headers: http2.IncomingHttpHeaders, fallback: string): UnderpassError {
  const code = headers[Headers.errorCode];
  const message = headers[Headers.errorMessage];
  const status = Number(headers[':status']);
  // The server's own words say why, and what to do: a wrong token, or an issued one that was revoked or
  // expired. (A server that sent none gets the generic line.)
  if (status === 401)
    return typeof message === 'string' && message !== ''
      ? new AuthError(`the server rejected the token: ${message}`)
      : new AuthError();
  const to = headers[Headers.moveTo];
  if (code === 'UP_ERR_MOVED' && typeof to === 'string') return new MovedError(String(message ?? ''), to);
  return errorOfCode(
    isErrorCode(code) ? code : 'UP_ERR_PROTOCOL',
    typeof message === 'string' && message !== '' ? message : `${fallback} (HTTP ${status})`,
  );
}

/** What a JSON request says when it fails. */
export interface JsonRequestFailures {
  /** The refusal's text when the server sent none. */
  refused: string;
  /** The error when the stream ends, or fails, before the server answered. */
  closed: (cause?: Error) => UnderpassError;
  /** The error's text when the answer is not JSON of the expected shape. */
  malformed: string;
}

/**
 * One GET on `session` whose answer is a small JSON body: resolves with the body parsed by `schema`;
 * rejects with the server's refusal (refusalFrom), `failures.closed` when no answer came, or a
 * ProtocolError when the body does not fit `schema`.
 */
export async function getJson<T>(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  schema: z.ZodType<T>,
  failures: JsonRequestFailures,
): Promise<T> {
  const stream = session.request({ ':method': 'GET', ...headers }, { endStream: true });
  const response = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('error', (e: Error) => reject(failures.closed(e)));
    stream.once('close', () => reject(failures.closed()));
  });
  const body = await readBody(stream);
  if (Number(response[':status']) !== 200) throw refusalFrom(response, failures.refused);
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    throw new ProtocolError(failures.malformed);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new ProtocolError(failures.malformed);
  return parsed.data;
}
