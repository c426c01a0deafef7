/**
 * Hook ↔ redirector signalling, version 1.
 *
 * The redirector serves this over node-ipc on a Unix socket; the hook, which runs inside an unmodified
 * process and cannot load node-ipc, speaks node-ipc's wire form directly: every message is the UTF-8 JSON
 * object `{"type": EVENT, "data": DATA}` followed by one form feed (0x0C). JSON never contains a raw 0x0C
 * (it is escaped as \f inside strings), so the delimiter cannot occur inside a message.
 *
 * One request per connection: the hook connects, writes one request, reads one reply, closes. A hooked
 * thread that blocks in connect() therefore gets the reply to its own request and nobody else's, and an
 * app that closes every descriptor cannot break a connection the hook keeps, because it keeps none.
 *
 * This file is pure and shared by the agent (compiled into hook/agent) and the redirector: it must not
 * import anything from Node.
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
  reply: 'reply',
} as const;

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
  return ((address & mask) >>> 0) === ((base & mask) >>> 0);
}
