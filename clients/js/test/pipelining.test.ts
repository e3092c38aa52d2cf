// Many requests in flight on one connection, matched by request id whatever order the replies
// come in.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { Client, NotFoundError } from "witmq";

import { Daemon, uniqueChannel } from "./daemon.js";

describe("pipelining", () => {
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

  it("keeps thousands of requests in flight and matches every reply", async () => {
    const ch = uniqueChannel();
    const n = 3000;
    // Sends, pings and failing stats interleaved, all issued before the first reply is read.
    const calls: Array<Promise<unknown>> = [];
    for (let i = 0; i < n; i++) {
      calls.push(client.send(ch, `m${i}`));
      calls.push(client.ping(BigInt(i)).then((p) => assert.equal(p, BigInt(i))));
      if (i % 100 === 0) calls.push(assert.rejects(client.channelStats(`missing.${i}`), NotFoundError));
    }
    await Promise.all(calls);
    // One connection sends to one channel in frame order (PROTOCOL.md section 12).
    const seen: string[] = [];
    for (let from = 0n; ; ) {
      const page = await client.browse(ch, { from, max: 1000 });
      if (page.length === 0) break;
      seen.push(...page.map((m) => m.text()));
      from = page[page.length - 1]!.sequence! + 1n;
    }
    assert.deepEqual(seen, Array.from({ length: n }, (_, i) => `m${i}`));
  });

  it("a waiting receive does not hold up later requests on the connection", async () => {
    const ch = uniqueChannel();
    const waiting = client.receive(ch);
    let answered = false;
    void waiting.then(() => (answered = true));
    // Later requests are answered while the receive waits.
    for (let i = 0; i < 20; i++) assert.equal(await client.ping(BigInt(i)), BigInt(i));
    assert.equal(answered, false);
    await client.send(ch, "wake");
    const [m] = await waiting;
    assert.equal(m!.text(), "wake");
    await client.complete(m!);
  });
});
