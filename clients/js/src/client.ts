// The client: every WIT operation, streaming, settling by receipt, the admin operations and ping
// (docs/PROTOCOL.md sections 6, 7, 8 and 13), each checked against the limits of connect-ok
// before it is sent, over a connection that reconnects to the next server of a list.

import { BodyReader, Format, FrameType, type FrameWriter, channelNameProblem, isWellFormed, type Metadata, type ServerLimits, type WireMessage } from "./codec.js";
import { Connection, type ConnectionOptions, type ServerAddress } from "./connection.js";
import { ConnectionError, InvalidArgumentError, ProtocolError, ResourceExhaustedError, UnavailableError, WitmqError } from "./errors.js";
import { Message, type MessageInput } from "./message.js";
import { Stream, type StreamOptions } from "./stream.js";

export interface ClientOptions extends ConnectionOptions {
  /**
   * The servers, tried in order: "host:port", "[v6]:port" or { host, port } (default
   * "127.0.0.1:7400"). When a connection is lost, the next request reconnects to the next one.
   */
  servers?: Array<string | ServerAddress>;
}

/** Channel settings of channel-declare (docs/CONFIGURATION.md, channel settings). */
export interface ChannelSettings {
  kind?: "point-to-point" | "publish-subscribe";
  durability?: "sync" | "group" | "none";
  "max-deliveries"?: number;
  "lease-ms"?: number;
  "abandon-policy"?: string;
  "backoff-initial-ms"?: number;
  "backoff-max-ms"?: number;
  "dead-letter-channel"?: string;
  "retention-ms"?: number;
  "retention-bytes"?: number;
  replicas?: number;
  [key: string]: unknown;
}

/** A channel-stats object (section 13); fields the server adds later are kept as they come. */
export interface ChannelStats {
  name: string;
  settings: ChannelSettings;
  "is-dead-letter": boolean;
  depth: number;
  "in-flight": number;
  subscriptions: Array<Record<string, unknown>>;
  [key: string]: unknown;
}

/** A message to settle: a delivered message, or its witmq-receipt. */
export type Settleable = Message | string;

const RESERVED_PREFIX = "witmq-";
const MAX_RESERVED_ENTRIES = 32;
const MAX_RESERVED_BYTES = 4096;

/** Parses "host:port" or "[v6]:port". */
export function parseServer(s: string | ServerAddress): ServerAddress {
  if (typeof s !== "string") return s;
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port < 1 || port > 65535) {
    throw new InvalidArgumentError(1, `servers: '${s}' is not host:port (or [v6]:port) with a port in 1..65535`, { local: true });
  }
  return { host: (m[1] ?? m[2])!, port };
}

function refuse(text: string): never {
  throw new InvalidArgumentError(1, text, { local: true });
}
function exhausted(text: string): never {
  throw new ResourceExhaustedError(6, text, { local: true });
}
function checkU32(what: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) refuse(`${what}: ${String(v)} is not an integer in 0..4294967295`);
  return v;
}
function checkChannel(what: string, channel: unknown): string {
  const problem = channelNameProblem(channel);
  if (problem !== null) refuse(`${what}: channel ${problem.length > 300 ? problem.slice(0, 300) + "..." : problem}`);
  return channel as string;
}
function checkString(what: string, s: string): void {
  if (typeof s !== "string") refuse(`${what}: ${typeof s} is not a string`);
  if (!isWellFormed(s)) refuse(`${what}: has a lone surrogate, which has no UTF-8 encoding`);
}

/** Checks pairs against the limits: `field` names them in errors. */
function checkPairs(limits: ServerLimits, what: string, pairs: Metadata, countReserved: boolean): void {
  let entries = 0;
  let bytes = 0;
  let reserved = 0;
  let reservedBytes = 0;
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i]!;
    if (!Array.isArray(pair) || pair.length !== 2) refuse(`${what}[${i}]: not a [key, value] pair`);
    const [k, v] = pair;
    checkString(`${what}[${i}].key`, k);
    checkString(`${what}[${i}].value`, v);
    const n = Buffer.byteLength(k) + Buffer.byteLength(v);
    if (countReserved && k.startsWith(RESERVED_PREFIX)) {
      reserved++;
      reservedBytes += n;
    } else {
      entries++;
      bytes += n;
    }
  }
  if (entries > limits.maxMetadataEntries) exhausted(`${what}: ${entries} entries, above max-metadata-entries ${limits.maxMetadataEntries} of the server`);
  if (bytes > limits.maxMetadataBytes) exhausted(`${what}: ${bytes} key and value bytes, above max-metadata-bytes ${limits.maxMetadataBytes} of the server`);
  if (reserved > MAX_RESERVED_ENTRIES) exhausted(`${what}: ${reserved} witmq- entries, above the ${MAX_RESERVED_ENTRIES} the protocol allows`);
  if (reservedBytes > MAX_RESERVED_BYTES) exhausted(`${what}: ${reservedBytes} witmq- key and value bytes, above the ${MAX_RESERVED_BYTES} the protocol allows`);
}

function checkMessage(limits: ServerLimits, what: string, m: Message): void {
  if (!(m.data instanceof Uint8Array)) refuse(`${what}.data: not bytes`);
  if (m.data.length > limits.maxMessageBytes) exhausted(`${what}.data: ${m.data.length} bytes, above max-message-bytes ${limits.maxMessageBytes} of the server`);
  if (!Number.isInteger(m.format) || m.format < 0 || m.format > 5) {
    refuse(`${what}.format: ${String(m.format)} is not a format-spec case (0 cloudevents, 1 http, 2 amqp, 3 mqtt, 4 kafka, 5 raw)`);
  }
  if (m.metadata !== null) checkPairs(limits, `${what}.metadata`, m.metadata, true);
}

function messageBytes(m: WireMessage): number {
  let n = 4 + m.data.length + 2;
  if (m.metadata !== null) {
    n += 4;
    for (const [k, v] of m.metadata) n += 8 + k.length * 3 + v.length * 3;
  }
  return n;
}

function decodeMessages(body: Buffer, what: string, option: boolean): Message[] {
  const r = new BodyReader(body, what);
  if (option && !r.option("messages")) {
    r.end();
    return [];
  }
  const list = r.messages("messages");
  r.end();
  return list.map((m) => new Message(m.data, m.format as Format, m.metadata));
}

function decodeJson(body: Buffer, what: string): Record<string, unknown> {
  const r = new BodyReader(body, what);
  const text = r.string("json");
  r.end();
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ProtocolError(`${what}: the reply is not JSON: ${(e as Error).message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new ProtocolError(`${what}: the reply is not a JSON object`);
  return value as Record<string, unknown>;
}

export class Client {
  private readonly servers: ServerAddress[];
  private readonly options: ClientOptions;
  private conn: Connection | null = null;
  private connecting: Promise<Connection> | null = null;
  /** The index in `servers` of the current (or last) connection. */
  private index = 0;
  private guestConfiguration: { channels: string[]; extensions: Metadata | null } | null = null;
  private closed = false;

  private constructor(options: ClientOptions) {
    this.options = options;
    this.servers = (options.servers ?? ["127.0.0.1:7400"]).map(parseServer);
    if (this.servers.length === 0) refuse("servers: empty (at least one host:port expected)");
    const name = options.name ?? "";
    checkString("connect: name", name);
    if (Buffer.byteLength(name) > 200) exhausted(`connect: name: ${Buffer.byteLength(name)} bytes, above the 200 the protocol allows`);
    if (options.token !== undefined) {
      checkString("connect: token", options.token);
      if (Buffer.byteLength(options.token) > 4096) exhausted(`connect: token: ${Buffer.byteLength(options.token)} bytes, above the 4096 the protocol allows`);
    }
  }

  /**
   * Connects to the first server of `options.servers` that accepts, in order. Rejects with the
   * server's error (PermissionDeniedError for a refused token, ...) or, when no server could be
   * reached, a ConnectionError naming each.
   */
  static async connect(options: ClientOptions = {}): Promise<Client> {
    const client = new Client(options);
    await client.reconnect(0);
    return client;
  }

  /** The limits of the current connection's connect-ok. */
  get limits(): ServerLimits {
    if (this.conn === null) throw new ConnectionError("witmq: not connected");
    return this.conn.limits;
  }

  /** The server of the current connection. */
  get server(): ServerAddress {
    return this.servers[this.index]!;
  }

  /** Closes the connection; requests without an answer fail with a ConnectionError. */
  close(): void {
    this.closed = true;
    this.conn?.close();
    this.conn = null;
  }

  private async reconnect(start: number): Promise<Connection> {
    const failures: string[] = [];
    const errors: unknown[] = [];
    for (let i = 0; i < this.servers.length; i++) {
      const at = (start + i) % this.servers.length;
      const address = this.servers[at]!;
      try {
        const conn = await Connection.open(address, this.options);
        this.index = at;
        try {
          if (this.guestConfiguration !== null) {
            // The configuration belongs to the connection: a new one gets it again.
            const gc = this.guestConfiguration;
            await conn.request(FrameType.UpdateGuestConfiguration, "update-guest-configuration", (w) => {
              w.u32(gc.channels.length);
              for (const c of gc.channels) w.string(c);
              w.metadata(gc.extensions);
            });
          }
          if (this.closed) throw new ConnectionError("witmq: the client was closed");
        } catch (e) {
          conn.close();
          throw e;
        }
        this.conn = conn;
        return conn;
      } catch (e) {
        // A refusal (a token, a name) would be the same elsewhere; a server going away is not.
        if (e instanceof WitmqError && !(e instanceof UnavailableError)) throw e;
        failures.push(`${address.host}:${address.port}: ${(e as Error).message}`);
        errors.push(e);
      }
    }
    // With one server its own error says it best (a ProtocolError stays one).
    if (errors.length === 1) throw errors[0];
    throw new ConnectionError(`witmq: no server accepted the connection (${failures.join("; ")})`, { cause: new AggregateError(errors) });
  }

  /** The open connection, reconnecting to the next server when the last one was lost. */
  private connection(): Promise<Connection> {
    if (this.closed) return Promise.reject(new ConnectionError("witmq: the client was closed"));
    if (this.conn?.open) return Promise.resolve(this.conn);
    if (this.connecting === null) {
      const next = this.conn === null ? this.index : this.index + 1;
      this.conn = null;
      this.connecting = this.reconnect(next).finally(() => {
        this.connecting = null;
      });
    }
    return this.connecting;
  }

  private async call(type: number, what: string, build: (w: FrameWriter) => void, sizeHint?: number): Promise<Buffer> {
    const conn = await this.connection();
    return conn.request(type, what, build, sizeHint);
  }

  // ---- WIT operations (section 6) ----

  /** producer.send: stores `messages` on `channel` as one batch, in order. */
  async send(channel: string, messages: MessageInput | MessageInput[]): Promise<void> {
    checkChannel("send", channel);
    const list = (Array.isArray(messages) ? messages : [messages]).map((m) => Message.from(m));
    const conn = await this.connection();
    const limits = conn.limits;
    if (list.length > limits.maxSendMessages) exhausted(`send: ${list.length} messages, above max-send-messages ${limits.maxSendMessages} of the server`);
    let size = 16 + channel.length;
    for (let i = 0; i < list.length; i++) {
      checkMessage(limits, `send: messages[${i}]`, list[i]!);
      size += messageBytes(list[i]!);
    }
    await conn.request(
      FrameType.Send,
      "send",
      (w) => {
        w.string(channel).u32(list.length);
        for (const m of list) w.message(m);
      },
      size,
    );
  }

  /**
   * consumer.subscribe-try-receive: waits up to `timeoutMs` (0: returns at once) and returns the
   * messages received, [] when none arrived. The messages are acquired: settle each.
   */
  async tryReceive(channel: string, timeoutMs = 0): Promise<Message[]> {
    checkChannel("subscribe-try-receive", channel);
    checkU32("subscribe-try-receive: timeout-ms", timeoutMs);
    const body = await this.call(FrameType.SubscribeTryReceive, "subscribe-try-receive", (w) => w.string(channel).u32(timeoutMs));
    return decodeMessages(body, "subscribe-try-receive-ok", true);
  }

  /** consumer.subscribe-receive: waits until at least one message arrives, however long. */
  async receive(channel: string): Promise<Message[]> {
    checkChannel("subscribe-receive", channel);
    const body = await this.call(FrameType.SubscribeReceive, "subscribe-receive", (w) => w.string(channel));
    return decodeMessages(body, "subscribe-receive-ok", false);
  }

  /**
   * consumer.update-guest-configuration: the channels this client receives from (and streams),
   * with extensions (start, group, batch-size, lease-ms, settlement; docs/CONFIGURATION.md). It
   * is sent again after a reconnect.
   */
  async updateGuestConfiguration(channels: string[], extensions: Metadata | Record<string, string> | null = null): Promise<void> {
    const what = "update-guest-configuration";
    if (!Array.isArray(channels)) refuse(`${what}: channels: not an array`);
    channels.forEach((c, i) => checkChannel(`${what}: channels[${i}]`, c));
    const ext: Metadata | null = extensions === null || Array.isArray(extensions) ? extensions : Object.entries(extensions);
    const conn = await this.connection();
    const limits = conn.limits;
    if (channels.length > limits.maxConfigChannels) exhausted(`${what}: ${channels.length} channels, above max-config-channels ${limits.maxConfigChannels} of the server`);
    if (ext !== null) checkPairs(limits, `${what}: extensions`, ext, false);
    await conn.request(FrameType.UpdateGuestConfiguration, what, (w) => {
      w.u32(channels.length);
      for (const c of channels) w.string(c);
      w.metadata(ext);
    });
    this.guestConfiguration = { channels: [...channels], extensions: ext === null ? null : [...ext] };
  }

  private settle(type: number, what: string, m: Settleable): Promise<Buffer> {
    const receipt = typeof m === "string" ? m : m instanceof Message ? m.receipt : undefined;
    if (receipt === undefined) refuse(`${what}: the message has no witmq-receipt (only delivered messages can be settled)`);
    checkString(`${what}: witmq-receipt`, receipt);
    if (Buffer.byteLength(receipt) + 13 > MAX_RESERVED_BYTES) exhausted(`${what}: witmq-receipt: ${Buffer.byteLength(receipt)} bytes, above what a message may carry`);
    // Section 6.5: the receipt alone settles; empty data, format raw, just that entry.
    return this.call(type, what, (w) => w.message({ data: new Uint8Array(0), format: Format.Raw, metadata: [["witmq-receipt", receipt]] }), 64 + receipt.length * 3);
  }

  /** consumer.complete-message: settles (accepts) a delivered message, by its receipt. */
  async complete(message: Settleable): Promise<void> {
    await this.settle(FrameType.CompleteMessage, "complete-message", message);
  }

  /** consumer.abandon-message: rejects a delivered message (requeue or dead letter, per channel). */
  async abandon(message: Settleable): Promise<void> {
    await this.settle(FrameType.AbandonMessage, "abandon-message", message);
  }

  // ---- streaming (section 7) ----

  /**
   * Starts a stream over the configured channels (updateGuestConfiguration first) and returns it
   * as an async iterator of messages. One stream per connection.
   */
  async stream(options: StreamOptions = {}): Promise<Stream> {
    const credit = options.credit ?? 100;
    checkU32("stream-start: credit", credit);
    const conn = await this.connection();
    const max = conn.limits.maxCredit;
    if (max !== 0 && credit > max) exhausted(`stream-start: credit ${credit} is above max-credit ${max} of the server`);
    const id = conn.peekId();
    const stream = new Stream(conn, id, credit, options.autoCredit ?? true);
    await conn.request(
      FrameType.StreamStart,
      "stream-start",
      (w) => w.u32(credit),
      16,
      () => conn.attachStream(id, stream),
    );
    return stream;
  }

  // ---- keepalive (section 8) ----

  /** Sends a ping and resolves with the pong's payload (the same). */
  async ping(payload: bigint = 0n): Promise<bigint> {
    if (payload < 0n || payload > 0xffffffffffffffffn) refuse(`ping: payload ${payload} is not in 0..2^64-1`);
    const body = await this.call(FrameType.Ping, "ping", (w) => w.u64(payload));
    const r = new BodyReader(body, "pong");
    const echoed = r.u64("payload");
    r.end();
    if (echoed !== payload) throw new ProtocolError(`pong: payload ${echoed} is not the ping's ${payload}`);
    return echoed;
  }

  // ---- admin extensions (section 13) ----

  private async admin(type: number, what: string, request: Record<string, unknown>): Promise<Buffer> {
    const json = JSON.stringify(request);
    return this.call(type, what, (w) => w.string(json), 16 + json.length * 3);
  }

  private async adminJson(type: number, what: string, request: Record<string, unknown>): Promise<Record<string, unknown>> {
    return decodeJson(await this.admin(type, what, request), `${what}-ok`);
  }

  /** The channels (all with `monitor`, else those the identity has a grant on) with their stats. */
  async channelList(): Promise<ChannelStats[]> {
    const reply = await this.adminJson(FrameType.ChannelList, "channel-list", {});
    if (!Array.isArray(reply.channels)) throw new ProtocolError("channel-list-ok: channels: not an array");
    return reply.channels as ChannelStats[];
  }

  /** Creates a channel or updates its settings (keys left out keep their value). */
  async channelDeclare(name: string, settings?: ChannelSettings): Promise<void> {
    checkChannel("channel-declare: name", name);
    await this.adminJson(FrameType.ChannelDeclare, "channel-declare", settings === undefined ? { name } : { name, settings });
  }

  /** Deletes a channel and its messages. */
  async channelDelete(name: string): Promise<void> {
    checkChannel("channel-delete: name", name);
    await this.adminJson(FrameType.ChannelDelete, "channel-delete", { name });
  }

  /** One channel's settings, depth, counters and subscriptions. */
  async channelStats(name: string): Promise<ChannelStats> {
    checkChannel("channel-stats: name", name);
    return (await this.adminJson(FrameType.ChannelStats, "channel-stats", { name })) as ChannelStats;
  }

  /**
   * Reads up to `max` messages from sequence `from` on without acquiring them. The next page
   * starts at the last message's sequence + 1; [] means the end.
   */
  async browse(channel: string, options: { from?: number | bigint; max?: number } = {}): Promise<Message[]> {
    checkChannel("browse: channel", channel);
    const request: Record<string, unknown> = { channel };
    const conn = await this.connection();
    if (options.max !== undefined) {
      checkU32("browse: max", options.max);
      if (options.max > conn.limits.maxReceiveMessages) exhausted(`browse: max ${options.max} is above max-receive-messages ${conn.limits.maxReceiveMessages} of the server`);
      request.max = options.max;
    }
    let json = JSON.stringify(request);
    if (options.from !== undefined) {
      const from = BigInt(options.from);
      if (from < 0n || from > 0xffffffffffffffffn) refuse(`browse: from: ${from} is not a sequence in 0..2^64-1`);
      // A bigint is written as a JSON number without passing through a double.
      json = `${json.slice(0, -1)},"from":${from.toString()}}`;
    }
    const body = await conn.request(FrameType.Browse, "browse", (w) => w.string(json), 16 + json.length * 3);
    return decodeMessages(body, "browse-ok", false);
  }

  /** Moves dead letters of `channel` (a dead-letter channel) back to their source channels. */
  async replayDeadLetters(channel: string, options: { max?: number } = {}): Promise<number> {
    checkChannel("replay-dead-letters: channel", channel);
    const request: Record<string, unknown> = { channel };
    if (options.max !== undefined) request.max = checkU32("replay-dead-letters: max", options.max);
    const reply = await this.adminJson(FrameType.ReplayDeadLetters, "replay-dead-letters", request);
    return Number(reply.moved);
  }

  /** Settles every available message of `channel`; returns how many. */
  async purge(channel: string): Promise<number> {
    checkChannel("purge: channel", channel);
    const reply = await this.adminJson(FrameType.Purge, "purge", { channel });
    return Number(reply.purged);
  }

  /** The server's counters (needs `monitor`). */
  async serverStats(): Promise<Record<string, unknown>> {
    return this.adminJson(FrameType.ServerStats, "server-stats", {});
  }
}
