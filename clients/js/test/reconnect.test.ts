// Reconnecting to the next server of the list when the connection is lost.

import assert from "node:assert/strict";
import * as net from "node:net";
import { after, before, describe, it } from "node:test";

import { Client, ConnectionError, UnavailableError } from "witmq";

import { Daemon, uniqueChannel } from "./daemon.js";

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe("reconnect to the next server", () => {
  let a: Daemon;
  let b: Daemon;

  before(async () => {
    [a, b] = await Promise.all([Daemon.start(), Daemon.start()]);
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it("connects to the first server that accepts", async () => {
    const dead = await closedPort();
    const c = await Client.connect({ servers: [`127.0.0.1:${dead}`, b.address] });
    try {
      assert.equal(c.server.port, b.port);
      assert.equal(await c.ping(3n), 3n);
    } finally {
      c.close();
    }
    const one = await Client.connect({ servers: [`127.0.0.1:${dead}`] }).catch((x: unknown) => x);
    assert.ok(one instanceof ConnectionError, String(one));
    assert.match(one.message, new RegExp(`witmq 127\\.0\\.0\\.1:${dead}: connect ECONNREFUSED`));
    const dead2 = await closedPort();
    const both = await Client.connect({ servers: [`127.0.0.1:${dead}`, `127.0.0.1:${dead2}`] }).catch((x: unknown) => x);
    assert.ok(both instanceof ConnectionError, String(both));
    assert.match(both.message, new RegExp(`no server accepted the connection \\(127\\.0\\.0\\.1:${dead}: .*; 127\\.0\\.0\\.1:${dead2}: `));
  });

  it("fails what was in flight, then moves to the next server with its guest configuration", async () => {
    const ch = uniqueChannel();
    const c = await Client.connect({ servers: [a.address, b.address] });
    try {
      assert.equal(c.server.port, a.port);
      await c.updateGuestConfiguration([ch], { "batch-size": "5" });
      const waiting = c.receive(ch).then(
        () => assert.fail("the receive cannot succeed"),
        (e: unknown) => e,
      );
      await a.stop();
      const e = await waiting;
      // The server answers a waiting receive at shutdown (unavailable, then goaway), or the
      // connection simply ends.
      assert.ok(e instanceof UnavailableError || e instanceof ConnectionError, String(e));

      await c.send(ch, Array.from({ length: 8 }, (_, i) => `b${i}`));
      assert.equal(c.server.port, b.port);
      // The configuration came along: a stream needs a configured channel (failed-precondition
      // otherwise) and draws from it.
      const stream = await c.stream({ credit: 100 });
      const got: string[] = [];
      for await (const m of stream) {
        got.push(m.text());
        await c.complete(m);
        if (got.length === 8) break;
      }
      assert.deepEqual(got, Array.from({ length: 8 }, (_, i) => `b${i}`));
    } finally {
      c.close();
    }
  });
});
