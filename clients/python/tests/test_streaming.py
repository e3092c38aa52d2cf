"""Streaming under credit (docs/PROTOCOL.md section 7) as an async iterator."""

from __future__ import annotations

import asyncio

import pytest

import witmq
from conftest import run


def test_the_server_delivers_no_more_than_the_credit_granted(daemon):
    async def main():
        async with await witmq.connect(daemon.address, name="credit") as c:
            await c.update_guest_configuration(["credit.q"])
            await c.send("credit.q", [witmq.Message(str(i)) for i in range(10)])
            got = []
            s = c.stream(3, auto_credit=False)
            async with s:
                async for m in s:
                    got.append(m)
                    if len(got) == 3:
                        break
                # stream-stop-ok follows the stream's last deliver: nothing else was pushed.
                await s.stop()
                assert [m async for m in s] == []
            assert [m.data for m in got] == [b"0", b"1", b"2"]
            rest = await c.subscribe_try_receive("credit.q", 5000)
            assert [m.data for m in rest] == [str(i).encode() for i in range(3, 10)]
            for m in got + rest:
                await c.complete_message(m)
    run(main())


def test_explicit_grants_let_more_through(daemon):
    async def main():
        async with await witmq.connect(daemon.address) as c:
            await c.update_guest_configuration(["grant.q"])
            await c.send("grant.q", [witmq.Message(str(i)) for i in range(4)])
            async with c.stream(0, auto_credit=False) as s:
                await s.grant(1)
                first = await s.__anext__()
                await s.grant(3)
                more = [await s.__anext__() for _ in range(3)]
            assert [m.data for m in [first] + more] == [b"0", b"1", b"2", b"3"]
    run(main())


def test_auto_credit_streams_many_messages_with_small_credit(daemon):
    async def main():
        async with await witmq.connect(daemon.address, name="auto") as c:
            await c.update_guest_configuration(["auto.q"], {"batch-size": "3"})
            n = 500
            await c.send("auto.q", [witmq.Message(b"%d" % i) for i in range(n)])
            seen = []
            async with c.stream(4) as s:
                async for m in s:
                    seen.append(int(m.data))
                    await c.complete_message(m)
                    if len(seen) == n:
                        break
            assert seen == list(range(n))
            assert (await c.channel_stats("auto.q"))["completes-total"] == n
    run(main())


def test_a_deleted_channel_ends_the_waiting_stream_with_not_found(daemon):
    async def main():
        async with await witmq.connect(daemon.address) as c, \
                await witmq.connect(daemon.address) as admin:
            await c.update_guest_configuration(["doomed"])
            await admin.channel_declare("doomed")
            async with c.stream(5) as s:
                await c.ping(1)  # the stream's wait is registered
                await admin.channel_delete("doomed")
                with pytest.raises(witmq.NotFoundError) as e:
                    await s.__anext__()
                assert "doomed" in e.value.trace()
            # After stream-end a new stream may start.
            await c.update_guest_configuration(["doomed"])
            async with c.stream(1):
                pass
    run(main())


def test_one_stream_per_connection_and_credit_bounds_are_checked_locally(daemon):
    async def main():
        async with await witmq.connect(daemon.address) as c:
            await c.update_guest_configuration(["one"])
            max_credit = c.limits.max_credit
            with pytest.raises(witmq.ResourceExhaustedError) as e:
                await c.stream(max_credit + 1).start()
            assert e.value.local and "max-credit" in str(e.value)
            async with c.stream(max_credit, auto_credit=False) as s:
                with pytest.raises(witmq.FailedPreconditionError) as e:
                    await c.stream(1).start()
                assert e.value.local
                with pytest.raises(witmq.ResourceExhaustedError):
                    await s.grant(1)
            await c.ping(1)
    run(main())


def test_stream_start_without_channels_is_refused_by_the_server(daemon):
    async def main():
        async with await witmq.connect(daemon.address) as c:
            with pytest.raises(witmq.FailedPreconditionError) as e:
                await c.stream(1).start()
            assert not e.value.local
            await c.update_guest_configuration(["x"])
            async with c.stream(1):
                pass
    run(main())


def test_a_consumer_cancelled_mid_wait_leaves_the_connection_usable(daemon):
    async def main():
        async with await witmq.connect(daemon.address) as c:
            receive = asyncio.ensure_future(c.subscribe_receive("cancel.q"))
            await c.ping(1)
            receive.cancel()
            with pytest.raises(asyncio.CancelledError):
                await receive
            await c.send("cancel.q", witmq.Message(b"x"))  # answers the cancelled receive
            assert await c.ping(2) == 2  # its late reply was dropped, not a protocol violation
    run(main())
