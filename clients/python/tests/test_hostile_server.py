"""A fake server that sends garbage: the client raises a clear error, never hangs, never grows.

Each scenario answers the client's connect (or not) and then sends what the test says; every test
runs under the bound of conftest.run, so a client that waited forever would fail it."""

from __future__ import annotations

import asyncio
import struct
from typing import Awaitable, Callable, List

import pytest

import witmq
from conftest import run
from witmq import _codec as codec

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def connect_ok(max_frame_bytes: int = 1 << 20, max_credit: int = 100, idle_ms: int = 0,
               server: bytes = b"fake/1") -> bytes:
    body = (struct.pack(">H", 1) + struct.pack(">I", len(server)) + server +
            struct.pack(">10I", max_frame_bytes, 100, 100, 1 << 20, 64, 16384, 16, 0, max_credit,
                        idle_ms))
    return codec.frame(codec.CONNECT | codec.REPLY, 0, body)


async def read_frame(reader: asyncio.StreamReader):
    length, = struct.unpack(">I", await reader.readexactly(4))
    rest = await reader.readexactly(length)
    return rest[0], struct.unpack(">I", rest[2:6])[0], rest[6:]


def error_body(code: int, text: bytes) -> bytes:
    return struct.pack(">HI", code, len(text)) + text


async def serve(script: Script):
    """Starts a fake server on 127.0.0.1; returns it and its address."""
    async def handle(reader, writer):
        try:
            await script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, "127.0.0.1:%d" % server.sockets[0].getsockname()[1]


Then = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


def after_connect(then: Then, **ok) -> Script:
    """Answers connect with connect-ok, reads one request and calls ``then`` with its id."""
    async def script(reader, writer):
        await read_frame(reader)
        writer.write(connect_ok(**ok))
        _, rid, _ = await read_frame(reader)
        await then(reader, writer, rid)
        await reader.read()  # until the client closes
    return script


def expect_on_ping(script: Script, error: type, *words: str, **connect_options):
    async def main():
        server, address = await serve(script)
        async with server:
            client = await witmq.connect(address, reconnect=False, **connect_options)
            with pytest.raises(error) as e:
                await client.ping(1)
            for w in words:
                assert w in str(e.value), str(e.value)
            await client.close()
            return e.value
    return run(main(), timeout=20)


@pytest.mark.parametrize("code", list(range(1, 14)) + [99])
def test_each_error_code_raises_its_own_class(code):
    async def reply(reader, writer, rid):
        writer.write(codec.frame(codec.ERROR, rid, error_body(code, b"text %d" % code)))
    expected = witmq.from_code(code, "")
    err = expect_on_ping(after_connect(reply), type(expected), "text %d" % code)
    assert err.code == code and err.trace() == "text %d" % code and not err.goaway
    assert isinstance(err, witmq.WitmqError)
    if code == 99:
        assert isinstance(err, witmq.InternalError)  # unknown codes are treated as internal


def test_distinct_classes_per_code():
    classes = {type(witmq.from_code(code, "")) for code in range(1, 14)}
    assert len(classes) == 13


def test_goaway_fails_every_pending_request_with_its_code():
    async def main():
        async def script(reader, writer):
            await read_frame(reader)
            writer.write(connect_ok())
            for _ in range(3):
                await read_frame(reader)
            writer.write(codec.frame(codec.GOAWAY, 0, error_body(7, b"shutting down")))
            await reader.read()
        server, address = await serve(script)
        async with server:
            client = await witmq.connect(address, reconnect=False)
            results = await asyncio.gather(client.ping(1), client.ping(2), client.ping(3),
                                           return_exceptions=True)
            assert all(isinstance(r, witmq.UnavailableError) and r.goaway for r in results)
            with pytest.raises(witmq.UnavailableError):
                await client.ping(4)
            await client.close()
    run(main(), timeout=20)


def test_an_oversized_frame_is_refused_from_its_length_alone():
    async def huge(reader, writer, rid):
        # Announces 4 GiB - 1 and sends 1 byte of it: the client must not wait for or allocate it.
        writer.write(struct.pack(">IBBI", 0xFFFFFFFF, codec.PING | codec.REPLY, 0, rid) + b"\x00")
    expect_on_ping(after_connect(huge, max_frame_bytes=1024), witmq.ProtocolViolation,
                   "frame length 4294967295", "6..1024")


def test_the_clients_own_frame_cap_wins_over_what_the_server_announces():
    async def big(reader, writer, rid):
        writer.write(struct.pack(">IBBI", 2 << 20, codec.PING | codec.REPLY, 0, rid))
    expect_on_ping(after_connect(big, max_frame_bytes=0xFFFFFFFF), witmq.ProtocolViolation,
                   "6..1048576", max_frame_bytes=1 << 20)


def test_a_frame_length_below_6_is_refused():
    async def tiny(reader, writer, rid):
        writer.write(struct.pack(">I", 5) + b"\x8b\x00\x00\x00\x01")
    expect_on_ping(after_connect(tiny), witmq.ProtocolViolation, "frame length 5")


@pytest.mark.parametrize("name,body,words", [
    ("lying list count", struct.pack(">I", 1 << 30), ["count 1073741824 cannot fit"]),
    ("string past the end", struct.pack(">II", 1, 50) + b"abc", ["needs 50 bytes"]),
    ("bad format", struct.pack(">II", 1, 0) + b"\x09\x00", ["not a format-spec case"]),
    ("bad option tag", struct.pack(">II", 1, 0) + b"\x05\x07", ["option tag 7"]),
    ("bytes left over", struct.pack(">II", 1, 0) + b"\x05\x00!", ["left over"]),
    ("invalid UTF-8 key", struct.pack(">II", 1, 0) + b"\x05\x01" + struct.pack(">II", 1, 2)
     + b"\xc0\xaf" + struct.pack(">I", 0), ["not well-formed UTF-8"]),
    ("too many messages", struct.pack(">I", 101) + b"\x00\x00\x00\x00\x05\x00" * 101,
     ["101 messages, more than the 100 allowed"]),
])
def test_malformed_reply_bodies_are_protocol_violations(name, body, words):
    async def main():
        async def script(reader, writer):
            await read_frame(reader)
            writer.write(connect_ok())
            _, rid, _ = await read_frame(reader)
            writer.write(codec.frame(codec.SUBSCRIBE_RECEIVE | codec.REPLY, rid, body))
            await reader.read()
        server, address = await serve(script)
        async with server:
            client = await witmq.connect(address, reconnect=False)
            with pytest.raises(witmq.ProtocolViolation) as e:
                await client.subscribe_receive("q")
            for w in words:
                assert w in str(e.value), str(e.value)
            # The connection is gone: later requests fail at once, they do not wait.
            with pytest.raises(witmq.ProtocolViolation):
                await client.ping(1)
            await client.close()
    run(main(), timeout=20)


def test_a_reply_to_no_request_is_a_protocol_violation():
    async def stray(reader, writer, rid):
        writer.write(codec.frame(codec.PING | codec.REPLY, rid + 1000, codec.u64(1)))
    expect_on_ping(after_connect(stray), witmq.ProtocolViolation, "was not asked")


def test_a_reply_of_the_wrong_type_is_a_protocol_violation():
    async def wrong(reader, writer, rid):
        writer.write(codec.frame(codec.SEND | codec.REPLY, rid))
    expect_on_ping(after_connect(wrong), witmq.ProtocolViolation, "answers request type 0x0b")


def test_unknown_frame_types_and_flags_are_protocol_violations():
    async def unknown(reader, writer, rid):
        writer.write(codec.frame(0x77, rid))
    expect_on_ping(after_connect(unknown), witmq.ProtocolViolation)

    async def flagged(reader, writer, rid):
        writer.write(struct.pack(">IBBI", 14, codec.PING | codec.REPLY, 1, rid) + codec.u64(1))
    expect_on_ping(after_connect(flagged), witmq.ProtocolViolation, "flags 0x01")


def test_a_connection_closed_mid_frame_is_connection_lost():
    async def cut(reader, writer, rid):
        writer.write(struct.pack(">IBBI", 14, codec.PING | codec.REPLY, 0, rid) + b"\x00\x00")
        writer.close()
    expect_on_ping(after_connect(cut), witmq.ConnectionLost, "in the middle of a frame")


def test_deliveries_beyond_the_credit_are_refused_and_the_buffer_stays_bounded():
    async def main():
        async def script(reader, writer):
            await read_frame(reader)
            writer.write(connect_ok())
            _, rid, _ = await read_frame(reader)  # stream-start, credit 2
            writer.write(codec.frame(codec.STREAM_START | codec.REPLY, rid))
            one = codec.string("q") + codec.messages([witmq.Message(b"m")])
            for _ in range(1000):  # a server that ignores credit
                writer.write(codec.frame(codec.DELIVER, rid, one))
            await reader.read()
        server, address = await serve(script)
        async with server:
            client = await witmq.connect(address, reconnect=False)
            stream = await client.stream(2, auto_credit=False).start()
            got: List[witmq.Message] = []
            with pytest.raises(witmq.ProtocolViolation) as e:
                async for m in stream:
                    got.append(m)
            assert "more than the 0 credit granted" in str(e.value)
            assert len(got) == 2
            await client.close()
    run(main(), timeout=20)


def test_deliveries_for_no_stream_are_refused():
    async def deliver(reader, writer, rid):
        writer.write(codec.frame(codec.DELIVER, 5, codec.string("q") + codec.messages(
            [witmq.Message(b"m")])))
    expect_on_ping(after_connect(deliver), witmq.ProtocolViolation, "no active stream")


@pytest.mark.parametrize("reply,words", [
    (b"garbage!!!!", ["frame length"]),
    (codec.frame(codec.PING | codec.REPLY, 0, codec.u64(1)), ["expected connect-ok"]),
    (codec.frame(codec.CONNECT | codec.REPLY, 0, b"\x00\x01"), ["connect-ok: server"]),
    (connect_ok()[:-1] + b"", ["in the middle of a frame"]),
    (codec.frame(codec.GOAWAY, 0, error_body(5, b"a token is required")),
     ["a token is required"]),
])
def test_a_bad_connect_answer_fails_connect_clearly(reply, words):
    async def main():
        async def script(reader, writer):
            await read_frame(reader)
            writer.write(reply)
            await writer.drain()
            writer.close()
        server, address = await serve(script)
        async with server:
            with pytest.raises(witmq.WitmqError) as e:
                await witmq.connect(address, reconnect=False)
            for w in words:
                assert w in str(e.value), str(e.value)
    run(main(), timeout=20)


def test_a_server_that_never_answers_connect_times_out():
    async def main():
        async def silent(reader, writer):
            await reader.read()
        server, address = await serve(silent)
        async with server:
            with pytest.raises(witmq.ConnectionLost) as e:
                await witmq.connect(address, connect_timeout=0.2)
            assert "no server answered" in str(e.value) and address in str(e.value)
    run(main(), timeout=20)


def test_the_client_pings_when_the_server_has_an_idle_timeout():
    async def main():
        pinged = asyncio.get_running_loop().create_future()

        async def script(reader, writer):
            await read_frame(reader)
            writer.write(connect_ok(idle_ms=150))
            ftype, rid, body = await read_frame(reader)
            pinged.set_result(ftype)
            writer.write(codec.frame(codec.PING | codec.REPLY, rid, body))
            await reader.read()
        server, address = await serve(script)
        async with server:
            client = await witmq.connect(address, reconnect=False)
            assert await pinged == codec.PING  # sent by the client on its own
            await client.close()
    run(main(), timeout=20)


def test_a_reconnect_whose_configuration_is_refused_fails_and_keeps_no_connection():
    async def main():
        closed = asyncio.get_running_loop().create_future()

        async def first(reader, writer):
            await read_frame(reader)
            writer.write(connect_ok())
            _, rid, _ = await read_frame(reader)  # update-guest-configuration
            writer.write(codec.frame(codec.UPDATE_GUEST_CONFIGURATION | codec.REPLY, rid))
            await read_frame(reader)  # a ping: the server dies without answering
            writer.transport.abort()

        async def second(reader, writer):
            await read_frame(reader)
            writer.write(connect_ok())
            _, rid, _ = await read_frame(reader)  # the configuration, sent again
            writer.write(codec.frame(codec.ERROR, rid, error_body(5, b"may not receive from q")))
            closed.set_result(await reader.read() == b"")  # the client closes this connection
        server1, address1 = await serve(first)
        server2, address2 = await serve(second)
        async with server1, server2:
            client = await witmq.connect([address1, address2])
            await client.update_guest_configuration(["q"])
            with pytest.raises(witmq.ConnectionLost):
                await client.ping(1)
            with pytest.raises(witmq.PermissionDeniedError) as e:
                await client.ping(2)
            assert "may not receive from q" in e.value.trace()
            assert await closed
            await client.close()
    run(main(), timeout=20)


def test_a_cancelled_stream_start_stops_the_stream_and_keeps_the_connection():
    async def main():
        started = asyncio.get_running_loop().create_future()
        go_on = asyncio.get_running_loop().create_future()

        async def script(reader, writer):
            await read_frame(reader)
            writer.write(connect_ok())
            _, rid, _ = await read_frame(reader)  # stream-start
            started.set_result(None)
            await go_on  # the client gives up waiting meanwhile
            writer.write(codec.frame(codec.STREAM_START | codec.REPLY, rid))
            writer.write(codec.frame(codec.DELIVER, rid, codec.string("q") + codec.messages(
                [witmq.Message(b"m")])))
            ftype, stop_id, _ = await read_frame(reader)
            assert ftype == codec.STREAM_STOP
            writer.write(codec.frame(codec.STREAM_STOP | codec.REPLY, stop_id))
            _, ping_id, body = await read_frame(reader)
            writer.write(codec.frame(codec.PING | codec.REPLY, ping_id, body))
            await reader.read()
        server, address = await serve(script)
        async with server:
            client = await witmq.connect(address, reconnect=False)
            starting = asyncio.ensure_future(client.stream(5).start())
            await started
            starting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await starting
            go_on.set_result(None)
            # The deliver that came before stream-stop-ok was no protocol violation.
            assert await client.ping(7) == 7
            await client.close()
    run(main(), timeout=20)
