/**
 * Every failure a user or a peer can cause has a class here with a stable `code`. Programs check kinds
 * with `instanceof` (or `isUnderpassError`), never by looking for a field, and print `message`, which is
 * written to be shown as one line that says what to do.
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
  'UP_ERR_BUSY',
  'UP_ERR_RESET',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES);

/** Whether `value` (a peer's header or message field) is one of the codes above. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && KNOWN_CODES.has(value);
}

const brand = Symbol.for('underpass.error');

export class UnderpassError extends Error {
  readonly code: ErrorCode;
  readonly [brand] = true;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
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
  constructor(message: string, code: ErrorCode = 'UP_ERR_PROTOCOL') {
    super(code, message);
  }
}

export class FrameTooLargeError extends ProtocolError {
  constructor(limit: number) {
    super(`frame larger than ${limit} bytes`, 'UP_ERR_FRAME_TOO_LARGE');
  }
}

export class BadMessageError extends ProtocolError {
  constructor(detail: string) {
    super(`malformed message: ${detail}`, 'UP_ERR_BAD_MESSAGE');
  }
}

export class AuthError extends UnderpassError {
  constructor(message = 'the server rejected the token: check --token (the server prints where its token is)') {
    super('UP_ERR_AUTH', message);
  }
}

export class ConfigError extends UnderpassError {
  constructor(message: string) {
    super('UP_ERR_CONFIG', message);
  }
}

export class UnreachableError extends UnderpassError {
  constructor(message: string, cause?: unknown) {
    super('UP_ERR_UNREACHABLE', message, { cause });
  }
}

/**
 * A tunnel could not be opened. `code` says which link of the chain failed; the redirector turns every
 * kind into ECONNREFUSED for the app, the logs keep the reason.
 */
export class TunnelError extends UnderpassError {
  constructor(
    code:
      | 'UP_ERR_NOT_FOUND'
      | 'UP_ERR_OFFLINE'
      | 'UP_ERR_TARGET_REFUSED'
      | 'UP_ERR_FORBIDDEN'
      | 'UP_ERR_LIMIT'
      | 'UP_ERR_UNREACHABLE'
      | 'UP_ERR_BUSY',
    message: string,
  ) {
    super(code, message);
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
