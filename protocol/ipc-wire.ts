/**
 * Hook ↔ redirector signalling, version 1.
 *
 * The redirector serves this over node-ipc on a Unix socket; the hook, which runs inside an unmodified
 * process and cannot load node-ipc, speaks node-ipc's wire form directly: every message is the UTF-8 JSON
 * object `{"type": EVENT, "data": DATA}` followed by one form feed (0x0C). JSON never contains a raw 0x0C
 * (it is escaped as \f inside strings), so the delimiter cannot occur inside a message.
 *
 * One request per connection: the hook connects, writes one request, reads one reply (not for a claim,
 * whose reply it does not wait for), closes. A hooked thread that blocks in connect() therefore gets the
 * reply to its own request and nobody else's, and an app that closes every descriptor cannot break a
 * connection the hook keeps, because it keeps none.
 *
 * This file is pure and shared by the agent (compiled into hook/agent), the redirector and the tests: it
 * must not import anything from Node, nor zod. The messages themselves, one table of event → request →
 * reply with their schemas, are in ipc.ts.

 */
export const IPC_VERSION = 1;

/** node-ipc's default delimiter. */
export const IPC_DELIMITER = '\f';

/** Largest message either side accepts, delimiter included (characters). */
export const IPC_MAX_MESSAGE = 16 * 1024;

/** The event every reply travels as (requests travel as their kind's event, ipc.ts IpcMessages). */
export const IPC_REPLY_EVENT = 'reply';

export interface IpcMessage {
  type: string;
  data: unknown;
}

/** Encodes one message in node-ipc's wire form. */
export function encodeIpcMessage(type: string, data: unknown): string {
  return JSON.stringify({ type, data }) + IPC_DELIMITER;
}

/**
 * Decodes one complete message (without its delimiter). Returns null for anything that is not a
 * `{type: string, data}` object, so a caller can answer BAD_REQUEST instead of throwing.
 */
export function tryDecodeIpcMessage(text: string): IpcMessage | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof parsed !== 'object' || parsed === null) return null;
  const { type, data } = parsed as { type?: unknown; data?: unknown };
  if (typeof type !== 'string') return null;
  return { type, data };
}

/** Parses dotted-quad IPv4 to an unsigned 32-bit number, or null. Used on the agent's hot path. */
export function tryParseIPv4(text: string): number | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (part.length === 0 || part.length > 3) return null;
    const n = Number(part);
    if (!Number.isInteger(n) || n < 0 || n > 255) return null;
    value = value * 256 + n;
  }
  return value >>> 0;
}

export function formatIPv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

/** True when `address` (host-order u32) lies in `base/prefix`. */
export function inPseudoNet(address: number, base: number, prefix: number): boolean {
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return (address & mask) >>> 0 === (base & mask) >>> 0;
}

/**
 * IPv4 text for an IPv4-mapped IPv6 address as Node and inet_ntop write it (`::ffff:127.0.0.1` →
 * `127.0.0.1`); any other text as it is. An AF_INET6 client of an IPv4 listener, its claim and its
 * /proc row must all agree on one form.
 */
export function unmapIPv4(address: string): string {
  return address.length > 7 && address.slice(0, 7).toLowerCase() === '::ffff:' ? address.slice(7) : address;
}

/** An IPv4 endpoint, as the IPC carries it. */
export interface IPv4Endpoint {
  address: string;
  port: number;
}

/** Linux's address families (hook/agent/libc.ts has them too; this file may not import the agent's). */
const SOCKADDR_AF_INET = 2;
const SOCKADDR_AF_INET6 = 10;

/**
 * The IPv4 endpoint of a sockaddr_in (AF_INET) or of a v4-mapped sockaddr_in6 (AF_INET6 `::ffff:a.b.c.d`),
 * as getsockname() fills them on Linux; null for anything else. `family` is sa_family as the machine reads
 * it (host order); `bytes` is the whole sockaddr, whose port and address are in network order.
 */
export function trySockaddrIPv4(family: number, bytes: Uint8Array): IPv4Endpoint | null {
  let at: number;
  if (family === SOCKADDR_AF_INET && bytes.length >= 8) at = 4;
  else if (family === SOCKADDR_AF_INET6 && bytes.length >= 24) {
    for (let i = 8; i < 18; i++) if (bytes[i] !== 0) return null;
    if (bytes[18] !== 0xff || bytes[19] !== 0xff) return null;
    at = 20;
  } else return null;
  const port = (bytes[2]! << 8) | bytes[3]!;
  return { address: `${bytes[at]!}.${bytes[at + 1]!}.${bytes[at + 2]!}.${bytes[at + 3]!}`, port };
}
