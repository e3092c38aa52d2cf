// The limits of connect-ok are checked before sending: a request over one is refused by the
// client itself (local: true), nothing reaches the server, and the connection stays.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { Client, InvalidArgumentError, Message, NotFoundError, ResourceExhaustedError, WitmqError } from "witmq";

import { Daemon, uniqueChannel } from "./daemon.js";

function local(Class: typeof WitmqError, pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof Class, `expected ${Class.name}, got ${String(e)}`);
    assert.equal(e.local, true, "refused by the client");
    assert.match(e.message, pattern);
    return true;
  };
}

describe("limits refused client-side", () => {
  let daemon: Daemon;
  let client: Client;

  before(async () => {
    daemon = await Daemon.start([
      "--set", "max-frame-bytes=8192",
      "--set", "max-send-messages=3",
      "--set", "max-message-bytes=100",
      "--set", "max-metadata-entries=2",
      "--set", "max-metadata-bytes=20",
      "--set", "max-config-channels=2",
      "--set", "max-credit=5",
    ]);
    client = await Client.connect({ servers: [daemon.address] });
  });
  after(async () => {
    client?.close();
    await daemon?.stop();
  });

  it("announces the configured limits", () => {
    const l = client.limits;
    assert.deepEqual(
      [l.maxFrameBytes, l.maxSendMessages, l.maxMessageBytes, l.maxMetadataEntries, l.maxMetadataBytes, l.maxConfigChannels, l.maxCredit],
      [8192, 3, 100, 2, 20, 2, 5],
    );
  });

  it("refuses each broken limit before sending and sends nothing", async () => {
    const ch = uniqueChannel();
    const bytes = (n: number) => new Uint8Array(n);
    await assert.rejects(client.send(ch, ["a", "b", "c", "d"]), local(ResourceExhaustedError, /4 messages, above max-send-messages 3/));
    await assert.rejects(client.send(ch, [bytes(100), bytes(101)]), local(ResourceExhaustedError, /messages\[1\]\.data: 101 bytes, above max-message-bytes 100/));
    await assert.rejects(
      client.send(ch, new Message("x", undefined, [["a", "1"], ["b", "2"], ["c", "3"]])),
      local(ResourceExhaustedError, /metadata: 3 entries, above max-metadata-entries 2/),
    );
    await assert.rejects(
      client.send(ch, new Message("x", undefined, { key: "0123456789abcdefghij" })),
      local(ResourceExhaustedError, /23 key and value bytes, above max-metadata-bytes 20/),
    );
    // Reserved entries do not count against the metadata limits, but they make frames large:
    // three messages of 4000 reserved bytes each are over max-frame-bytes 8192.
    const heavy = () => new Message("x", undefined, [["witmq-pad", "p".repeat(3990)]]);
    await assert.rejects(client.send(ch, [heavy(), heavy(), heavy()]), local(ResourceExhaustedError, /above max-frame-bytes 8192/));
    await assert.rejects(client.send(ch, { data: "x", format: 9 as never }), local(InvalidArgumentError, /format: 9 is not a format-spec case/));
    await assert.rejects(client.send(ch, new Message("x", undefined, { k: "\uD800" })), local(InvalidArgumentError, /lone surrogate/));
    await assert.rejects(client.send(".hidden", "x"), local(InvalidArgumentError, /starts with '\.'/));
    await assert.rejects(client.send("a b", "x"), local(InvalidArgumentError, /outside A-Z/));
    await assert.rejects(client.send("x".repeat(201), "x"), local(InvalidArgumentError, /201 bytes long/));
    await assert.rejects(
      client.updateGuestConfiguration([uniqueChannel(), uniqueChannel(), uniqueChannel()]),
      local(ResourceExhaustedError, /3 channels, above max-config-channels 2/),
    );
    await assert.rejects(client.browse(ch, { max: 10001 }), local(ResourceExhaustedError, /above max-receive-messages/));
    await assert.rejects(client.tryReceive(ch, -1), local(InvalidArgumentError, /timeout-ms: -1 is not an integer/));

    // Nothing was sent: the channel was never created, and the connection works.
    await assert.rejects(client.channelStats(ch), NotFoundError);
    assert.equal(await client.ping(1n), 1n);
    // Within the limits the same requests go through.
    await client.send(ch, [bytes(100), new Message("x", undefined, { k: "v" }), heavy()]);
    assert.equal((await client.channelStats(ch)).depth, 3);
  });

  it("refuses a stream's credit over max-credit", async () => {
    const ch = uniqueChannel();
    await client.updateGuestConfiguration([ch]);
    await assert.rejects(client.stream({ credit: 6 }), local(ResourceExhaustedError, /credit 6 is above max-credit 5/));
    const stream = await client.stream({ credit: 5, autoCredit: false });
    // The server refuses a counter over max-credit; the stream goes on.
    await assert.rejects(stream.credit(1), (e: unknown) => e instanceof ResourceExhaustedError && !e.local);
    await client.send(ch, "x");
    const m = (await stream.next()).value!;
    assert.equal(m.text(), "x");
    await stream.stop();
  });

  it("refuses connect fields over the protocol's bounds", async () => {
    await assert.rejects(Client.connect({ servers: [daemon.address], name: "n".repeat(201) }), local(ResourceExhaustedError, /name: 201 bytes/));
    await assert.rejects(Client.connect({ servers: [daemon.address], token: "t".repeat(4097) }), local(ResourceExhaustedError, /token: 4097 bytes/));
    await assert.rejects(Client.connect({ servers: ["no-port"] }), local(InvalidArgumentError, /not host:port/));
  });
});
