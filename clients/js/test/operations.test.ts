// Every WIT operation, streaming, the admin operations and ping against a real witmqd, and the
// error class each protocol error code arrives as.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  AlreadyExistsError,
  Client,
  CorruptionError,
  InternalError,
  RequestTimeoutError,
  IoError,
  PermissionDeniedError,
  UnavailableError,
  UnsupportedError,
  errorFor,
  FailedPreconditionError,
  Format,
  InvalidArgumentError,
  Message,
  NotFoundError,
  ResourceExhaustedError,
  StaleReceiptError,
  WitmqError,
  errorCodeName,
} from "witmq";

import { Daemon, uniqueChannel } from "./daemon.js";

describe("operations against witmqd", () => {
  let daemon: Daemon;
  let client: Client;

  before(async () => {
    daemon = await Daemon.start();
    client = await Client.connect({ servers: [daemon.address] });
  });
  after(async () => {
    client?.close();
    await daemon?.stop();
  });

  it("connects and reports the server's limits", () => {
    assert.equal(client.limits.version, 1);
    assert.match(client.limits.server, /^witmqd\//);
    assert.equal(client.limits.maxFrameBytes, 16777216);
    assert.equal(client.limits.maxSendMessages, 10000);
    assert.equal(client.limits.maxCredit, 10000);
  });

  it("sends and receives with data, format and metadata intact", async () => {
    const ch = uniqueChannel();
    const data = new Uint8Array([0, 1, 2, 255, 0xc3, 0x28]);
    await client.send(ch, [
      new Message(data, Format.CloudEvents, [["k", "v"], ["k", "w"], ["é", "\u0000"]]),
      "second",
      { data: "third", metadata: { a: "b" } },
    ]);
    const got = await client.tryReceive(ch, 1000);
    assert.equal(got.length, 3);
    assert.deepEqual([...got[0]!.data], [...data]);
    assert.equal(got[0]!.format, Format.CloudEvents);
    assert.deepEqual(got[0]!.metadata!.filter(([k]) => !k.startsWith("witmq-")), [["k", "v"], ["k", "w"], ["é", "\u0000"]]);
    assert.equal(got[0]!.channel, ch);
    assert.equal(got[0]!.attempt, 1);
    assert.equal(got[1]!.text(), "second");
    assert.equal(got[2]!.get("a"), "b");
    assert.equal(got[2]!.sequence, got[0]!.sequence! + 2n);
    for (const m of got) await client.complete(m);
    assert.deepEqual(await client.tryReceive(ch, 0), []);
  });

  it("an empty send is valid", async () => {
    await client.send(uniqueChannel(), []);
  });

  it("tryReceive returns [] at its timeout; receive waits for a message", async () => {
    const ch = uniqueChannel();
    assert.deepEqual(await client.tryReceive(ch, 50), []);
    const waiting = client.receive(ch);
    const other = await Client.connect({ servers: [daemon.address] });
    try {
      await other.send(ch, "late");
    } finally {
      other.close();
    }
    const got = await waiting;
    assert.equal(got.length, 1);
    assert.equal(got[0]!.text(), "late");
    await client.complete(got[0]!.receipt!);
  });

  it("abandon requeues; a second settle is stale-receipt", async () => {
    const ch = uniqueChannel();
    await client.channelDeclare(ch, { "backoff-initial-ms": 1, "backoff-max-ms": 1 });
    await client.send(ch, "x");
    const [first] = await client.tryReceive(ch, 1000);
    await client.abandon(first!);
    await assert.rejects(client.complete(first!), StaleReceiptError);
    const [again] = await client.tryReceive(ch, 5000);
    assert.equal(again!.attempt, 2);
    await client.complete(again!);
    const e = await client.complete(again!).catch((x: unknown) => x);
    assert.ok(e instanceof StaleReceiptError && e instanceof WitmqError);
    assert.equal(e.code, 4);
    assert.equal(e.codeName, "stale-receipt");
    assert.equal(e.local, false);
  });

  it("a message without a receipt is refused before sending", async () => {
    await assert.rejects(client.complete(new Message("x")), (e: unknown) => e instanceof InvalidArgumentError && e.local);
    await assert.rejects(client.complete("not-a-receipt"), (e: unknown) => e instanceof InvalidArgumentError && !e.local);
  });

  it("streams with credit: never more than the credit delivered and not taken", async () => {
    const ch = uniqueChannel();
    const producer = await Client.connect({ servers: [daemon.address] });
    const consumer = await Client.connect({ servers: [daemon.address] });
    try {
      await producer.send(ch, Array.from({ length: 50 }, (_, i) => `m${i}`));
      await consumer.updateGuestConfiguration([ch], { "batch-size": "7" });
      const stream = await consumer.stream({ credit: 4 });
      const seen: string[] = [];
      for await (const m of stream) {
        assert.ok(stream.buffered <= 4, `buffered ${stream.buffered} > credit 4`);
        seen.push(m.text());
        await consumer.complete(m);
        if (seen.length === 50) break;
      }
      assert.deepEqual(seen, Array.from({ length: 50 }, (_, i) => `m${i}`));
      // break stopped the stream: nothing is delivered after stream-stop-ok.
      await producer.send(ch, "after");
      const [after] = await consumer.tryReceive(ch, 2000);
      assert.equal(after!.text(), "after");
    } finally {
      producer.close();
      consumer.close();
    }
  });

  it("a stream with manual credit delivers only what was granted", async () => {
    const ch = uniqueChannel();
    const c = await Client.connect({ servers: [daemon.address] });
    try {
      await c.send(ch, ["a", "b", "c", "d"]);
      await c.updateGuestConfiguration([ch]);
      const stream = await c.stream({ credit: 1, autoCredit: false });
      const it = stream[Symbol.asyncIterator]();
      assert.equal((await it.next()).value!.text(), "a");
      // The credit is spent: only a credit frame brings more (a ping round trip orders it).
      await c.ping();
      assert.equal(stream.buffered, 0);
      await stream.credit(2);
      assert.equal((await it.next()).value!.text(), "b");
      assert.equal((await it.next()).value!.text(), "c");
      await stream.stop();
      assert.equal((await it.next()).done, true);
    } finally {
      c.close();
    }
  });

  it("a stream ends with the server's stream-end error when its channel is deleted", async () => {
    const ch = uniqueChannel();
    const c = await Client.connect({ servers: [daemon.address] });
    try {
      await c.updateGuestConfiguration([ch]);
      const stream = await c.stream({ credit: 10 });
      const ended = assert.rejects(stream.next(), NotFoundError);
      await client.channelDelete(ch);
      await ended;
      // A new stream may start on the same connection.
      const again = await c.stream({ credit: 1 });
      await again.stop();
    } finally {
      c.close();
    }
  });

  it("stream-start without a configured channel is failed-precondition", async () => {
    const c = await Client.connect({ servers: [daemon.address] });
    try {
      await assert.rejects(c.stream(), FailedPreconditionError);
    } finally {
      c.close();
    }
  });

  it("a named client's publish-subscribe subscription is durable across connections", async () => {
    const ch = uniqueChannel();
    await client.channelDeclare(ch, { kind: "publish-subscribe" });
    const name = `js-durable-${process.pid}`;
    const first = await Client.connect({ servers: [daemon.address], name });
    assert.deepEqual(await first.tryReceive(ch, 0), []);
    first.close();
    // Published while the named client is away: kept for it.
    await client.send(ch, "while away");
    const again = await Client.connect({ servers: [daemon.address], name });
    try {
      const [m] = await again.tryReceive(ch, 2000);
      assert.equal(m!.text(), "while away");
      await again.complete(m!);
    } finally {
      again.close();
    }
  });

  it("ping echoes its payload", async () => {
    assert.equal(await client.ping(0xfedcba9876543210n), 0xfedcba9876543210n);
  });

  it("the admin operations", async () => {
    const ch = uniqueChannel();
    const dlq = `${ch}.dlq`;
    await client.channelDeclare(ch, { kind: "point-to-point", "max-deliveries": 1, "dead-letter-channel": dlq });
    await assert.rejects(client.channelDeclare(ch, { kind: "publish-subscribe" }), AlreadyExistsError);
    await client.send(ch, ["one", "two", "three"]);

    const stats = await client.channelStats(ch);
    assert.equal(stats.name, ch);
    assert.equal(stats.depth, 3);
    assert.equal(stats.settings["dead-letter-channel"], dlq);
    assert.ok((await client.channelList()).some((c) => c.name === ch));

    const page = await client.browse(ch, { from: 0, max: 2 });
    assert.deepEqual(page.map((m) => m.text()), ["one", "two"]);
    assert.equal(page[0]!.receipt, undefined);
    const rest = await client.browse(ch, { from: page[1]!.sequence! + 1n });
    assert.deepEqual(rest.map((m) => m.text()), ["three"]);

    // One failed attempt dead-letters (max-deliveries 1); replay moves it back.
    const received = await client.tryReceive(ch, 1000);
    assert.equal(received.length, 3);
    for (const m of received) await client.abandon(m);
    const dead = await client.browse(dlq);
    assert.equal(dead.length, 3);
    assert.ok(dead[0]!.get("witmq-dlq-reason"));
    assert.equal(await client.replayDeadLetters(dlq, { max: 1 }), 1);
    assert.equal(await client.replayDeadLetters(dlq), 2);

    assert.equal(await client.purge(ch), 3);
    const server = await client.serverStats();
    assert.equal(typeof server, "object");
    assert.ok("broker" in server);

    await client.channelDelete(ch);
    await assert.rejects(client.channelStats(ch), NotFoundError);
  });

  it("server-side errors arrive as their classes and the connection stays", async () => {
    await assert.rejects(client.updateGuestConfiguration([uniqueChannel()], { "no-such-key": "1" }), InvalidArgumentError);
    const e = await client.channelDeclare(uniqueChannel(), { "lease-ms": -5 }).catch((x: unknown) => x);
    assert.ok(e instanceof InvalidArgumentError, String(e));
    assert.match(e.message, /^invalid-argument: /);
    await assert.rejects(client.browse(uniqueChannel(), { max: 1 }).then(() => client.channelDelete("no-such.channel-" + Date.now())), NotFoundError);
    assert.equal(await client.ping(7n), 7n);
  });

  it("every error code has its class; unknown codes are internal", () => {
    const classes = [
      InvalidArgumentError, NotFoundError, AlreadyExistsError, StaleReceiptError, PermissionDeniedError,
      ResourceExhaustedError, UnavailableError, CorruptionError, IoError, UnsupportedError,
      FailedPreconditionError, InternalError, RequestTimeoutError,
    ];
    classes.forEach((Class, i) => {
      const e = errorFor(i + 1, "text");
      assert.ok(e instanceof Class && e instanceof WitmqError, `code ${i + 1}`);
      assert.equal(e.code, i + 1);
      assert.equal(e.name, Class.name);
    });
    assert.equal(errorCodeName(6), "resource-exhausted");
    assert.equal(errorCodeName(13), "timeout");
    const unknown = errorFor(99, "newer");
    assert.ok(unknown instanceof InternalError);
    assert.equal(unknown.code, 99);
    assert.equal(unknown.message, "code 99: newer");
  });
});
