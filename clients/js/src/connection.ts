// One protocol connection (docs/PROTOCOL.md section 15): a socket, a reader that splits frames and
// routes each to the pending request with its id or to the stream, and a writer that pipelines
// requests (many in flight, matched by request id). Anything the server sends that the protocol
// does not allow closes the connection with a ProtocolError; requests without an answer then fail.

import * as net from "node:net";
import * as tls from "node:tls";

import { BodyReader, FrameType, FrameWriter, MAX_FRAME_BEFORE_CONNECT_OK, decodeConnectOk, type ServerLimits, type WireMessage } from "./codec.js";
import { ConnectionError, ProtocolError, ResourceExhaustedError, errorFor } from "./errors.js";

/** TLS settings: the server is verified against `ca` and the host it is reached at. */
export interface TlsOptions {
  /** PEM of the CA(s) the server's certificate must chain to (default: the system's). */
  ca?: string | Buffer | Array<string | Buffer>;
  /** PEM of this client's certificate, for servers that ask for one. */
  cert?: string | Buffer;
  /** PEM of the key of `cert`. */
  key?: string | Buffer;
  /** The name the server's certificate must carry (default: the host connected to). */
  servername?: string;
  /** false turns off verifying the server: protects only against a passive eavesdropper. */
  rejectUnauthorized?: boolean;
}

/** Where a server listens. */
export interface ServerAddress {
  host: string;
  port: number;
}

export interface ConnectionOptions {
  /** The WIT client name: "" (default) is anonymous, ephemeral subscriptions. At most 200 bytes. */
  name?: string;
  /** The authentication token (docs/SECURITY.md), at most 4096 bytes. */
  token?: string;
  /** Connect with TLS (to a `tls-listen` port). */
  tls?: TlsOptions | boolean;
  /** Time for TCP, TLS and connect-ok together, in ms (default 10000). */
  connectTimeoutMs?: number;
  /**
   * The largest frame this client reads (default 67108864, 64 MiB), whatever max-frame-bytes the
   * server announces: a server cannot make the client buffer more than this for one frame.
   * Raise it for a server configured to send larger frames.
   */
  maxFrameBytes?: number;
}

/** Receives the frames of the connection's stream (stream.ts). */
export interface StreamSink {
  deliver(channel: string, messages: WireMessage[]): void;
  end(error: Error): void;
}

interface Pending {
  expect: number;
  what: string;
  resolve(body: Buffer): void;
  reject(error: Error): void;
  /** Run synchronously when the reply arrives, before anything else is read. */
  onReply?: (body: Buffer) => void;
}

/** The id of the connect request; ids of later requests count up from 2 and wrap. */
const CONNECT_ID = 1;

export class Connection {
  readonly address: ServerAddress;
  limits!: ServerLimits;

  private readonly socket: net.Socket;
  private readonly pending = new Map<number, Pending>();
  private nextId = CONNECT_ID + 1;
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** The length field of the frame being read; -1 while its 4 length bytes are awaited. */
  private frameLength = -1;
  private maxFrame = MAX_FRAME_BEFORE_CONNECT_OK;
  private outgoing: Buffer[] = [];
  private outgoingBytes = 0;
  private closedWith: Error | null = null;
  private pinger: NodeJS.Timeout | null = null;
  private readonly closeListeners: Array<(error: Error) => void> = [];
  private stream: { id: number; sink: StreamSink } | null = null;

  private constructor(address: ServerAddress, socket: net.Socket) {
    this.address = address;
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (e) => this.fail(new ConnectionError(`${this.where}: ${e.message}`, { cause: e })));
    socket.on("close", () => this.fail(new ConnectionError(`${this.where}: the server closed the connection`)));
  }

  private get where(): string {
    return `witmq ${this.address.host}:${this.address.port}`;
  }

  /** Opens a connection and completes `connect`; rejects with the goaway's error or a ConnectionError. */
  static open(address: ServerAddress, options: ConnectionOptions = {}): Promise<Connection> {
    const name = options.name ?? "";
    const frame = new FrameWriter(FrameType.Connect, CONNECT_ID);
    frame.u32(1).u16(1).string(name);
    if (options.token === undefined) frame.u8(0);
    else frame.u8(1).string(options.token);
    const bytes = frame.finish();

    let socket: net.Socket;
    if (options.tls) {
      const t: TlsOptions = options.tls === true ? {} : options.tls;
      const servername = t.servername ?? (net.isIP(address.host) ? undefined : address.host);
      const tlsOptions: tls.ConnectionOptions = { host: address.host, port: address.port, minVersion: "TLSv1.2" };
      if (servername !== undefined) tlsOptions.servername = servername;
      if (t.ca !== undefined) tlsOptions.ca = t.ca;
      if (t.cert !== undefined) tlsOptions.cert = t.cert;
      if (t.key !== undefined) tlsOptions.key = t.key;
      if (t.rejectUnauthorized !== undefined) tlsOptions.rejectUnauthorized = t.rejectUnauthorized;
      socket = tls.connect(tlsOptions);
    } else {
      socket = net.connect({ host: address.host, port: address.port });
    }
    const conn = new Connection(address, socket);
    const timeoutMs = options.connectTimeoutMs ?? 10000;
    return new Promise<Connection>((resolve, reject) => {
      const timer = setTimeout(() => {
        conn.fail(new ConnectionError(`${conn.where}: no connect-ok within ${timeoutMs} ms`));
      }, timeoutMs);
      conn.pending.set(CONNECT_ID, {
        expect: FrameType.Connect | 0x80,
        what: "connect",
        onReply: (body) => {
          conn.limits = decodeConnectOk(body);
          if (conn.limits.version !== 1) {
            throw new ProtocolError(`connect-ok: version: ${conn.limits.version}, but the client offered only 1`);
          }
          conn.maxFrame = Math.min(conn.limits.maxFrameBytes, options.maxFrameBytes ?? 67108864);
        },
        resolve: () => {
          clearTimeout(timer);
          conn.startPinger();
          resolve(conn);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      conn.write(bytes);
    });
  }

  /** True until the connection closed (either side) or failed. */
  get open(): boolean {
    return this.closedWith === null;
  }

  /** Called once when the connection ends, with why. */
  onClose(listener: (error: Error) => void): void {
    if (this.closedWith !== null) listener(this.closedWith);
    else this.closeListeners.push(listener);
  }

  /** Closes the connection; unanswered requests fail with a ConnectionError. */
  close(): void {
    this.fail(new ConnectionError(`${this.where}: closed by the client`));
  }

  /** A fresh request id: never 0 or the connect's, never one still pending or an active stream's. */
  private takeId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = this.nextId >= 0xffffffff ? CONNECT_ID + 1 : this.nextId + 1;
      if (!this.pending.has(id) && this.stream?.id !== id) return id;
    }
  }

  /**
   * Sends a request and resolves with the body of its success reply. `build` writes the body;
   * a frame over the server's max-frame-bytes is refused here (the server would close the
   * connection). `onReply` runs as soon as the reply is read.
   */
  request(type: number, what: string, build: (w: FrameWriter) => void, sizeHint = 64, onReply?: (body: Buffer) => void): Promise<Buffer> {
    if (this.closedWith !== null) return Promise.reject(this.closedWith);
    const id = this.takeId();
    const w = new FrameWriter(type, id, sizeHint);
    build(w);
    if (w.lengthField > this.limits.maxFrameBytes) {
      return Promise.reject(
        new ResourceExhaustedError(6, `${what}: the frame would be ${w.lengthField} bytes, above max-frame-bytes ${this.limits.maxFrameBytes} of the server`, { local: true }),
      );
    }
    const bytes = w.finish();
    return new Promise<Buffer>((resolve, reject) => {
      const p: Pending = { expect: type | 0x80, what, resolve, reject };
      if (onReply !== undefined) p.onReply = onReply;
      this.pending.set(id, p);
      this.write(bytes);
    });
  }

  /** The id the next request will get (the stream id of a stream-start about to be sent). */
  peekId(): number {
    let id = this.nextId;
    while (this.pending.has(id) || this.stream?.id === id) id = id >= 0xffffffff ? CONNECT_ID + 1 : id + 1;
    return id;
  }

  /** Routes the stream frames with `id` to `sink` (from the stream-start-ok on). */
  attachStream(id: number, sink: StreamSink): void {
    this.stream = { id, sink };
  }
  /** No more stream frames are expected (after stream-stop-ok or stream-end). */
  detachStream(id: number): void {
    if (this.stream?.id === id) this.stream = null;
  }

  private write(bytes: Buffer): void {
    // Frames written in one turn of the event loop leave as one buffer in one system call.
    this.outgoing.push(bytes);
    this.outgoingBytes += bytes.length;
    if (this.outgoing.length === 1) process.nextTick(() => this.flush());
  }

  private flush(): void {
    const frames = this.outgoing;
    const size = this.outgoingBytes;
    this.outgoing = [];
    this.outgoingBytes = 0;
    if (this.closedWith !== null) return;
    this.socket.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames, size));
  }

  private startPinger(): void {
    const idle = this.limits.idleTimeoutMs;
    if (idle === 0) return;
    // Section 8: at least every idle-timeout-ms / 2; a third leaves room for a slow turn.
    this.pinger = setInterval(() => {
      this.request(FrameType.Ping, "ping", (w) => w.u64(0n)).catch(() => undefined);
    }, Math.max(1, Math.floor(idle / 3)));
    this.pinger.unref();
  }

  private fail(error: Error): void {
    if (this.closedWith !== null) return;
    this.closedWith = error;
    if (this.pinger !== null) clearInterval(this.pinger);
    this.socket.destroy();
    this.chunks = [];
    this.buffered = 0;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(error);
    const stream = this.stream;
    this.stream = null;
    stream?.sink.end(error);
    for (const l of this.closeListeners.splice(0)) l(error);
  }

  /** The first `n` buffered bytes (n <= buffered), removed from the buffer. */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= n;
    return out;
  }

  private onData(chunk: Buffer): void {
    if (this.closedWith !== null) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    try {
      for (;;) {
        if (this.frameLength < 0) {
          if (this.buffered < 4) return;
          const length = this.take(4).readUInt32BE(0);
          // Checked as soon as the length arrives: a frame is never buffered past the limit.
          if (length < 6) throw new ProtocolError(`${this.where} sent a frame length of ${length}, below 6`);
          if (length > this.maxFrame) {
            throw new ProtocolError(
              `${this.where} sent a frame length of ${length}, above the ${this.maxFrame} bytes allowed ` +
                (this.limits === undefined
                  ? "before connect-ok"
                  : this.maxFrame === this.limits.maxFrameBytes
                    ? "(its max-frame-bytes)"
                    : "(the client's maxFrameBytes)"),
            );
          }
          this.frameLength = length;
        }
        if (this.buffered < this.frameLength) return;
        const frame = this.take(this.frameLength);
        this.frameLength = -1;
        this.onFrame(frame);
        if (this.closedWith !== null) return;
      }
    } catch (e) {
      this.fail(e instanceof Error ? e : new ProtocolError(String(e)));
    }
  }

  private onFrame(frame: Buffer): void {
    const type = frame[0]!;
    const flags = frame[1]!;
    const id = frame.readUInt32BE(2);
    const body = frame.subarray(6);
    if (flags !== 0) throw new ProtocolError(`${this.where} sent frame type 0x${hex(type)} with flags 0x${hex(flags)} (0x00 expected)`);
    const connected = this.limits !== undefined;

    if (type === FrameType.Goaway) {
      const r = new BodyReader(body, "goaway");
      const { code, text } = r.errorBody();
      r.end();
      this.fail(errorFor(code, text, { goaway: true }));
      return;
    }
    if (type === FrameType.Error) {
      const p = this.pending.get(id);
      if (p === undefined) throw new ProtocolError(`${this.where} sent an error for request id ${id}, which has no request waiting`);
      const r = new BodyReader(body, "error");
      const { code, text } = r.errorBody();
      r.end();
      this.pending.delete(id);
      p.reject(errorFor(code, text));
      return;
    }
    if (connected && (type === FrameType.Deliver || type === FrameType.StreamEnd)) {
      const stream = this.stream;
      if (stream === null || stream.id !== id) {
        throw new ProtocolError(`${this.where} sent frame type 0x${hex(type)} for stream ${id}, which is not active`);
      }
      if (type === FrameType.Deliver) {
        const r = new BodyReader(body, "deliver");
        const channel = r.string("channel");
        const messages = r.messages("messages");
        r.end();
        if (messages.length === 0) throw new ProtocolError(`${this.where} sent a deliver with no message`);
        stream.sink.deliver(channel, messages);
      } else {
        const r = new BodyReader(body, "stream-end");
        const { code, text } = r.errorBody();
        r.end();
        this.stream = null;
        stream.sink.end(errorFor(code, text));
      }
      return;
    }
    const isReply = (type >= 0x81 && type <= 0x8b) || (type >= 0xa0 && type <= 0xa7);
    if (!isReply) throw new ProtocolError(`${this.where} sent frame type 0x${hex(type)}, which is not a frame a server sends`);
    const p = this.pending.get(id);
    if (p === undefined || p.expect !== type || (!connected && id !== CONNECT_ID)) {
      throw new ProtocolError(
        `${this.where} sent frame type 0x${hex(type)} with request id ${id}, ` +
          (p === undefined ? "which has no request waiting" : `but that request (${p.what}) expects 0x${hex(p.expect)}`),
      );
    }
    this.pending.delete(id);
    try {
      p.onReply?.(body);
    } catch (e) {
      p.reject(e as Error);
      throw e;
    }
    p.resolve(body);
  }
}

function hex(n: number): string {
  return n.toString(16).padStart(2, "0");
}
