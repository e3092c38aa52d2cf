"""Tokens, a refused grant, and TLS with a CA and a client certificate, against a real witmqd."""

from __future__ import annotations

import ssl

import pytest

import witmq
from conftest import run, token_digest

PRODUCER = "witmq_producer-token-0123456789abcdefghijklmnopqrs"
ADMIN = "witmq_admin-token-0123456789abcdefghijklmnopqrstuvw"


def secured(extra_identities=()):
    return {
        "anonymous": {"enabled": False},
        "identities": [
            {"name": "producer", "token-sha256": token_digest(PRODUCER), "send": ["orders.*"],
             "receive": ["orders.*"]},
            {"name": "admin", "token-sha256": token_digest(ADMIN), "manage": ["*"],
             "monitor": True},
        ] + list(extra_identities),
    }


def test_tokens_and_a_refused_grant(daemons):
    d = daemons(config=secured())

    async def main():
        with pytest.raises(witmq.PermissionDeniedError) as e:
            await witmq.connect(d.address)
        assert e.value.goaway
        with pytest.raises(witmq.PermissionDeniedError):
            await witmq.connect(d.address, token="witmq_wrong-token-0123456789abcdefghijklmnop")
        async with await witmq.connect(d.address, token=PRODUCER, name="p") as c:
            await c.send("orders.eu", witmq.Message(b"ok"))
            with pytest.raises(witmq.PermissionDeniedError) as e:
                await c.send("billing", witmq.Message(b"no"))
            assert "producer" in e.value.trace() and "billing" in e.value.trace()
            assert not e.value.local and not e.value.goaway
            with pytest.raises(witmq.PermissionDeniedError):
                await c.channel_delete("orders.eu")
            with pytest.raises(witmq.PermissionDeniedError):
                await c.server_stats()
            assert await c.ping(3) == 3  # a refused request leaves the connection as it was
            [m] = await c.subscribe_try_receive("orders.eu", 5000)
            await c.complete_message(m)
        async with await witmq.connect(d.address, token=ADMIN) as admin:
            assert (await admin.channel_stats("orders.eu"))["completes-total"] == 1
            await admin.channel_delete("orders.eu")
    run(main())


def test_tls_with_a_ca_and_a_client_certificate(daemons, certs):
    config = secured([{"name": "by-certificate", "certificate-cn": "witmq-test-client",
                       "send": ["tls.*"], "receive": ["tls.*"]}])
    d = daemons(certs.server_flags() + ["--set", "tls-client-cert=required",
                                        "--set", "tls-client-ca-file=" + certs.pem("ca")],
                config=config, tls=True)

    async def main():
        # The certificate's CN names the identity: no token needed.
        async with await witmq.connect(d.tls_address, ca_file=certs.pem("ca"),
                                       cert_file=certs.pem("client"),
                                       key_file=certs.key("client")) as c:
            await c.send("tls.q", witmq.Message(b"secret"))
            [m] = await c.subscribe_try_receive("tls.q", 5000)
            assert m.data == b"secret"
            await c.complete_message(m)
            with pytest.raises(witmq.PermissionDeniedError):
                await c.send("plain", witmq.Message(b"x"))
        # A token wins over the certificate.
        async with await witmq.connect(d.tls_address, ca_file=certs.pem("ca"),
                                       cert_file=certs.pem("client"), key_file=certs.key("client"),
                                       token=ADMIN) as c:
            assert "connections-by-state" in await c.server_stats()
        # A server certificate from another CA is not trusted.
        with pytest.raises(witmq.ConnectionLost) as e:
            await witmq.connect(d.tls_address, ca_file=certs.pem("other-ca"),
                                cert_file=certs.pem("client"), key_file=certs.key("client"))
        assert "CERTIFICATE_VERIFY_FAILED" in str(e.value)
        # The host name is checked: the certificate names 127.0.0.1 and localhost, not this.
        with pytest.raises(witmq.ConnectionLost) as e:
            await witmq.connect(d.tls_address, ca_file=certs.pem("ca"),
                                cert_file=certs.pem("client"), key_file=certs.key("client"),
                                server_hostname="elsewhere.example")
        assert "elsewhere.example" in str(e.value) or "mismatch" in str(e.value)
        # Without a client certificate, or with one the server's CA does not vouch for, the
        # handshake fails.
        for cert in (None, "intruder"):
            with pytest.raises(witmq.WitmqError):
                c = await witmq.connect(
                    d.tls_address, ca_file=certs.pem("ca"),
                    cert_file=certs.pem(cert) if cert else None,
                    key_file=certs.key(cert) if cert else None, reconnect=False)
                await c.ping(1)  # TLS 1.3 reports a refused certificate after the handshake
        # Plain bytes on the TLS port do not get a protocol answer.
        with pytest.raises(witmq.ConnectionLost):
            await witmq.connect(d.tls_address, connect_timeout=5)
    run(main())


def test_a_custom_ssl_context(daemons, certs):
    d = daemons(certs.server_flags(), tls=True)

    async def main():
        context = ssl.create_default_context(cafile=certs.pem("ca"))
        async with await witmq.connect(d.tls_address, ssl_context=context) as c:
            assert await c.ping(9) == 9
    run(main())
