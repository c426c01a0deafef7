/**
 * The control stream, version 1: newline-delimited JSON in both directions of one long-lived HTTP/2
 * stream (POST /v1/control) that every endpoint opens on its session. It carries what is not a byte
 * stream: publications and their service keys, the tunnel requests the server forwards to the proxy
 * that a proxy answers with a stream of its own, and for every tunnel the byte counts that let it survive a dropped link
 * (`ack`, see PROTOCOL.md "Resumption").
 *
 * Pure code: `ControlDecoder` turns chunks into validated messages and throws only ProtocolError
 * subclasses; nothing here touches a socket.
 */
import { z } from 'zod';
import { BadMessageError, FrameTooLargeError } from './errors';

/** Longest line (bytes, newline excluded) either side accepts. */
export const MAX_CONTROL_LINE = 64 * 1024;

/** A publication name: one label, or several joined by dots (`denpc.home`). */
const name = z.string().min(1).max(200);
const port = z.number().int().min(1).max(65535);
const id = z.string().min(1).max(64);
const code = z
  .string()
  .regex(/^UP_ERR_[A-Z_]+$/)
  .max(64);
const text = z.string().max(1024);
/** A byte count of one direction of a tunnel: JSON numbers stay exact up to 2^53 (8 PiB). */
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** A direct listener as the proxy announces it: `HOST:PORT`s and its certificate's SHA-256 fingerprint. */
export const DirectListing = z
  .object({
    addresses: z.array(z.string().min(1).max(64)).min(1).max(8),
    fingerprint: z.string().regex(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/),
  })
  .strict();
export type DirectListing = z.infer<typeof DirectListing>;

/**
 * Either way: "of tunnel `id` I have received `n` bytes from you" (and, with `fin`, your end of stream),
 * so the sender may drop them from its replay buffer.
 */
const ack = z.object({ type: z.literal('ack'), id, n: count, fin: z.boolean().optional() }).strict();
export type AckMessage = z.infer<typeof ack>;

/** Endpoint (service proxy or redirector) → server. */
export const EndpointMessage = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('publish'),
      name,
      port,
      /**
       * What the proxy wants with each tunnel request for this publication (added within version 1, and
       * sent only when wanted, so an older server is never shown it): `client`, who asks (PROXY protocol).
       */
      wants: z
        .array(z.enum(['client']))
        .max(4)
        .optional(),
      /**
       * The proxy's direct listener (added within version 1, sent only by `--direct-listen`): where a
       * redirector may reach it without the server, and the SHA-256 fingerprint of its certificate to pin.
       */
      direct: DirectListing.optional(),
    })
    .strict(),
  z.object({ type: z.literal('tunnel-failed'), id, code, message: text }).strict(),
  /**
   * The target of a tunnel that came on a standby stream (Paths.standby) answered: the server sends the
   * redirector its 200 (added within version 1, for servers with `standby`).
   */
  z.object({ type: z.literal('tunnel-ready'), id }).strict(),
  ack,
  /** A tunnel the endpoint aborted while its session was down: the server resets its side too. */
  z.object({ type: z.literal('reset'), id }).strict(),
]);
export type EndpointMessage = z.infer<typeof EndpointMessage>;

/** Server → endpoint (`ack` goes to either; the rest to service proxies). */
export const ServerMessage = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('published'),
      name,
      host: z.string().max(253),
      key: z.string().min(16).max(128),
      port,
      /**
       * Answers a publish that had `direct` (added within version 1): the secret the server signs this
       * publication's direct tickets with, for the proxy to verify them.
       */
      direct: z
        .object({ secret: z.string().min(32).max(128) })
        .strict()
        .optional(),
    })
    .strict(),
  z.object({ type: z.literal('refused'), name, code, message: text }).strict(),
  z
    .object({
      type: z.literal('tunnel'),
      id,
      key: z.string().min(16).max(128),
      /**
       * Who asks, for a publication behind the PROXY protocol (added within version 1): sent only for a
       * publication whose publish message wanted `client`, so an older proxy never meets it.
       */
      client: z
        .object({
          /** The requesting endpoint's address and port as the server saw them; absent over a WebSocket. */
          address: z.string().max(64).optional(),
          port: z.number().int().min(0).max(65535).optional(),
          /** The requester's account, and the pseudo name it asked for. */
          account: z.string().max(63),
          host: z.string().max(253),
        })
        .strict()
        .optional(),
    })
    .strict(),
  ack,
]);
export type ServerMessage = z.infer<typeof ServerMessage>;

export function encodeControl(message: EndpointMessage | ServerMessage): Buffer {
  return Buffer.from(JSON.stringify(message) + '\n', 'utf8');
}

/**
 * Push-style line decoder: `push(chunk)` returns every complete message in it; an incomplete line waits
 * for more bytes. Holds at most MAX_CONTROL_LINE bytes between calls.
 */
export class ControlDecoder<T> {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(
    private readonly schema: z.ZodType<T>,
    private readonly maxLine = MAX_CONTROL_LINE,
  ) {}

  push(chunk: Buffer): T[] {
    const out: T[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl === -1) break;
      const piece = chunk.subarray(start, nl);
      if (this.pendingBytes + piece.length > this.maxLine) throw new FrameTooLargeError(this.maxLine);
      const line = this.pendingBytes === 0 ? piece : Buffer.concat([...this.pending, piece]);
      this.pending = [];
      this.pendingBytes = 0;
      start = nl + 1;
      if (line.length === 0) continue;
      out.push(this.decodeLine(line));
    }
    const rest = chunk.subarray(start);
    if (rest.length > 0) {
      if (this.pendingBytes + rest.length > this.maxLine) throw new FrameTooLargeError(this.maxLine);
      this.pending.push(Buffer.from(rest));
      this.pendingBytes += rest.length;
    }
    return out;
  }

  /** Bytes of an unfinished line held back. */
  get buffered(): number {
    return this.pendingBytes;
  }

  private decodeLine(line: Buffer): T {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line.toString('utf8'));
    } catch {
      throw new BadMessageError('not JSON');
    }
    const result = this.schema.safeParse(parsed);
    if (!result.success) {
      const issue = result.error.issues[0];
      throw new BadMessageError(issue ? `${issue.path.join('.') || 'message'}: ${issue.message}` : 'invalid');
    }
    return result.data;
  }
}
