// witmq: a client for the witmq message broker, from docs/PROTOCOL.md.
export { Client, parseServer, type ClientOptions, type ChannelSettings, type ChannelStats, type Settleable } from "./client.js";
export { Format, type Metadata, type ServerLimits } from "./codec.js";
export type { ServerAddress, TlsOptions } from "./connection.js";
export { Message, type MessageInput } from "./message.js";
export { Stream, type StreamOptions } from "./stream.js";
export {
  AlreadyExistsError,
  ConnectionError,
  CorruptionError,
  ErrorCode,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  IoError,
  NotFoundError,
  PermissionDeniedError,
  ProtocolError,
  RequestTimeoutError,
  ResourceExhaustedError,
  StaleReceiptError,
  UnavailableError,
  UnsupportedError,
  WitmqError,
  errorCodeName,
  errorFor,
} from "./errors.js";
