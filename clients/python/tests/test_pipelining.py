"""Many requests in flight on one connection, matched by request id."""

from __future__ import annotations

import asyncio

import witmq
from conftest import run


def test_many_concurrent_requests_on_one_connection(daemon):
    async def main():
        async with await witmq.connect(daemon.address, name="pipe") as c:
            n = 2000
            sends = [c.send("pipe.q", witmq.Message(b"%d" % i)) for i in range(n)]
            pings = [c.ping(i) for i in range(n)]
            results = await asyncio.gather(*sends, *pings)
            assert results[n:] == list(range(n))  # each pong matched to its own ping
            assert c.connects == 1
            got = []
            while len(got) < n:
                got += await c.subscribe_try_receive("pipe.q", 5000)
            await asyncio.gather(*(c.complete_message(m) for m in got))
            assert sorted(int(m.data) for m in got) == list(range(n))
            assert (await c.channel_stats("pipe.q"))["completes-total"] == n
    run(main())


def test_a_waiting_receive_does_not_hold_up_later_requests(daemon):
    async def main():
        async with await witmq.connect(daemon.address) as c:
            waiting = [asyncio.ensure_future(c.subscribe_receive("wait.%d" % i)) for i in range(20)]
            for i in range(20):
                assert await c.ping(i) == i
                await c.send("other", witmq.Message(b"x"))
            assert not any(w.done() for w in waiting)
            for i in reversed(range(20)):
                await c.send("wait.%d" % i, witmq.Message(b"%d" % i))
            results = await asyncio.gather(*waiting)
            assert [r[0].data for r in results] == [b"%d" % i for i in range(20)]
    run(main())


def test_sends_from_many_tasks_keep_their_order_per_task(daemon):
    async def main():
        async with await witmq.connect(daemon.address) as c:
            async def producer(p):
                for i in range(100):
                    await c.send("order.%d" % p, witmq.Message(b"%d" % i))
            await asyncio.gather(*(producer(p) for p in range(8)))
            for p in range(8):
                got = []
                while len(got) < 100:
                    got += await c.subscribe_try_receive("order.%d" % p, 5000)
                assert [int(m.data) for m in got] == list(range(100))
    run(main())
