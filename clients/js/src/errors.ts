// Errors of the witmq protocol (docs/PROTOCOL.md section 9): one class per error code, each a
// subclass of WitmqError. The same classes are thrown for a refusal the client makes itself
// before sending (a limit of connect-ok broken, a bad channel name: `local` is true then), so a
// caller handles "too large" the same way whoever noticed it.

/** The error codes of docs/PROTOCOL.md section 9. */
export const ErrorCode = {
  InvalidArgument: 1,
  NotFound: 2,
  AlreadyExists: 3,
  StaleReceipt: 4,
  PermissionDenied: 5,
  ResourceExhausted: 6,
  Unavailable: 7,
  Corruption: 8,
  IoError: 9,
  Unsupported: 10,
  FailedPrecondition: 11,
  Internal: 12,
  Timeout: 13,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const codeNames: Record<number, string> = {
  1: "invalid-argument",
  2: "not-found",
  3: "already-exists",
  4: "stale-receipt",
  5: "permission-denied",
  6: "resource-exhausted",
  7: "unavailable",
  8: "corruption",
  9: "io-error",
  10: "unsupported",
  11: "failed-precondition",
  12: "internal",
  13: "timeout",
};

/** The protocol name of an error code ("not-found"), or "code N" for one this client does not know. */
export function errorCodeName(code: number): string {
  return codeNames[code] ?? `code ${code}`;
}

export interface WitmqErrorOptions {
  /** True when this client refused the request before sending it. */
  local?: boolean;
  /** True when the server closed the connection with this error (a goaway). */
  goaway?: boolean;
  cause?: unknown;
}

/** An error reply, goaway or stream-end of the server, or a refusal of the client itself. */
export class WitmqError extends Error {
  /** The numeric protocol code (section 9); codes a newer server adds arrive as InternalError. */
  readonly code: number;
  /** The server's text: what WIT's error.trace() returns. Only `code` is stable. */
  readonly text: string;
  readonly local: boolean;
  readonly goaway: boolean;

  constructor(code: number, text: string, options: WitmqErrorOptions = {}) {
    super(`${errorCodeName(code)}: ${text}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.text = text;
    this.local = options.local ?? false;
    this.goaway = options.goaway ?? false;
  }

  /** The protocol name of the code, e.g. "stale-receipt". */
  get codeName(): string {
    return errorCodeName(this.code);
  }
}

export class InvalidArgumentError extends WitmqError {
  override readonly name = "InvalidArgumentError";
}
export class NotFoundError extends WitmqError {
  override readonly name = "NotFoundError";
}
export class AlreadyExistsError extends WitmqError {
  override readonly name = "AlreadyExistsError";
}
export class StaleReceiptError extends WitmqError {
  override readonly name = "StaleReceiptError";
}
export class PermissionDeniedError extends WitmqError {
  override readonly name = "PermissionDeniedError";
}
export class ResourceExhaustedError extends WitmqError {
  override readonly name = "ResourceExhaustedError";
}
export class UnavailableError extends WitmqError {
  override readonly name = "UnavailableError";
}
export class CorruptionError extends WitmqError {
  override readonly name = "CorruptionError";
}
export class IoError extends WitmqError {
  override readonly name = "IoError";
}
export class UnsupportedError extends WitmqError {
  override readonly name = "UnsupportedError";
}
export class FailedPreconditionError extends WitmqError {
  override readonly name = "FailedPreconditionError";
}
/** A server bug, and every code this client does not know (section 9: treat them like internal). */
export class InternalError extends WitmqError {
  override readonly name = "InternalError";
}

/** A request got no reply within its timeout (no responder answered). */
export class RequestTimeoutError extends WitmqError {
  override readonly name = "RequestTimeoutError";
}

/**
 * The connection is gone (closed by the peer, a socket error, a timeout): requests that had no
 * answer fail with it. Whether they took effect is unknown. Not a protocol error code.
 */
export class ConnectionError extends Error {
  override readonly name: string = "ConnectionError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/**
 * The server sent something the protocol does not allow (a bad length, an unknown frame type, a
 * malformed body, a reply to no request). The client closes the connection when it sees one.
 */
export class ProtocolError extends ConnectionError {
  override readonly name = "ProtocolError";
}

type ErrorClass = new (code: number, text: string, options?: WitmqErrorOptions) => WitmqError;

const classes: Record<number, ErrorClass> = {
  1: InvalidArgumentError,
  2: NotFoundError,
  3: AlreadyExistsError,
  4: StaleReceiptError,
  5: PermissionDeniedError,
  6: ResourceExhaustedError,
  7: UnavailableError,
  8: CorruptionError,
  9: IoError,
  10: UnsupportedError,
  11: FailedPreconditionError,
  12: InternalError,
  13: RequestTimeoutError,
};

/** The error of the class for `code` (InternalError for codes this client does not know). */
export function errorFor(code: number, text: string, options: WitmqErrorOptions = {}): WitmqError {
  const Class = classes[code] ?? InternalError;
  return new Class(code, text, options);
}
