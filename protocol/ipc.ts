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
 * This file is pure and shared by the agent (compiled into hook/agent) and the redirector: it must not
 * import anything from Node.
 *
 * Version notes. v1 as first shipped: hello, resolve, open-tunnel, reverse. Added within v1: `claim`, and
 * `features` in the hello reply announcing it. IPC_VERSION did not change, because the hello check is an
 * exact match and a new number would turn every mixed pair away: an older agent never claims and is
 * admitted by the redirector's slower /proc owner check; a newer agent claims only when hello listed
 * `claim` (an older redirector would ignore the event, and each claim costs an IPC connection).
 */

export const IPC_VERSION = 1;

/** node-ipc's default delimiter. */
export const IPC_DELIMITER = '\f';

/** Largest message either side accepts, delimiter included (characters). */
export const IPC_MAX_MESSAGE = 16 * 1024;

/**
 * Request events, hook → redirector, and the reply event each gets. node-ipc reserves `connect`, `data`,
 * `error`, `close`, `start` and `socket.disconnected` for its own use, so no event may take those names.
 */
export const IpcEvent = {
  hello: 'hello',
  resolve: 'resolve',
  connect: 'open-tunnel',
  reverse: 'reverse',
  claim: 'claim',
  reply: 'reply',
} as const;

/** Optional requests a redirector serves, announced in its hello reply. */
export type IpcFeature = 'claim';

export interface HelloRequest {
  v: number;
  pid: number;
}

export interface HelloReply {
  ok: true;
  v: number;
  /** Zones whose names are pseudo names, lower case, no trailing dot (e.g. `underpass.internal`). */
  zones: string[];
  /** The loopback sub-range pseudo addresses come from, as dotted quad and prefix length. */
  pseudoNet: { base: string; prefix: number };
  /** Optional requests this redirector serves; absent from older redirectors. */
  features?: IpcFeature[];
}

export interface ResolveRequest {
  name: string;
}

export interface ResolveReply {
  ok: true;
  name: string;
  /** Dotted-quad IPv4 pseudo address, inside `pseudoNet`. */
  address: string;
}

export interface ConnectRequest {
  /** Pseudo address the app connects to (IPv4 dotted quad; a v4-mapped IPv6 destination is sent as IPv4). */
  address: string;
  port: number;
}

export interface ConnectReply {
  ok: true;
}

/**
 * A hooked app's word that the connection it just opened to a pseudo destination is its own: sent once
 * its connect() has returned (0, or EINPROGRESS), when the kernel has chosen the source port. The
 * listener then admits the accepted socket with these four ends at once, without the /proc owner check.
 * The IPC socket is its user's alone, so a claim proves the connection belongs to the redirector's user.
 * It is a notification: the hook closes right after writing it, and the redirector sends nothing back.
 */
export interface ClaimRequest {
  /** The pseudo destination, IPv4 dotted quad (as in ConnectRequest). */
  address: string;
  port: number;
  /** The app socket's own end, from getsockname(); IPv4, a v4-mapped address sent as IPv4. */
  localAddress: string;
  localPort: number;
}

export interface ReverseRequest {
  address: string;
}

export interface ReverseReply {
  ok: true;
  name: string;
}

/** Stable error codes a reply may carry; the hook maps them to errno / EAI_* values. */
export type IpcErrorCode =
  | 'NOT_FOUND' // not a publication: getaddrinfo answers EAI_NONAME
  | 'REFUSED' // service offline, wrong port, target refused: connect() fails with ECONNREFUSED
  | 'UNAVAILABLE' // redirector has no session to the server: EAI_AGAIN / ECONNREFUSED
  | 'BAD_REQUEST';

export interface ErrorReply {
  ok: false;
  code: IpcErrorCode;
  message: string;
}

export type Reply<T> = T | ErrorReply;

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
