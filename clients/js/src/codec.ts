// The frame codec of docs/PROTOCOL.md sections 2 to 4: pure functions from values to bytes and
// back, no I/O. Decoding checks every length and count against the bytes left before it copies
// anything, so a lying server costs the client nothing.

import { ProtocolError } from "./errors.js";

/** Frame types (section 4). */
export const FrameType = {
  Connect: 0x01,
  Send: 0x02,
  SubscribeTryReceive: 0x03,
  SubscribeReceive: 0x04,
  UpdateGuestConfiguration: 0x05,
  CompleteMessage: 0x06,
  AbandonMessage: 0x07,
  StreamStart: 0x08,
  Credit: 0x09,
  StreamStop: 0x0a,
  Ping: 0x0b,
  ChannelList: 0x20,
  ChannelDeclare: 0x21,
  ChannelDelete: 0x22,
  ChannelStats: 0x23,
  Browse: 0x24,
  ReplayDeadLetters: 0x25,
  Purge: 0x26,
  ServerStats: 0x27,
  Deliver: 0xc0,
  StreamEnd: 0xc1,
  Goaway: 0xfe,
  Error: 0xff,
} as const;

/** The success reply of request type `t`. */
export function replyType(t: number): number {
  return t | 0x80;
}

/** WIT format-spec cases (section 3). */
export const Format = {
  CloudEvents: 0,
  Http: 1,
  Amqp: 2,
  Mqtt: 3,
  Kafka: 4,
  Raw: 5,
} as const;
export type Format = (typeof Format)[keyof typeof Format];

export type Metadata = Array<[string, string]>;

/** Bytes of a frame before its body: length, type, flags, request id. */
export const FRAME_HEADER_BYTES = 10;
/**
 * The largest length field this client reads before connect-ok tells it max-frame-bytes: the
 * server's frames then are connect-ok (46 bytes plus the server's name) or a goaway whose text
 * quotes at most the 8192-byte connect (docs/PROTOCOL.md section 2).
 */
export const MAX_FRAME_BEFORE_CONNECT_OK = 65536;

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
// With the u flag a surrogate pair is one code point, so this matches lone surrogates only:
// strings that have no UTF-8 encoding.
const loneSurrogate = /[\uD800-\uDFFF]/u;

/** True when `s` has a UTF-8 encoding (no lone surrogates). */
export function isWellFormed(s: string): boolean {
  return !loneSurrogate.test(s);
}

/** Builds one frame; the length field is filled in by finish(). */
export class FrameWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(type: number, requestId: number, sizeHint = 64) {
    this.buf = Buffer.allocUnsafe(Math.max(sizeHint, 16));
    this.u32(0);
    this.u8(type);
    this.u8(0);
    this.u32(requestId);
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): this {
    this.room(1);
    this.buf[this.pos++] = v;
    return this;
  }
  u16(v: number): this {
    this.room(2);
    this.buf.writeUInt16BE(v, this.pos);
    this.pos += 2;
    return this;
  }
  u32(v: number): this {
    this.room(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }
  u64(v: bigint): this {
    this.room(8);
    this.buf.writeBigUInt64BE(v, this.pos);
    this.pos += 8;
    return this;
  }
  /** A string already checked with isWellFormed. */
  string(s: string): this {
    const n = Buffer.byteLength(s, "utf8");
    this.room(4 + n);
    this.buf.writeUInt32BE(n, this.pos);
    this.buf.write(s, this.pos + 4, n, "utf8");
    this.pos += 4 + n;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.room(4 + b.length);
    this.buf.writeUInt32BE(b.length, this.pos);
    this.buf.set(b, this.pos + 4);
    this.pos += 4 + b.length;
    return this;
  }
  metadata(m: Metadata | null): this {
    if (m === null) return this.u8(0);
    this.u8(1).u32(m.length);
    for (const [k, v] of m) this.string(k).string(v);
    return this;
  }
  message(m: { data: Uint8Array; format: number; metadata: Metadata | null }): this {
    return this.bytes(m.data).u8(m.format).metadata(m.metadata);
  }

  /** The length field value this frame will carry (bytes after the length field). */
  get lengthField(): number {
    return this.pos - 4;
  }

  finish(): Buffer {
    this.buf.writeUInt32BE(this.pos - 4, 0);
    return this.buf.subarray(0, this.pos);
  }
}

/** A message as it travels: the WIT record (section 3). */
export interface WireMessage {
  data: Uint8Array;
  format: number;
  metadata: Metadata | null;
}

/** Reads the body of one frame; every failure is a ProtocolError naming the field. */
export class BodyReader {
  private pos: number;

  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
  ) {
    this.pos = 0;
  }

  private fail(field: string, expectation: string): never {
    throw new ProtocolError(`${this.what}: ${field}: ${expectation}`);
  }

  private need(n: number, field: string): void {
    if (this.buf.length - this.pos < n) {
      this.fail(field, `needs ${n} bytes, ${this.buf.length - this.pos} left in the frame`);
    }
  }

  get left(): number {
    return this.buf.length - this.pos;
  }

  u8(field: string): number {
    this.need(1, field);
    return this.buf[this.pos++]!;
  }
  u16(field: string): number {
    this.need(2, field);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(field: string): number {
    this.need(4, field);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(field: string): bigint {
    this.need(8, field);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  bytes(field: string): Uint8Array {
    const n = this.u32(field);
    this.need(n, field);
    // A copy: the frame's buffer is not kept alive by a message the caller holds on to.
    const out = new Uint8Array(n);
    out.set(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return out;
  }
  string(field: string): string {
    const n = this.u32(field);
    this.need(n, field);
    const raw = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    try {
      return utf8.decode(raw);
    } catch {
      this.fail(field, "is not well-formed UTF-8");
    }
  }
  option(field: string): boolean {
    const tag = this.u8(field);
    if (tag > 1) this.fail(field, `option tag ${tag} is neither 0 (none) nor 1 (some)`);
    return tag === 1;
  }
  /** A list count, checked against the bytes left at `smallest` bytes per element. */
  count(field: string, smallest: number): number {
    const n = this.u32(field);
    if (n * smallest > this.left) {
      this.fail(field, `${n} elements of at least ${smallest} bytes do not fit in the ${this.left} bytes left`);
    }
    return n;
  }
  metadata(field: string): Metadata | null {
    if (!this.option(field)) return null;
    const n = this.count(field, 8);
    const out: Metadata = new Array(n);
    for (let i = 0; i < n; i++) out[i] = [this.string(`${field}[${i}].key`), this.string(`${field}[${i}].value`)];
    return out;
  }
  message(field: string): WireMessage {
    const data = this.bytes(`${field}.data`);
    const format = this.u8(`${field}.format`);
    if (format > 5) this.fail(`${field}.format`, `${format} is not a format-spec case (0..5)`);
    return { data, format, metadata: this.metadata(`${field}.metadata`) };
  }
  messages(field: string): WireMessage[] {
    const n = this.count(field, 6);
    const out: WireMessage[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.message(`${field}[${i}]`);
    return out;
  }
  errorBody(): { code: number; text: string } {
    const code = this.u16("code");
    return { code, text: this.string("message") };
  }
  end(): void {
    if (this.left !== 0) this.fail("body", `${this.left} bytes after the last field`);
  }
}

/** The limits a server announces in connect-ok (section 5.2). */
export interface ServerLimits {
  version: number;
  server: string;
  maxFrameBytes: number;
  maxSendMessages: number;
  maxReceiveMessages: number;
  maxMessageBytes: number;
  maxMetadataEntries: number;
  maxMetadataBytes: number;
  maxConfigChannels: number;
  /** 0: no limit. */
  maxInFlight: number;
  /** 0: no limit. */
  maxCredit: number;
  /** 0: never. */
  idleTimeoutMs: number;
}

export function decodeConnectOk(body: Buffer): ServerLimits {
  const r = new BodyReader(body, "connect-ok");
  const limits: ServerLimits = {
    version: r.u16("version"),
    server: r.string("server"),
    maxFrameBytes: r.u32("max-frame-bytes"),
    maxSendMessages: r.u32("max-send-messages"),
    maxReceiveMessages: r.u32("max-receive-messages"),
    maxMessageBytes: r.u32("max-message-bytes"),
    maxMetadataEntries: r.u32("max-metadata-entries"),
    maxMetadataBytes: r.u32("max-metadata-bytes"),
    maxConfigChannels: r.u32("max-config-channels"),
    maxInFlight: r.u32("max-in-flight"),
    maxCredit: r.u32("max-credit"),
    idleTimeoutMs: r.u32("idle-timeout-ms"),
  };
  r.end();
  if (limits.maxFrameBytes < 6) {
    throw new ProtocolError(`connect-ok: max-frame-bytes: ${limits.maxFrameBytes} is below 6`);
  }
  return limits;
}

/** Channel names (section 11): 1 to 200 bytes of A-Z a-z 0-9 . _ - : /, not starting with '.'. */
const channelName = /^[A-Za-z0-9_\-:/][A-Za-z0-9._\-:/]{0,199}$/;

/** Why `name` is not a valid channel name, or null when it is. */
export function channelNameProblem(name: unknown): string | null {
  if (typeof name !== "string") return `${typeof name} is not a string`;
  if (channelName.test(name)) return null;
  if (name.length === 0) return "is empty (1 to 200 bytes expected)";
  if (name.length > 200) return `is ${name.length} bytes long (at most 200)`;
  if (name.startsWith(".")) return `'${name}' starts with '.'`;
  return `'${name}' has a character outside A-Z a-z 0-9 . _ - : /`;
}
