"""One protocol connection: the handshake, a reader task that matches replies to requests by id,
and the stream's deliveries. The public :class:`witmq.Client` owns one at a time."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from . import _codec as codec
from .errors import (ConnectionLost, FailedPreconditionError, ProtocolViolation, WitmqError,
                     from_code)
from .limits import MAX_CONNECT_LENGTH, ServerLimits, check_frame
from .message import Message

# A reply decoder: reads the body (after the type was checked) and returns the call's result.
Decoder = Callable[[codec.Reader], Any]

# The largest frame accepted before connect-ok has told us the server's max-frame-bytes: the
# connect-ok itself (46 bytes and the server's name) or a goaway with its text.
HANDSHAKE_MAX_FRAME = 65536


class StreamState:
    """What the connection knows of the active stream: its id, the credit the server holds for it,
    and the deliveries not yet taken by the iterator. The buffer never holds more messages than the
    credit the client granted, so a server cannot make it grow."""

    def __init__(self, stream_id: int, credit: int) -> None:
        self.id = stream_id
        self.credit = credit  # the server's counter as this client accounts it
        self.buffer: "asyncio.Queue[Optional[Message]]" = asyncio.Queue()
        self.error: Optional[WitmqError] = None  # why it ended, when the server ended it
        self.stopped = False  # stream-stop-ok read, or ended
        self.wakeup = asyncio.Event()

    def end(self, error: Optional[WitmqError]) -> None:
        if not self.stopped:
            self.stopped = True
            self.error = error
            self.wakeup.set()


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str,
                 max_frame_cap: int) -> None:
        self.address = address
        self._reader = reader
        self._writer = writer
        self._max_frame_cap = max_frame_cap
        self.limits: Optional[ServerLimits] = None
        self._pending: Dict[int, Tuple["asyncio.Future[Any]", int, Decoder]] = {}
        self._discard: Set[int] = set()  # ids of requests whose caller gave up: reply dropped
        self._next_id = 1
        self.stream: Optional[StreamState] = None
        self.error: Optional[WitmqError] = None  # set once the connection is unusable
        self._reader_task: Optional["asyncio.Task[None]"] = None
        self._out: List[bytes] = []  # frames of this turn of the event loop, not yet written
        self._keepalive_task: Optional["asyncio.Task[None]"] = None

    @classmethod
    async def open(cls, host: str, port: int, ssl_context: Optional[ssl.SSLContext],
                   server_hostname: Optional[str], name: str, token: Optional[str],
                   max_frame_cap: int) -> "Connection":
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl_context,
            server_hostname=(server_hostname or host) if ssl_context else None)
        conn = cls(reader, writer, "%s:%d" % (host, port), max_frame_cap)
        try:
            await conn._handshake(name, token)
        except BaseException:
            conn._abort()
            raise
        return conn

    # -- the handshake ---------------------------------------------------------------------

    async def _handshake(self, name: str, token: Optional[str]) -> None:
        body = codec.connect_body([1], name, token)
        if codec.MIN_LENGTH + len(body) > MAX_CONNECT_LENGTH:
            raise ProtocolViolation("connect: the frame would exceed %d bytes" % MAX_CONNECT_LENGTH,
                                    local=True)
        self._writer.write(codec.frame(codec.CONNECT, 0, body))
        await self._writer.drain()
        ftype, request_id, body = await self._read_frame(HANDSHAKE_MAX_FRAME)
        if ftype == codec.GOAWAY:
            raise self._error_body(body, "goaway", goaway=True)
        if ftype != codec.CONNECT | codec.REPLY or request_id != 0:
            raise ProtocolViolation("%s: the server answered connect with frame type 0x%02x, "
                                    "request id %d (expected connect-ok 0x81, request id 0)"
                                    % (self.address, ftype, request_id))
        r = codec.Reader(body, "connect-ok")
        version = r.u16("version")
        server = r.string("server")
        values = [r.u32(f) for f in ("max-frame-bytes", "max-send-messages",
                                      "max-receive-messages", "max-message-bytes",
                                      "max-metadata-entries", "max-metadata-bytes",
                                      "max-config-channels", "max-in-flight", "max-credit",
                                      "idle-timeout-ms")]
        r.end()
        if version != 1:
            raise ProtocolViolation("connect-ok: version %d was not offered (the client speaks 1)"
                                    % version)
        if values[0] < codec.MIN_LENGTH:
            raise ProtocolViolation("connect-ok: max-frame-bytes %d is below 6" % values[0])
        self.limits = ServerLimits(version, server, *values)
        self._reader_task = asyncio.ensure_future(self._read_loop())
        if self.limits.idle_timeout_ms:
            self._keepalive_task = asyncio.ensure_future(
                self._keepalive(self.limits.idle_timeout_ms / 3000.0))

    # -- reading ---------------------------------------------------------------------------

    async def _read_frame(self, max_length: int) -> Tuple[int, int, bytes]:
        try:
            head = await self._reader.readexactly(4)
            length = int.from_bytes(head, "big")
            if length < codec.MIN_LENGTH or length > max_length:
                raise ProtocolViolation("%s: frame length %d is outside 6..%d"
                                        % (self.address, length, max_length))
            rest = await self._reader.readexactly(length)
        except asyncio.IncompleteReadError as e:
            raise ConnectionLost("%s: the connection closed%s" % (
                self.address, " in the middle of a frame" if e.partial else "")) from None
        except (ConnectionError, ssl.SSLError) as e:
            raise ConnectionLost("%s: %s" % (self.address, e)) from None
        if rest[1] != 0:
            raise ProtocolViolation("%s: frame flags 0x%02x (version 1 defines none)"
                                    % (self.address, rest[1]))
        return rest[0], int.from_bytes(rest[2:6], "big"), rest[6:]

    def _error_body(self, body: bytes, what: str, goaway: bool = False) -> WitmqError:
        r = codec.Reader(body, what)
        code = r.u16("code")
        text = r.string("message")
        r.end()
        return from_code(code, text, goaway=goaway)

    async def _read_loop(self) -> None:
        assert self.limits is not None
        max_length = min(self.limits.max_frame_bytes, self._max_frame_cap)
        try:
            while True:
                ftype, request_id, body = await self._read_frame(max_length)
                if ftype == codec.GOAWAY:
                    self._fail(self._error_body(body, "goaway", goaway=True))
                    return
                self._dispatch(ftype, request_id, body)
        except WitmqError as e:
            self._fail(e)
        except asyncio.CancelledError:
            self._fail(ConnectionLost("%s: the connection was closed by the client" % self.address))
        except Exception as e:  # a bug here must not leave callers waiting forever
            self._fail(ProtocolViolation("%s: %s: %s" % (self.address, type(e).__name__, e)))

    def _dispatch(self, ftype: int, request_id: int, body: bytes) -> None:
        assert self.limits is not None
        if ftype == codec.DELIVER:
            self._deliver(request_id, body)
            return
        if ftype == codec.STREAM_END:
            s = self.stream
            if s is None or s.id != request_id or s.stopped:
                raise ProtocolViolation("stream-end for %d, which is no active stream" % request_id)
            s.end(self._error_body(body, "stream-end"))
            return
        entry = self._pending.pop(request_id, None)
        if entry is None:
            if request_id in self._discard:
                self._discard.discard(request_id)
                return
            raise ProtocolViolation("%s: frame type 0x%02x for request id %d, which was not asked"
                                    % (self.address, ftype, request_id))
        future, request_type, decode = entry
        try:
            if ftype == codec.ERROR:
                result: Any = self._error_body(body, "error")
            elif ftype == request_type | codec.REPLY:
                result = decode(codec.Reader(body, _reply_name(ftype)))
            else:
                raise ProtocolViolation("%s: frame type 0x%02x answers request type 0x%02x"
                                        % (self.address, ftype, request_type))
        except WitmqError as e:
            # The caller of this request learns why, as do the others (the connection ends).
            if not future.done():
                future.set_exception(e)
            raise
        if not future.done():
            if isinstance(result, WitmqError):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _deliver(self, stream_id: int, body: bytes) -> None:
        assert self.limits is not None
        s = self.stream
        if s is None or s.id != stream_id or s.stopped:
            raise ProtocolViolation("deliver for stream %d, which is no active stream" % stream_id)
        r = codec.Reader(body, "deliver")
        r.string("channel")
        ms = r.messages("messages", self.limits.max_receive_messages)
        r.end()
        if not ms:
            raise ProtocolViolation("deliver: an empty list of messages")
        if len(ms) > s.credit:
            raise ProtocolViolation("deliver: %d messages, more than the %d credit granted"
                                    % (len(ms), s.credit))
        s.credit -= len(ms)
        for m in ms:
            s.buffer.put_nowait(m)
        s.wakeup.set()

    def _fail(self, error: WitmqError) -> None:
        """Ends the connection: every pending call and the stream fail with ``error``."""
        if self.error is None:
            self.error = error
        pending, self._pending = self._pending, {}
        for future, _, _ in pending.values():
            if not future.done():
                future.set_exception(error)
        if self.stream is not None:
            self.stream.end(error)
        self._abort()

    def _abort(self) -> None:
        if self._keepalive_task is not None and self._keepalive_task is not asyncio.current_task():
            self._keepalive_task.cancel()
        transport = self._writer.transport
        if not transport.is_closing():  # an SSL transport fails a second abort
            transport.abort()

    # -- requests ---------------------------------------------------------------------------

    def _fresh_id(self) -> int:
        while True:
            rid = self._next_id
            self._next_id = rid + 1 if rid < 0xFFFFFFFF else 1
            if rid not in self._pending and rid not in self._discard and (
                    self.stream is None or self.stream.id != rid):
                return rid

    def start(self, ftype: int, body: bytes, decode: Decoder,
              what: str) -> Tuple[int, "asyncio.Future[Any]"]:
        """Writes a request and returns its id and the future its reply completes. Checks the frame
        against max-frame-bytes first (a frame over it would close the connection)."""
        if self.error is not None:
            raise self.error
        assert self.limits is not None
        check_frame(codec.MIN_LENGTH + len(body), what, self.limits)
        rid = self._fresh_id()
        future: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        self._pending[rid] = (future, ftype, decode)
        # Frames written in one turn of the event loop go out in one write (one system call for
        # many pipelined requests); their order is kept.
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(codec.frame(ftype, rid, body))
        return rid, future

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.error is None:
            self._writer.write(b"".join(out))

    async def call(self, ftype: int, body: bytes, decode: Decoder, what: str,
                   before_write: Optional[Callable[[int], None]] = None) -> Any:
        rid, future = self.start(ftype, body, decode, what)
        if before_write is not None:
            before_write(rid)
        try:
            await self._writer.drain()
        except (ConnectionError, ssl.SSLError) as e:
            self._fail(ConnectionLost("%s: %s" % (self.address, e)))
        try:
            return await future
        except asyncio.CancelledError:
            if self._pending.pop(rid, None) is not None:
                self._discard.add(rid)  # the reply still comes; drop it then
            raise

    async def _keepalive(self, interval: float) -> None:
        while self.error is None:
            await asyncio.sleep(interval)
            try:
                await self.call(codec.PING, codec.u64(0), expect_u64, "ping")
            except WitmqError:
                return

    async def close(self) -> None:
        self._flush()
        if self.error is None:
            self.error = ConnectionLost("%s: the connection was closed by the client"
                                        % self.address)
        if self._reader_task is not None:
            self._reader_task.cancel()
        self._fail(self.error)
        try:
            self._writer.close()
            await self._writer.wait_closed()
        except (ConnectionError, ssl.SSLError, OSError):
            pass


_REPLY_NAMES = {
    0x82: "send-ok", 0x83: "subscribe-try-receive-ok", 0x84: "subscribe-receive-ok",
    0x85: "update-guest-configuration-ok", 0x86: "complete-message-ok",
    0x87: "abandon-message-ok", 0x88: "stream-start-ok", 0x89: "credit-ok", 0x8A: "stream-stop-ok",
    0x8B: "pong", 0xA0: "channel-list-ok", 0xA1: "channel-declare-ok", 0xA2: "channel-delete-ok",
    0xA3: "channel-stats-ok", 0xA4: "browse-ok", 0xA5: "replay-dead-letters-ok", 0xA6: "purge-ok",
    0xA7: "server-stats-ok",
}


def _reply_name(ftype: int) -> str:
    return _REPLY_NAMES.get(ftype, "0x%02x" % ftype)


def expect_empty(r: codec.Reader) -> None:
    r.end()


def expect_u64(r: codec.Reader) -> int:
    v = r.u64("payload")
    r.end()
    return v


def stream_conflict() -> FailedPreconditionError:
    return FailedPreconditionError("stream-start: a stream is already active on the connection "
                                   "(one stream per connection) (checked by the client)",
                                   local=True)
