// Races against the real witmqd: a crash under a waiting receive and a stream, a reload that
// revokes the identity, the client closing with requests in flight, an idle timeout kept away
// by the client's pings. Each ends in a clear error or goes on working; nothing hangs.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import { Client, ConnectionError, NotFoundError, PermissionDeniedError, UnavailableError } from "witmq";

import { Daemon, generateToken, uniqueChannel } from "./daemon.js";

describe("races", () => {
  it("a crash of witmqd fails a waiting receive and ends a stream", async () => {
    const d = await Daemon.start();
    try {
      const c = await Client.connect({ servers: [d.address] });
      const s = await Client.connect({ servers: [d.address] });
      const ch = uniqueChannel();
      await s.updateGuestConfiguration([ch]);
      const stream = await s.stream({ credit: 10 });
      const receive = assert.rejects(c.receive(uniqueChannel()), ConnectionError);
      const streamEnd = assert.rejects(stream.next(), ConnectionError);
      await d.signal("SIGKILL");
      await Promise.all([receive, streamEnd]);
      // With no server left, the next request says so.
      await assert.rejects(c.ping(), /ECONNREFUSED/);
      c.close();
      s.close();
    } finally {
      await d.stop();
    }
  });

  it("a reload that revokes the identity ends the connection with permission-denied", async () => {
    const kept = generateToken();
    const revoked = generateToken();
    const identity = (name: string, sha256: string) => ({ name, "token-sha256": sha256, send: ["*"], receive: ["*"] });
    const config = { "log-level": "debug", anonymous: { enabled: false }, identities: [identity("kept", kept.sha256), identity("revoked", revoked.sha256)] };
    const d = await Daemon.start([], config);
    try {
      const c = await Client.connect({ servers: [d.address], token: revoked.token });
      const other = await Client.connect({ servers: [d.address], token: kept.token });
      const ch = uniqueChannel();
      const waiting = assert.rejects(c.receive(ch), PermissionDeniedError);
      await c.ping();
      writeFileSync(join(d.dir, "witmqd.json"), JSON.stringify({ ...config, identities: [identity("kept", kept.sha256)] }));
      await d.signal("SIGHUP");
      await d.waitForLog("identities replaced");
      await waiting;
      // The next request is refused (goaway), and reconnecting with the revoked token is too.
      await assert.rejects(c.ping(), PermissionDeniedError);
      await assert.rejects(c.ping(), (e: unknown) => e instanceof PermissionDeniedError && e.goaway);
      // Other identities carry on.
      await other.send(ch, "still here");
      assert.equal((await other.tryReceive(ch, 1000))[0]!.text(), "still here");
      c.close();
      other.close();
    } finally {
      await d.stop();
    }
  });

  it("closing the client fails what is in flight and ends its stream", async () => {
    const d = await Daemon.start();
    try {
      const c = await Client.connect({ servers: [d.address] });
      const ch = uniqueChannel();
      await c.updateGuestConfiguration([ch]);
      const stream = await c.stream({ credit: 5 });
      const calls = [c.receive(uniqueChannel()), c.tryReceive(uniqueChannel(), 10000), stream.next()];
      c.close();
      for (const call of calls) await assert.rejects(call, /closed by the client/);
      await assert.rejects(c.ping(), /the client was closed/);
    } finally {
      await d.stop();
    }
  });

  it("a receive waits past idle-timeout-ms: the client pings", async () => {
    const d = await Daemon.start(["--set", "idle-timeout-ms=300"]);
    try {
      const c = await Client.connect({ servers: [d.address] });
      assert.equal(c.limits.idleTimeoutMs, 300);
      const ch = uniqueChannel();
      const waiting = c.receive(ch);
      // Five idle timeouts of silence from the application.
      await new Promise((r) => setTimeout(r, 1500));
      const p = await Client.connect({ servers: [d.address] });
      await p.send(ch, "after the wait");
      const [m] = await waiting;
      assert.equal(m!.text(), "after the wait");
      c.close();
      p.close();
    } finally {
      await d.stop();
    }
  });

  it("a receive on a channel deleted under it fails with not-found; shutdown with unavailable", async () => {
    const d = await Daemon.start();
    try {
      const c = await Client.connect({ servers: [d.address] });
      const ch = uniqueChannel();
      const waiting = assert.rejects(c.receive(ch), NotFoundError);
      await c.ping();
      await c.channelDelete(ch);
      await waiting;
      const atShutdown = c.receive(ch).catch((e: unknown) => e);
      await c.ping();
      await d.signal("SIGTERM");
      const e = await atShutdown;
      assert.ok(e instanceof UnavailableError || e instanceof ConnectionError, String(e));
    } finally {
      await d.stop();
    }
  });
});
