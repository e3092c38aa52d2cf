"""Every WIT operation, ping and the admin operations against a real witmqd, asyncio and
blocking."""

from __future__ import annotations

import asyncio

import pytest

import witmq
import witmq.sync
from conftest import run


def test_connect_reports_the_servers_limits(daemon):
    async def main():
        async with await witmq.connect(daemon.address, name="limits") as c:
            return c.limits
    limits = run(main())
    assert limits.version == 1
    assert limits.server.startswith("witmqd/")
    assert limits.max_frame_bytes == 16777216
    assert limits.max_send_messages == 10000
    assert limits.max_message_bytes == 1048576


def test_send_receive_complete_keeps_data_format_and_metadata(daemon):
    async def main():
        async with await witmq.connect(daemon.address, name="ops") as c:
            metadata = [("k", "v"), ("k", "second"), ("ünï", "çødé")]
            await c.send("orders", [witmq.Message(b"\x00\xffbinary", witmq.Format.KAFKA, metadata),
                                    witmq.Message("text"),
                                    witmq.Message(b"", witmq.Format.CLOUDEVENTS, [])])
            got = await c.subscribe_try_receive("orders", 5000)
            assert [m.data for m in got] == [b"\x00\xffbinary", b"text", b""]
            assert [m.format for m in got] == [witmq.Format.KAFKA, witmq.Format.RAW,
                                               witmq.Format.CLOUDEVENTS]
            user = [(k, v) for k, v in got[0].metadata if not k.startswith("witmq-")]
            assert user == [("k", "v"), ("k", "second"), ("ünï", "çødé")]
            assert got[0].channel == "orders" and got[0].sequence == 0 and got[0].attempt == 1
            assert got[0].id == "orders/0" and got[0].receipt
            assert got[0].published_at_ms > 0
            for m in got:
                await c.complete_message(m)
            assert await c.subscribe_try_receive("orders", 0) == []
            stats = await c.channel_stats("orders")
            assert stats["completes-total"] == 3 and stats["depth"] == 0
    run(main())


def test_reserved_metadata_of_a_send_is_dropped(daemon):
    async def main():
        async with await witmq.connect(daemon.address) as c:
            await c.send("forged", witmq.Message(b"x", metadata=[("witmq-receipt", "forged"),
                                                                  ("a", "b")]))
            [m] = await c.subscribe_try_receive("forged", 5000)
            assert m.receipt != "forged"
            assert ("a", "b") in m.metadata
    run(main())


def test_subscribe_receive_waits_for_a_later_send(daemon):
    async def main():
        async with await witmq.connect(daemon.address, name="waiter") as c:
            waiting = asyncio.ensure_future(c.subscribe_receive("later"))
            await c.ping(1)  # the receive is read and waiting before the send
            assert not waiting.done()
            await c.send("later", witmq.Message(b"now"))
            [m] = await waiting
            assert m.data == b"now"
            await c.complete_message(m)
    run(main())


def test_try_receive_times_out_empty(daemon):
    async def main():
        async with await witmq.connect(daemon.address) as c:
            assert await c.subscribe_try_receive("quiet", 50) == []
    run(main())


def test_abandon_requeues_then_dead_letters_after_max_deliveries(daemon):
    async def main():
        async with await witmq.connect(daemon.address, name="dlq") as c:
            await c.channel_declare("jobs", {"max-deliveries": 2, "backoff-initial-ms": 1,
                                             "backoff-max-ms": 1})
            await c.send("jobs", witmq.Message(b"poison"))
            [m1] = await c.subscribe_try_receive("jobs", 5000)
            await c.abandon_message(m1)
            [m2] = await c.subscribe_try_receive("jobs", 5000)
            assert m2.attempt == 2 and m2.data == b"poison"
            await c.abandon_message(m2)
            [dead] = await c.browse("jobs.dlq")
            assert dead.data == b"poison" and dead.get("witmq-dlq-source") == "jobs"
            assert await c.replay_dead_letters("jobs.dlq") == 1
            assert await c.browse("jobs.dlq", start=dead.sequence + 1) == []
            [again] = await c.subscribe_try_receive("jobs", 5000)
            assert again.data == b"poison"
            await c.complete_message(again)
    run(main())


def test_admin_operations(daemon):
    async def main():
        async with await witmq.connect(daemon.address) as c:
            await c.channel_declare("admin.a", {"kind": "publish-subscribe", "durability": "none"})
            await c.send("admin.a", [witmq.Message(str(i)) for i in range(5)])
            names = [ch["name"] for ch in await c.channel_list()]
            assert "admin.a" in names
            stats = await c.channel_stats("admin.a")
            assert stats["settings"]["kind"] == "publish-subscribe"
            assert stats["head-seq"] == 5
            page = await c.browse("admin.a", start=1, max=2)
            assert [m.data for m in page] == [b"1", b"2"]
            assert all(m.receipt is None for m in page)
            await c.update_guest_configuration(["admin.b"])
            await c.send("admin.b", [witmq.Message(b"1"), witmq.Message(b"2")])
            assert await c.purge("admin.b") == 2
            server = await c.server_stats()
            assert isinstance(server, dict) and "broker" in server
            await c.channel_delete("admin.a")
            with pytest.raises(witmq.NotFoundError):
                await c.channel_stats("admin.a")
    run(main())


def test_update_guest_configuration_extensions_apply(daemon):
    async def main():
        async with await witmq.connect(daemon.address) as c:
            await c.send("ext", [witmq.Message(str(i)) for i in range(5)])
            await c.update_guest_configuration(["ext"], {"batch-size": "2", "settlement": "auto"})
            got = await c.subscribe_try_receive("ext", 5000)
            assert [m.data for m in got] == [b"0", b"1"]
            with pytest.raises(witmq.InvalidArgumentError) as e:
                await c.update_guest_configuration(["ext"], [("no-such-key", "1")])
            assert "no-such-key" in e.value.trace() and not e.value.local
    run(main())


def test_ping_returns_its_payload(daemon):
    async def main():
        async with await witmq.connect(daemon.address) as c:
            assert await c.ping(0) == 0
            assert await c.ping(2 ** 64 - 1) == 2 ** 64 - 1
    run(main())


def test_blocking_wrapper(daemon):
    with witmq.sync.connect(daemon.address, name="sync") as c:
        assert c.ping(7) == 7
        c.send("sync.q", [witmq.Message(b"a"), witmq.Message(b"b")])
        c.send("sync.q", b"c")
        got = c.subscribe_try_receive("sync.q", 5000)
        assert [m.data for m in got] == [b"a", b"b", b"c"]
        for m in got:
            c.complete_message(m)
        with pytest.raises(witmq.StaleReceiptError):
            c.complete_message(got[0])
        c.update_guest_configuration(["sync.s"])
        c.send("sync.s", [witmq.Message(str(i)) for i in range(4)])
        seen = []
        with c.stream(2) as s:
            for m in s:
                seen.append(m.data)
                c.complete_message(m)
                if len(seen) == 4:
                    break
        assert seen == [b"0", b"1", b"2", b"3"]
        assert c.channel_stats("sync.s")["completes-total"] == 4
        with pytest.raises(TimeoutError):
            c.subscribe_receive("sync.empty", timeout=0.05)
        assert c.ping(8) == 8
