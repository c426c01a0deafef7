/**
 * Every failure a user or a peer can cause has a class here with a stable `code` (listed, with the HTTP
 * status each travels with, in PROTOCOL.md "Error codes"). Programs raise the class of the failure —
 * the base class cannot be built directly — check kinds with `instanceof` (or `isUnderpassError`),
 * never by looking for a field, and print `message`, which is written to be shown as one line that says
 * what to do. A code read from a peer becomes its class again through `errorOfCode`.
 */

/** Every code, as listed in PROTOCOL.md "Error codes". */
export const ERROR_CODES = [
  'UP_ERR_PROTOCOL',
  'UP_ERR_FRAME_TOO_LARGE',
  'UP_ERR_BAD_MESSAGE',
  'UP_ERR_AUTH',
  'UP_ERR_CONFIG',
  'UP_ERR_UNREACHABLE',
  'UP_ERR_TLS',
  'UP_ERR_NOT_FOUND',
  'UP_ERR_OFFLINE',
  'UP_ERR_TARGET_REFUSED',
  'UP_ERR_FORBIDDEN',
  'UP_ERR_LIMIT',
  'UP_ERR_NO_REDIRECTOR',
  'UP_ERR_RESET',
  'UP_ERR_CLUSTER_UNAVAILABLE',
  'UP_ERR_MOVED',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES);

/** Whether `value` (a peer's header or message field) is one of the codes above. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && KNOWN_CODES.has(value);
}

const brand = Symbol.for('underpass.error');

export abstract class UnderpassError extends Error {
  readonly code: ErrorCode;
  readonly [brand] = true;

  protected constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

export function isUnderpassError(value: unknown): value is UnderpassError {
  return typeof value === 'object' && value !== null && (value as { [brand]?: boolean })[brand] === true;
}

/** A peer sent bytes that do not follow the wire format. Ends that stream or session, nothing else. */
export class ProtocolError extends UnderpassError {
  constructor(
    message: string,
    code: 'UP_ERR_PROTOCOL' | 'UP_ERR_FRAME_TOO_LARGE' | 'UP_ERR_BAD_MESSAGE' = 'UP_ERR_PROTOCOL',
  ) {
    super(code, message);
  }
}

/** A line or message over its cap. `limit` in bytes, or the whole message a peer sent. */
export class FrameTooLargeError extends ProtocolError {
  constructor(limit: number | string) {
    super(typeof limit === 'number' ? `frame larger than ${limit} bytes` : limit, 'UP_ERR_FRAME_TOO_LARGE');
  }
}

/** A well-framed message with an invalid field. */
export class BadMessageError extends ProtocolError {
  /** `detail` says what is wrong; `{ whole: true }` takes it as the whole message (a peer's). */
  constructor(detail: string, options: { whole?: boolean } = {}) {
    super(options.whole === true ? detail : `malformed message: ${detail}`, 'UP_ERR_BAD_MESSAGE');
  }
}

/** A wrong, missing, revoked or expired token. */
export class AuthError extends UnderpassError {
  constructor(message = 'the server rejected the token: check --token (the server prints where its token is)') {
    super('UP_ERR_AUTH', message);
  }
}

/** A flag, option, file or environment variable the program cannot work with. */
export class ConfigError extends UnderpassError {
  constructor(message: string) {
    super('UP_ERR_CONFIG', message);
  }
}

/** The server, a proxy on the way, or an answer in time could not be reached. */
export class UnreachableError extends UnderpassError {
  constructor(message: string, cause?: unknown) {
    super('UP_ERR_UNREACHABLE', message, { cause });
  }
}

/** The TLS handshake with the server failed (most often: not the certificate --ca names). */
export class TlsError extends UnderpassError {
  constructor(message: string, cause?: unknown) {
    super('UP_ERR_TLS', message, { cause });
  }
}

/** Not a publication, not on that port, or no such tunnel or endpoint. */
export class NotFoundError extends UnderpassError {
  constructor(message: string) {
    super('UP_ERR_NOT_FOUND', message);
  }
}

/** The publication exists but no service proxy holds it now. */
export class OfflineError extends UnderpassError {
  constructor(message: string) {
    super('UP_ERR_OFFLINE', message);
  }
}

/** The service proxy could not connect to its target. */
export class TargetRefusedError extends UnderpassError {
  constructor(message: string) {
    super('UP_ERR_TARGET_REFUSED', message);
  }
}

/** Another account's publication, without a grant or a valid service key. */
export class ForbiddenError extends UnderpassError {
  constructor(message: string) {
    super('UP_ERR_FORBIDDEN', message);
  }
}

/** A per-session or per-address limit was reached. */
export class LimitError extends UnderpassError {
  constructor(message: string) {
    super('UP_ERR_LIMIT', message);
  }
}

/** No redirector answers at the IPC endpoint (or it answered nothing usable). */
export class NoRedirectorError extends UnderpassError {
  constructor(message: string) {
    super('UP_ERR_NO_REDIRECTOR', message);
  }
}

/**
 * An open tunnel ended abnormally: its far end reset it, or its session did not come back within the
 * grace period. The app's connection is reset (ECONNRESET).
 */
export class TunnelResetError extends UnderpassError {
  constructor(message: string) {
    super('UP_ERR_RESET', message);
  }
}

/**
 * A cluster node cannot reach the shared state (Redis): what needs another node (a publication this node
 * does not hold, a claim) is refused until it is back; what the node holds itself keeps working.
 */
export class ClusterUnavailableError extends UnderpassError {
  constructor(message: string, cause?: unknown) {
    super('UP_ERR_CLUSTER_UNAVAILABLE', message, { cause });
  }
}

/**
 * Not a failure: the cluster node an endpoint reached sends it to another (assignment), whose HOST:PORT
 * the refusal's `underpass-node-address` header names. The endpoint dials there once.
 */
export class MovedError extends UnderpassError {
  constructor(
    message: string,
    /** HOST:PORT of the node to dial; '' when the peer named none. */
    readonly address = '',
  ) {
    super('UP_ERR_MOVED', message);
  }
}

/** The class of each code, for a code a peer sent (one table: adding a code without a class fails to compile). */
const CLASS_OF: { [C in ErrorCode]: (message: string) => UnderpassError } = {
  UP_ERR_PROTOCOL: (m) => new ProtocolError(m),
  UP_ERR_FRAME_TOO_LARGE: (m) => new FrameTooLargeError(m),
  UP_ERR_BAD_MESSAGE: (m) => new BadMessageError(m, { whole: true }),
  UP_ERR_AUTH: (m) => new AuthError(m),
  UP_ERR_CONFIG: (m) => new ConfigError(m),
  UP_ERR_UNREACHABLE: (m) => new UnreachableError(m),
  UP_ERR_TLS: (m) => new TlsError(m),
  UP_ERR_NOT_FOUND: (m) => new NotFoundError(m),
  UP_ERR_OFFLINE: (m) => new OfflineError(m),
  UP_ERR_TARGET_REFUSED: (m) => new TargetRefusedError(m),
  UP_ERR_FORBIDDEN: (m) => new ForbiddenError(m),
  UP_ERR_LIMIT: (m) => new LimitError(m),
  UP_ERR_NO_REDIRECTOR: (m) => new NoRedirectorError(m),
  UP_ERR_RESET: (m) => new TunnelResetError(m),
  UP_ERR_CLUSTER_UNAVAILABLE: (m) => new ClusterUnavailableError(m),
  UP_ERR_MOVED: (m) => new MovedError(m),
};

/** The error a peer reported with `code` and `message`, as its own class. */
export function errorOfCode(code: ErrorCode, message: string): UnderpassError {
  return CLASS_OF[code](message);
}
