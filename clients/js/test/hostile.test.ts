// A fake server that sends what the protocol does not allow: the client fails with a clear
// ProtocolError (or ConnectionError), closes the connection, never hangs, and never buffers more
// than one frame within the limit.

import assert from "node:assert/strict";
import * as net from "node:net";
import { after, describe, it } from "node:test";

import { Client, ConnectionError, PermissionDeniedError, ProtocolError } from "witmq";

const servers: net.Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

interface Peer {
  socket: net.Socket;
  /** Resolves when the client closed its side (or the socket ended). */
  closed: Promise<void>;
  /** The next complete frame the client sent: [type, id, body]. */
  frame(): Promise<[number, number, Buffer]>;
}

/** A server on an ephemeral port; `script` runs for each connection. */
async function fakeServer(script: (peer: Peer) => Promise<void> | void): Promise<string> {
  const server = net.createServer((socket) => {
    let buf = Buffer.alloc(0);
    let wake: (() => void) | null = null;
    socket.on("data", (b) => {
      buf = Buffer.concat([buf, b]);
      wake?.();
    });
    socket.on("error", () => undefined);
    const closed = new Promise<void>((r) => socket.on("close", () => r()));
    const peer: Peer = {
      socket,
      closed,
      async frame() {
        for (;;) {
          if (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
            const n = buf.readUInt32BE(0);
            const f = buf.subarray(4, 4 + n);
            buf = buf.subarray(4 + n);
            return [f[0]!, f.readUInt32BE(2), f.subarray(6)];
          }
          await new Promise<void>((r) => (wake = r));
        }
      },
    };
    void script(peer);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

function frame(type: number, id: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(10);
  head.writeUInt32BE(6 + body.length, 0);
  head[4] = type;
  head.writeUInt32BE(id, 6);
  return Buffer.concat([head, body]);
}

function str(s: string): Buffer {
  const b = Buffer.from(s);
  const n = Buffer.alloc(4);
  n.writeUInt32BE(b.length);
  return Buffer.concat([n, b]);
}

function connectOk(maxFrameBytes = 16777216): Buffer {
  const limits = Buffer.alloc(40);
  [maxFrameBytes, 10000, 10000, 1048576, 64, 16384, 1024, 1024, 10000, 0].forEach((v, i) => limits.writeUInt32BE(v, i * 4));
  return Buffer.concat([Buffer.from([0, 1]), str("fake/1"), limits]);
}

/** Accepts connect with connect-ok, then runs `then`. */
function afterConnect(then: (peer: Peer) => Promise<void> | void, maxFrameBytes?: number) {
  return async (peer: Peer) => {
    const [type, id] = await peer.frame();
    assert.equal(type, 0x01);
    peer.socket.write(frame(0x81, id, connectOk(maxFrameBytes)));
    await then(peer);
  };
}

async function expectProtocolError(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  const e = await promise.then(
    () => assert.fail("expected a ProtocolError"),
    (x: unknown) => x,
  );
  assert.ok(e instanceof ProtocolError, `expected a ProtocolError, got ${String(e)}`);
  assert.match((e as Error).message, pattern);
}

describe("hostile server input", () => {
  it("gives up on a server that never answers connect", async () => {
    const address = await fakeServer(() => undefined);
    const started = Date.now();
    const e = await Client.connect({ servers: [address], connectTimeoutMs: 300 }).catch((x: unknown) => x);
    assert.ok(e instanceof ConnectionError, String(e));
    assert.match((e as Error).message, /no connect-ok within 300 ms/);
    assert.ok(Date.now() - started < 10000);
  });

  it("refuses a length field before connect-ok above 65536 from the length alone", async () => {
    let peerClosed: Promise<void> | null = null;
    const address = await fakeServer(async (peer) => {
      peerClosed = peer.closed;
      await peer.frame();
      // Only the length: the client must not wait for (or buffer) 4 GiB.
      const length = Buffer.alloc(4);
      length.writeUInt32BE(0xffffffff);
      peer.socket.write(length);
    });
    await expectProtocolError(Client.connect({ servers: [address] }), /frame length of 4294967295, above the 65536 bytes allowed before connect-ok/);
    await peerClosed;
  });

  it("refuses a frame above the max-frame-bytes the server announced", async () => {
    const address = await fakeServer(
      afterConnect((peer) => {
        const length = Buffer.alloc(4);
        length.writeUInt32BE(5000);
        peer.socket.write(length);
      }, 4096),
    );
    const c = await Client.connect({ servers: [address] });
    await expectProtocolError(c.receive("x"), /frame length of 5000, above the 4096 bytes allowed \(its max-frame-bytes\)/);
    // The connection is gone; the next request reconnects (to the same fake server).
    c.close();
  });

  it("reads no frame above its own maxFrameBytes, whatever the server announced", async () => {
    const address = await fakeServer(
      afterConnect((peer) => {
        const length = Buffer.alloc(4);
        length.writeUInt32BE(100 * 1024 * 1024);
        peer.socket.write(length);
      }, 0xffffffff),
    );
    const c = await Client.connect({ servers: [address] });
    assert.equal(c.limits.maxFrameBytes, 0xffffffff);
    await expectProtocolError(c.receive("x"), /frame length of 104857600, above the 67108864 bytes allowed \(the client's maxFrameBytes\)/);
    c.close();
  });

  it("refuses a length below 6, flags, unknown types and replies to no request", async () => {
    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.from([0, 0, 0, 2, 0x82, 0]), /frame length of 2, below 6/],
      [(() => { const f = frame(0x8b, 2, Buffer.alloc(8)); f[5] = 1; return f; })(), /flags 0x01/],
      [frame(0x55, 2), /frame type 0x55, which is not a frame a server sends/],
      [frame(0x01, 2), /frame type 0x01, which is not a frame a server sends/],
      [frame(0x82, 2), /frame type 0x82 with request id 2, but that request \(ping\) expects 0x8b/],
      [frame(0x8b, 99, Buffer.alloc(8)), /request id 99, which has no request waiting/],
      [frame(0xff, 77, Buffer.concat([Buffer.from([0, 2]), str("x")])), /an error for request id 77/],
      [frame(0xc0, 2, Buffer.alloc(0)), /frame type 0xc0 for stream 2, which is not active/],
    ];
    for (const [bytes, pattern] of cases) {
      const address = await fakeServer(
        afterConnect(async (peer) => {
          await peer.frame();
          peer.socket.write(bytes);
        }),
      );
      const c = await Client.connect({ servers: [address] });
      await expectProtocolError(c.ping(), pattern);
      c.close();
    }
  });

  it("refuses malformed bodies, naming the field, before allocating what they announce", async () => {
    const countLie = Buffer.concat([Buffer.from([1]), Buffer.from([0xff, 0xff, 0xff, 0xff])]);
    const cases: Array<[Buffer, RegExp]> = [
      [countLie, /messages: 4294967295 elements of at least 6 bytes do not fit in the 0 bytes left/],
      [Buffer.from([2]), /messages: option tag 2 is neither 0 \(none\) nor 1 \(some\)/],
      [Buffer.from([0, 0]), /body: 1 bytes after the last field/],
      [Buffer.concat([Buffer.from([1, 0, 0, 0, 1]), Buffer.from([0, 0, 0, 9, 1, 2, 3, 4, 5])]), /messages\[0\]\.data: needs 9 bytes, 5 left/],
      [
        Buffer.concat([Buffer.from([1, 0, 0, 0, 1, 0, 0, 0, 0, 5, 1, 0, 0, 0, 1]), str("k"), Buffer.from([0, 0, 0, 2, 0xc3, 0x28])]),
        /messages\[0\]\.metadata\[0\]\.value: is not well-formed UTF-8/,
      ],
      [Buffer.from([1, 0, 0, 0, 1, 0, 0, 0, 0, 9, 0]), /messages\[0\]\.format: 9 is not a format-spec case/],
    ];
    for (const [body, pattern] of cases) {
      const address = await fakeServer(
        afterConnect(async (peer) => {
          const [, id] = await peer.frame();
          peer.socket.write(frame(0x83, id, body));
        }),
      );
      const c = await Client.connect({ servers: [address] });
      await expectProtocolError(c.tryReceive("x"), new RegExp(`subscribe-try-receive-ok: ${pattern.source}`));
      c.close();
    }
  });

  it("refuses a malformed connect-ok and reports a goaway's error", async () => {
    const short = await fakeServer(async (peer) => {
      const [, id] = await peer.frame();
      peer.socket.write(frame(0x81, id, connectOk().subarray(0, 30)));
    });
    await expectProtocolError(Client.connect({ servers: [short] }), /connect-ok: .*needs 4 bytes/);
    const refused = await fakeServer(async (peer) => {
      const [, id] = await peer.frame();
      peer.socket.write(frame(0xfe, id, Buffer.concat([Buffer.from([0, 5]), str("a token is required")])));
      peer.socket.end();
    });
    const e = await Client.connect({ servers: [refused] }).catch((x: unknown) => x);
    assert.ok(e instanceof PermissionDeniedError && e.goaway, String(e));
    assert.equal(e.text, "a token is required");
  });

  it("closes a stream whose server delivers beyond the credit", async () => {
    const address = await fakeServer(
      afterConnect(async (peer) => {
        const [, gcId] = await peer.frame();
        peer.socket.write(frame(0x85, gcId));
        const [type, id, body] = await peer.frame();
        assert.equal(type, 0x08);
        assert.equal(body.readUInt32BE(0), 2);
        peer.socket.write(frame(0x88, id));
        const message = Buffer.concat([str("m"), Buffer.from([5, 0])]);
        const count = Buffer.alloc(4);
        count.writeUInt32BE(3);
        peer.socket.write(frame(0xc0, id, Buffer.concat([str("jobs"), count, message, message, message])));
      }),
    );
    const c = await Client.connect({ servers: [address] });
    await c.updateGuestConfiguration(["jobs"]);
    const stream = await c.stream({ credit: 2, autoCredit: false });
    await expectProtocolError(stream.next(), /delivered 1 messages beyond the credit granted/);
    assert.equal(stream.buffered, 0);
    c.close();
  });

  it("stops reading a server that floods garbage: one error, the socket closed", async () => {
    let written = 0;
    let peerClosed: Promise<void> | null = null;
    const address = await fakeServer(
      afterConnect((peer) => {
        peerClosed = peer.closed;
        // Endless frames of an unknown type, as fast as the socket takes them.
        const chunk = Buffer.concat(Array.from({ length: 1024 }, () => frame(0x70, 1)));
        const pump = () => {
          while (!peer.socket.destroyed && written < 256 * 1024 * 1024) {
            written += chunk.length;
            if (!peer.socket.write(chunk)) return void peer.socket.once("drain", pump);
          }
        };
        pump();
      }),
    );
    const c = await Client.connect({ servers: [address] });
    await expectProtocolError(c.ping(), /frame type 0x70/);
    await peerClosed;
    // The client closed at the first bad frame, long before the 256 MiB the server meant to send.
    assert.ok(written < 64 * 1024 * 1024, `the server wrote ${written} bytes`);
  });
});
