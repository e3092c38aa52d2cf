// A stream (docs/PROTOCOL.md section 7) as an async iterator of messages. The server never sends
// more messages than the credit granted, so the iterator's buffer is bounded by the credit: with
// automatic credit (the default) the client grants credit back as the loop takes messages, keeping
// at most `credit` messages delivered and not yet taken.

import { FrameType, type WireMessage } from "./codec.js";
import { ProtocolError } from "./errors.js";
import { Message } from "./message.js";
import type { Connection, StreamSink } from "./connection.js";

export interface StreamOptions {
  /** The credit: how many messages may be delivered and not yet taken (default 100). */
  credit?: number;
  /**
   * true (default): grant credit back as the loop takes messages (half the window at a time).
   * false: only credit() grants more.
   */
  autoCredit?: boolean;
}

export class Stream implements AsyncIterable<Message>, StreamSink {
  /** The stream id: the request id of its stream-start. */
  readonly id: number;
  private readonly conn: Connection;
  private readonly window: number;
  private readonly autoCredit: boolean;
  private readonly queue: Message[] = [];
  private head = 0;
  private waiter: { resolve(r: IteratorResult<Message>): void; reject(e: Error): void } | null = null;
  /** Set once no more deliveries come: null for a clean stop, else the reason. */
  private ended: { error: Error | null } | null = null;
  private taken = 0;
  /** Credit granted (stream-start and credit requests sent) minus messages delivered. */
  private outstanding: number;
  private stopping: Promise<void> | null = null;

  /** @internal Made by Client.stream() once stream-start-ok arrived. */
  constructor(conn: Connection, id: number, credit: number, autoCredit: boolean) {
    this.conn = conn;
    this.id = id;
    this.window = credit;
    this.outstanding = credit;
    this.autoCredit = autoCredit;
  }

  /** Messages delivered and not yet taken by the loop. */
  get buffered(): number {
    return this.queue.length - this.head;
  }

  /** @internal */
  deliver(_channel: string, messages: WireMessage[]): void {
    if (this.ended !== null) return;
    this.outstanding -= messages.length;
    if (this.outstanding < 0) {
      // A server that ignores credit would fill this buffer without bound: the connection
      // closes with this error, which ends the stream.
      throw new ProtocolError(`witmq stream ${this.id}: the server delivered ${-this.outstanding} messages beyond the credit granted`);
    }
    for (const m of messages) this.queue.push(new Message(m.data, m.format as Message["format"], m.metadata));
    this.wake();
  }

  /** @internal */
  end(error: Error | null): void {
    if (this.ended !== null) return;
    this.ended = { error };
    this.conn.detachStream(this.id);
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    if (w === null) return;
    if (this.head < this.queue.length) {
      this.waiter = null;
      w.resolve({ value: this.shift(), done: false });
    } else if (this.ended !== null) {
      this.waiter = null;
      if (this.ended.error === null) w.resolve({ value: undefined, done: true });
      else w.reject(this.ended.error);
    }
  }

  private shift(): Message {
    const m = this.queue[this.head]!;
    this.queue[this.head++] = undefined as unknown as Message;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    if (this.autoCredit && this.ended === null) {
      this.taken++;
      if (this.taken >= Math.max(1, Math.floor(this.window / 2))) {
        const n = this.taken;
        this.taken = 0;
        // A credit racing a stream-end is refused with failed-precondition: nothing to do then.
        this.credit(n).catch(() => undefined);
      }
    }
    return m;
  }

  /** Grants `additional` more messages (a credit request). */
  async credit(additional: number): Promise<void> {
    if (!Number.isInteger(additional) || additional < 0 || additional > 0xffffffff) {
      throw new RangeError(`credit: additional: ${additional} is not an integer in 0..4294967295`);
    }
    this.outstanding += additional;
    try {
      await this.conn.request(FrameType.Credit, "credit", (w) => w.u32(additional));
    } catch (e) {
      this.outstanding -= additional;
      throw e;
    }
  }

  /**
   * Stops the stream: resolves once the server confirmed that no more deliveries come. Messages
   * already delivered stay in the iterator (they are acquired: settle them).
   */
  stop(): Promise<void> {
    if (this.stopping === null) {
      this.stopping =
        this.ended !== null || !this.conn.open
          ? Promise.resolve()
          : this.conn.request(FrameType.StreamStop, "stream-stop", () => undefined, 16, () => this.end(null)).then(() => undefined);
    }
    return this.stopping;
  }

  /** The next message; done after stop() and the buffer is drained; throws why the stream ended. */
  next(): Promise<IteratorResult<Message>> {
    if (this.waiter !== null) return Promise.reject(new Error("stream: next() called while another next() waits"));
    if (this.head < this.queue.length) return Promise.resolve({ value: this.shift(), done: false });
    if (this.ended !== null) {
      return this.ended.error === null ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(this.ended.error);
    }
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<Message> {
    return {
      next: () => this.next(),
      // Leaving a for-await loop (break, throw) stops the stream.
      return: async () => {
        await this.stop().catch(() => undefined);
        return { value: undefined, done: true };
      },
    };
  }
}
