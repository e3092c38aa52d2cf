"""Reconnecting to the next server of a list when one dies."""

from __future__ import annotations

import asyncio
import socket

import pytest

import witmq
import witmq.sync
from conftest import run


def closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    address = "127.0.0.1:%d" % s.getsockname()[1]
    s.close()  # nothing listens there now
    return address


def test_connect_skips_servers_that_do_not_answer(daemon):
    async def main():
        async with await witmq.connect([closed_port(), daemon.address]) as c:
            assert c.server == daemon.address
            assert await c.ping(1) == 1
    run(main())


def test_a_list_where_no_server_answers_names_each_failure():
    a, b = closed_port(), closed_port()

    async def main():
        with pytest.raises(witmq.ConnectionLost) as e:
            await witmq.connect([a, b])
        assert a in str(e.value) and b in str(e.value)
    run(main())


def test_reconnects_to_the_next_server_when_one_dies(daemons):
    first, second = daemons(), daemons()

    async def main():
        async with await witmq.connect([first.address, second.address], name="re") as c:
            await c.update_guest_configuration(["re.q"], {"batch-size": "2"})
            await c.send("re.q", witmq.Message(b"on the first"))
            waiting = asyncio.ensure_future(c.subscribe_receive("re.nothing"))
            await c.ping(1)
            first.kill()  # no goaway
            with pytest.raises(witmq.ConnectionLost):
                await waiting  # in flight when the server died
            await c.send("re.q", [witmq.Message(b"%d" % i) for i in range(3)])
            assert c.server == second.address and c.connects == 2
            # The configuration was sent again: its batch-size applies on the new server.
            got = await c.subscribe_try_receive("re.q", 5000)
            assert [m.data for m in got] == [b"0", b"1"]
            async with c.stream(5) as s:
                m = await s.__anext__()
                assert m.data == b"2"
                await c.complete_message(m)
    run(main())


def test_a_stream_ends_with_connection_lost_when_its_server_dies(daemons):
    first, second = daemons(), daemons()

    async def main():
        async with await witmq.connect([first.address, second.address]) as c:
            await c.update_guest_configuration(["s.q"])
            s = await c.stream(5).start()
            await c.ping(1)
            first.kill()
            with pytest.raises(witmq.ConnectionLost):
                async for _ in s:
                    pass
            await c.send("s.q", witmq.Message(b"x"))
            async with c.stream(5) as s2:
                assert (await s2.__anext__()).data == b"x"
    run(main())


def test_without_reconnect_the_client_stays_down(daemons):
    d = daemons()

    async def main():
        c = await witmq.connect([d.address, closed_port()], reconnect=False)
        d.kill()
        with pytest.raises(witmq.ConnectionLost):
            await c.ping(1)
        with pytest.raises(witmq.ConnectionLost):
            await c.ping(2)
        assert c.connects == 1
        await c.close()
    run(main())


def test_the_blocking_client_reconnects_too(daemons):
    first, second = daemons(), daemons()
    with witmq.sync.connect([first.address, second.address]) as c:
        c.send("b.q", b"1")
        first.stop()  # a graceful stop: goaway unavailable, read while nothing was in flight
        c.send("b.q", b"2")  # so the next request simply goes to the next server
        assert c.server == second.address
        assert [m.data for m in c.subscribe_try_receive("b.q", 5000)] == [b"2"]
