"""The limits of connect-ok are checked before sending: the request is refused by the client with
the error the server would give, nothing reaches the server, and the connection carries on."""

from __future__ import annotations

import pytest

import witmq
from conftest import run

SMALL = ["--set", "max-send-messages=5", "--set", "max-message-bytes=1000",
         "--set", "max-metadata-entries=2", "--set", "max-metadata-bytes=64",
         "--set", "max-config-channels=2", "--set", "max-credit=10",
         "--set", "max-batch-size=50", "--set", "default-batch-size=50",
         "--set", "max-frame-bytes=65536"]


def refused(cls, coroutine_factory, *words):
    async def check(c):
        with pytest.raises(cls) as e:
            await coroutine_factory(c)
        assert e.value.local, "refused by the server, not the client: %s" % e.value
        for w in words:
            assert w in str(e.value)
    return check


CASES = [
    refused(witmq.ResourceExhaustedError,
            lambda c: c.send("l", [witmq.Message(b"x")] * 6), "max-send-messages 5"),
    refused(witmq.ResourceExhaustedError,
            lambda c: c.send("l", witmq.Message(b"x" * 1001)), "messages[0].data", "1001"),
    refused(witmq.ResourceExhaustedError,
            lambda c: c.send("l", witmq.Message(b"x", metadata=[("a", "1")] * 3)),
            "max-metadata-entries 2"),
    refused(witmq.ResourceExhaustedError,
            lambda c: c.send("l", witmq.Message(b"x", metadata=[("a", "b" * 64)])),
            "max-metadata-bytes 64"),
    refused(witmq.ResourceExhaustedError,
            lambda c: c.send("l", witmq.Message(b"x", metadata=[("witmq-x", "1")] * 33)),
            "witmq- entries"),
    refused(witmq.ResourceExhaustedError,
            lambda c: c.update_guest_configuration(["a", "b", "c"]), "max-config-channels 2"),
    refused(witmq.ResourceExhaustedError,
            lambda c: c.update_guest_configuration(["a"], [("k", "v")] * 3),
            "max-metadata-entries"),
    refused(witmq.ResourceExhaustedError,
            lambda c: c.update_guest_configuration(["a"], [("group", "g" * 60)]),
            "65 key and value bytes", "max-metadata-bytes 64"),
    refused(witmq.ResourceExhaustedError, lambda c: c.stream(11).start(), "max-credit 10"),
    refused(witmq.InvalidArgumentError, lambda c: c.browse("l", max=51), "max-receive-messages"),
    refused(witmq.ResourceExhaustedError,
            lambda c: c.channel_declare("l", {"x": "y" * 70000}), "max-frame-bytes 65536"),
    refused(witmq.InvalidArgumentError, lambda c: c.send(".hidden", witmq.Message(b"")),
            "not a channel name"),
    refused(witmq.InvalidArgumentError, lambda c: c.send("a b", witmq.Message(b"")),
            "not a channel name"),
    refused(witmq.InvalidArgumentError, lambda c: c.send("x" * 201, witmq.Message(b"")),
            "1 to 200 bytes"),
    refused(witmq.InvalidArgumentError, lambda c: c.subscribe_try_receive("", 0),
            "1 to 200 bytes"),
    refused(witmq.InvalidArgumentError, lambda c: c.subscribe_try_receive("l", -1), "u32"),
    refused(witmq.InvalidArgumentError,
            lambda c: c.send("l", witmq.Message(b"", metadata=[("k", "\udc80")])), "UTF-8"),
    refused(witmq.InvalidArgumentError, lambda c: c.complete_message(witmq.Message(b"x")),
            "witmq-receipt"),
    refused(witmq.InvalidArgumentError, lambda c: c.ping(-1), "u64"),
]


def test_requests_over_the_limits_are_refused_before_sending(daemons):
    d = daemons(SMALL)

    async def main():
        async with await witmq.connect(d.address) as c:
            for check in CASES:
                await check(c)
            assert await c.ping(5) == 5
            # Nothing reached the server: no channel was created by a refused send.
            assert [ch["name"] for ch in await c.channel_list()] == []
            # Within the limits, the same requests go through.
            await c.send("l", [witmq.Message(b"x" * 1000, metadata=[("a", "b" * 62)])] * 5)
            assert (await c.channel_stats("l"))["sends-total"] == 5
            await c.update_guest_configuration(["a", "b"], [("group", "g" * 59)])  # 64 bytes
    run(main())


def test_name_and_token_bounds_are_checked_before_connecting(daemon):
    async def main():
        with pytest.raises(witmq.ResourceExhaustedError):
            await witmq.connect(daemon.address, name="n" * 201)
        with pytest.raises(witmq.ResourceExhaustedError):
            await witmq.connect(daemon.address, token="t" * 4097)
        with pytest.raises(witmq.InvalidArgumentError):
            await witmq.connect(daemon.address, name="\ud800")
    run(main())
