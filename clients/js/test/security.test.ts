// Tokens, grants and TLS (a CA, and a client certificate naming an identity) against witmqd.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";

import { Client, ConnectionError, PermissionDeniedError } from "witmq";

import { Daemon, generateToken, makeCertificates, tempDir, uniqueChannel } from "./daemon.js";
import { rmSync } from "node:fs";

describe("tokens, grants and TLS", () => {
  let daemon: Daemon;
  let certDir: string;
  let cert: (name: string) => { pem: string; key: string };
  const producer = generateToken();
  const admin = generateToken();

  before(async () => {
    certDir = tempDir("certs");
    cert = makeCertificates(certDir);
    daemon = await Daemon.start(
      [
        "--tls-listen", "127.0.0.1:0",
        "--set", `tls-cert-file=${cert("server").pem}`,
        "--set", `tls-key-file=${cert("server").key}`,
        "--set", "tls-client-cert=optional",
        "--set", `tls-client-ca-file=${cert("ca").pem}`,
      ],
      {
        anonymous: { enabled: false },
        identities: [
          { name: "producer", "token-sha256": producer.sha256, send: ["orders.*"], receive: ["orders.*"] },
          { name: "admin", "token-sha256": admin.sha256, send: ["*"], receive: ["*"], manage: ["*"], monitor: true },
          { name: "certified", "certificate-cn": "witmq-js-client", send: ["certified.*"], receive: ["certified.*"] },
        ],
      },
    );
  });
  after(async () => {
    await daemon?.stop();
    if (certDir) rmSync(certDir, { recursive: true, force: true });
  });

  it("refuses a connection without a token or with a wrong one", async () => {
    const none = await Client.connect({ servers: [daemon.address] }).catch((e: unknown) => e);
    assert.ok(none instanceof PermissionDeniedError, String(none));
    assert.equal(none.goaway, true);
    const wrong = await Client.connect({ servers: [daemon.address], token: "witmq_wrong" }).catch((e: unknown) => e);
    assert.ok(wrong instanceof PermissionDeniedError, String(wrong));
  });

  it("holds a token's identity to its grants; a refusal leaves the connection", async () => {
    const c = await Client.connect({ servers: [daemon.address], token: producer.token });
    try {
      const ch = `orders.${uniqueChannel()}`;
      await c.send(ch, "ok");
      const refused = await c.send("billing", "no").catch((e: unknown) => e);
      assert.ok(refused instanceof PermissionDeniedError, String(refused));
      assert.match(refused.message, /identity 'producer' may not send to channel 'billing'/);
      await assert.rejects(c.serverStats(), PermissionDeniedError);
      await assert.rejects(c.channelDelete(ch), PermissionDeniedError);
      const [m] = await c.tryReceive(ch, 1000);
      assert.equal(m!.text(), "ok");
      await c.complete(m!);
    } finally {
      c.close();
    }
  });

  it("connects over TLS, verifying the server against the CA, with a token", async () => {
    const ca = readFileSync(cert("ca").pem);
    for (const host of ["127.0.0.1", "localhost"]) {
      const c = await Client.connect({ servers: [`${host}:${daemon.tlsPort}`], token: admin.token, tls: { ca } });
      try {
        assert.ok((await c.serverStats()).broker);
      } finally {
        c.close();
      }
    }
  });

  it("refuses a server whose certificate does not chain to the given CA", async () => {
    const e = await Client.connect({
      servers: [`127.0.0.1:${daemon.tlsPort}`],
      token: admin.token,
      tls: { ca: readFileSync(cert("other-ca").pem) },
      connectTimeoutMs: 5000,
    }).catch((x: unknown) => x);
    assert.ok(e instanceof ConnectionError, String(e));
    assert.match(e.message, /certificate/);
  });

  it("authenticates with a client certificate whose CN names an identity", async () => {
    const c = await Client.connect({
      servers: [`localhost:${daemon.tlsPort}`],
      tls: { ca: readFileSync(cert("ca").pem), cert: readFileSync(cert("client").pem), key: readFileSync(cert("client").key) },
    });
    try {
      const ch = `certified.${uniqueChannel()}`;
      await c.send(ch, "by certificate");
      assert.equal((await c.tryReceive(ch, 1000))[0]!.text(), "by certificate");
      await assert.rejects(c.send(`orders.${uniqueChannel()}`, "x"), /identity 'certified' may not send/);
    } finally {
      c.close();
    }
    // Without the certificate and without a token, the same TLS connection is anonymous: refused.
    await assert.rejects(
      Client.connect({ servers: [`localhost:${daemon.tlsPort}`], tls: { ca: readFileSync(cert("ca").pem) } }),
      PermissionDeniedError,
    );
  });
});
