// Messages: the WIT record (data, format, metadata) plus readers of the reserved metadata witmq
// adds on delivery (docs/PROTOCOL.md section 6.5).

import { Format, type Metadata, type WireMessage } from "./codec.js";

/** What send() accepts for one message: a Message, raw bytes, a UTF-8 string or the fields. */
export type MessageInput =
  | Message
  | Uint8Array
  | string
  | {
      data: Uint8Array | string;
      format?: Format;
      /** Pairs in order (keys may repeat), or an object. */
      metadata?: Metadata | Record<string, string> | null;
    };

/** A message as sent or delivered. */
export class Message implements WireMessage {
  readonly data: Uint8Array;
  readonly format: Format;
  /** null: the WIT option is none. */
  readonly metadata: Metadata | null;

  constructor(data: Uint8Array | string, format: Format = Format.Raw, metadata: Metadata | Record<string, string> | null = null) {
    this.data = typeof data === "string" ? Buffer.from(data, "utf8") : data;
    this.format = format;
    this.metadata = metadata === null || Array.isArray(metadata) ? metadata : Object.entries(metadata);
  }

  static from(input: MessageInput): Message {
    if (input instanceof Message) return input;
    if (typeof input === "string" || input instanceof Uint8Array) return new Message(input);
    return new Message(input.data, input.format ?? Format.Raw, input.metadata ?? null);
  }

  /** The value of the first metadata entry named `key`, or undefined. */
  get(key: string): string | undefined {
    if (this.metadata === null) return undefined;
    for (const [k, v] of this.metadata) if (k === key) return v;
    return undefined;
  }

  /** The data as UTF-8 text (invalid bytes become U+FFFD). */
  text(): string {
    return Buffer.from(this.data.buffer, this.data.byteOffset, this.data.length).toString("utf8");
  }

  /** The receipt that settles this delivered message (witmq-receipt), or undefined. */
  get receipt(): string | undefined {
    return this.get("witmq-receipt");
  }
  /** The channel it was delivered from (witmq-channel). */
  get channel(): string | undefined {
    return this.get("witmq-channel");
  }
  /** Its sequence number in the channel (witmq-sequence), as a bigint. */
  get sequence(): bigint | undefined {
    const s = this.get("witmq-sequence");
    return s === undefined || !/^\d+$/.test(s) ? undefined : BigInt(s);
  }
  /** The delivery attempt, 1 on the first delivery (witmq-attempt). */
  get attempt(): number | undefined {
    const s = this.get("witmq-attempt");
    return s === undefined || !/^\d+$/.test(s) ? undefined : Number(s);
  }
}
