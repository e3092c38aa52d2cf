"""The asyncio client: :func:`connect` returns a :class:`Client`; :meth:`Client.stream` a
:class:`Stream`. Every method is a coroutine that may run concurrently with the others on the same
connection (requests pipeline; replies are matched by request id)."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, Union)
from types import TracebackType

from . import _codec as codec
from ._connection import Connection, StreamState, expect_empty, expect_u64, stream_conflict
from .errors import (ConnectionLost, FailedPreconditionError, InvalidArgumentError,
                     PermissionDeniedError, ProtocolViolation, UnsupportedError, WitmqError)
from .limits import (ServerLimits, check_channel, check_configuration, check_connect, check_credit,
                     check_message, check_send, check_u32)
from .message import Format, Message

Server = Union[str, Tuple[str, int]]
Pairs = Sequence[Tuple[str, str]]

DEFAULT_PORT = 7400
DEFAULT_MAX_FRAME_BYTES = 16 << 20

# connect errors that every server of a list would answer the same way: trying the next one
# cannot help, so they are raised at once.
_FINAL_CONNECT_ERRORS = (PermissionDeniedError, UnsupportedError, InvalidArgumentError)


def parse_server(server: Server) -> Tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"``, ``"host"`` (port 7400) or ``(host, port)``."""
    if isinstance(server, tuple):
        return server[0], int(server[1])
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    host, sep, port = server.rpartition(":")
    if not sep:
        return server, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("server %r: the port %r is not 1..65535" % (server, port))
    return host, int(port)


def tls_context(ca_file: Optional[str] = None, cert_file: Optional[str] = None,
                key_file: Optional[str] = None) -> ssl.SSLContext:
    """A client TLS context: TLS 1.2 or later, verifying the server against ``ca_file`` (the
    system's CAs when None) and its host name or address; presenting ``cert_file``/``key_file``
    when given (the server may map the certificate's CN to an identity)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


def _decode_messages(r: codec.Reader, at_most: int) -> List[Message]:
    ms = r.messages("messages", at_most)
    r.end()
    return ms


def _decode_json(r: codec.Reader) -> Dict[str, Any]:
    text = r.string("json")
    r.end()
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ProtocolViolation("admin reply: not JSON (%s)" % e) from None
    if not isinstance(value, dict):
        raise ProtocolViolation("admin reply: JSON %s, not an object" % type(value).__name__)
    return value


class Client:
    """A connection to witmqd (or the first server of a list that answers).

    When the connection is lost, the requests in flight fail (with the ``goaway``'s error, or
    :class:`ConnectionLost`) and the next request connects to the next server of the list, going
    round it once; its last ``update-guest-configuration`` is sent again first. A running stream
    ends with the error; start a new one. Requests are never retried by the client: whether one
    in flight was carried out is unknown (a send may then be stored twice if sent again).
    """

    def __init__(self, servers: Sequence[Server], *, name: str = "", token: Optional[str] = None,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 server_hostname: Optional[str] = None, connect_timeout: float = 10.0,
                 reconnect: bool = True, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if not servers:
            raise ValueError("servers: at least one server is needed")
        self._servers = [parse_server(s) for s in servers]
        check_connect(name, token)
        self._name = name
        self._token = token
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._connect_timeout = connect_timeout
        self._reconnect = reconnect
        self._max_frame_cap = max_frame_bytes
        self._conn: Optional[Connection] = None
        self._index = -1  # the server of the current (or last) connection
        self._lock = asyncio.Lock()
        self._configuration: Optional[Tuple[List[str], Optional[List[Tuple[str, str]]]]] = None
        self._closed = False
        self.connects = 0  # connections made, the first one included

    # -- connection -------------------------------------------------------------------------

    @property
    def limits(self) -> ServerLimits:
        """The current connection's ``connect-ok``."""
        if self._conn is None or self._conn.limits is None:
            raise ConnectionLost("not connected")
        return self._conn.limits

    @property
    def server(self) -> str:
        """``host:port`` of the current (or last) connection."""
        host, port = self._servers[max(self._index, 0)]
        return "%s:%d" % (host, port)

    async def _connection(self) -> Connection:
        conn = self._conn
        if conn is not None and conn.error is None:
            return conn
        async with self._lock:
            if self._conn is not None and self._conn.error is None:
                return self._conn
            if self._closed:
                raise ConnectionLost("the client is closed")
            if self._conn is not None and not self._reconnect:
                raise self._conn.error or ConnectionLost("not connected")
            self._conn = await self._open()
            return self._conn

    async def _open(self) -> Connection:
        failures = []
        for step in range(1, len(self._servers) + 1):
            index = (self._index + step) % len(self._servers)
            host, port = self._servers[index]
            try:
                conn = await asyncio.wait_for(
                    Connection.open(host, port, self._ssl, self._server_hostname, self._name,
                                    self._token, self._max_frame_cap),
                    self._connect_timeout)
            except _FINAL_CONNECT_ERRORS:
                self._index = index
                raise
            except (OSError, asyncio.TimeoutError, WitmqError) as e:
                failures.append("%s:%d: %s" % (host, port, e or type(e).__name__))
                continue
            self._index = index
            self.connects += 1
            if self._configuration is not None:
                channels, extensions = self._configuration
                try:
                    await conn.call(codec.UPDATE_GUEST_CONFIGURATION,
                                    codec.guest_configuration(channels, extensions), expect_empty,
                                    "update-guest-configuration")
                except BaseException:
                    await conn.close()  # a connection without its configuration is not kept
                    raise
            return conn
        raise ConnectionLost("no server answered: " + "; ".join(failures))

    async def close(self) -> None:
        """Closes the connection; requests in flight fail with ConnectionLost."""
        self._closed = True
        if self._conn is not None:
            await self._conn.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, t: Optional[Type[BaseException]], e: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        await self.close()

    async def _call(self, ftype: int, body: bytes, decode: Any, what: str) -> Any:
        conn = await self._connection()
        return await conn.call(ftype, body, decode, what)

    # -- the WIT operations -----------------------------------------------------------------

    async def send(self, channel: str, messages: Union[Message, Iterable[Message]]) -> None:
        """``producer.send``: stores the messages in order, as durably as the channel promises."""
        batch = [messages] if isinstance(messages, Message) else list(messages)
        conn = await self._connection()
        assert conn.limits is not None
        check_send(channel, batch, conn.limits)
        await conn.call(codec.SEND, codec.string(channel) + codec.messages(batch), expect_empty,
                        "send")

    async def subscribe_try_receive(self, channel: str, timeout_ms: int) -> List[Message]:
        """``consumer.subscribe-try-receive``: waits up to ``timeout_ms`` for messages; [] if none
        arrived (the WIT ``none``)."""
        check_channel(channel, "subscribe-try-receive: channel")
        check_u32(timeout_ms, "subscribe-try-receive: timeout-ms")
        conn = await self._connection()
        assert conn.limits is not None
        at_most = conn.limits.max_receive_messages

        def decode(r: codec.Reader) -> List[Message]:
            ms = r.option("messages", lambda: r.messages("messages", at_most))
            r.end()
            return ms or []
        return await conn.call(codec.SUBSCRIBE_TRY_RECEIVE,  # type: ignore[no-any-return]
                               codec.string(channel) + codec.u32(timeout_ms), decode,
                               "subscribe-try-receive")

    async def subscribe_receive(self, channel: str) -> List[Message]:
        """``consumer.subscribe-receive``: waits until at least one message arrives."""
        check_channel(channel, "subscribe-receive: channel")
        conn = await self._connection()
        assert conn.limits is not None
        at_most = conn.limits.max_receive_messages
        return await conn.call(  # type: ignore[no-any-return]
            codec.SUBSCRIBE_RECEIVE, codec.string(channel),
            lambda r: _decode_messages(r, at_most), "subscribe-receive")

    async def update_guest_configuration(self, channels: Sequence[str],
                                         extensions: Optional[Union[Pairs, Mapping[str, str]]]
                                         = None) -> None:
        """``consumer.update-guest-configuration``: the channels (and extensions: ``start``,
        ``group``, ``batch-size``, ``lease-ms``, ``settlement``) of receives and streams. Sent again
        after a reconnect."""
        chans = list(channels)
        ext = None if extensions is None else (
            list(extensions.items()) if isinstance(extensions, Mapping) else list(extensions))
        conn = await self._connection()
        assert conn.limits is not None
        check_configuration(chans, ext, conn.limits)
        await conn.call(codec.UPDATE_GUEST_CONFIGURATION, codec.guest_configuration(chans, ext),
                        expect_empty, "update-guest-configuration")
        self._configuration = (chans, ext)

    async def complete_message(self, message: Message) -> None:
        """``consumer.complete-message``: settles a delivered message (accepted), by its receipt."""
        await self._settle(codec.COMPLETE_MESSAGE, message, "complete-message")

    async def abandon_message(self, message: Message) -> None:
        """``consumer.abandon-message``: rejects a delivered message; the channel's policy
        decides what happens to it."""
        await self._settle(codec.ABANDON_MESSAGE, message, "abandon-message")

    async def _settle(self, ftype: int, message: Message, what: str) -> None:
        receipt = message.receipt if isinstance(message, Message) else None
        if receipt is None:
            raise InvalidArgumentError("%s: the message has no witmq-receipt: only messages "
                                       "witmq delivered can be settled (checked by the client)"
                                       % what, local=True)
        # Only the receipt is read (docs/PROTOCOL.md 6.5): send just that.
        settle = Message(b"", Format.RAW, [("witmq-receipt", receipt)])
        conn = await self._connection()
        assert conn.limits is not None
        check_message(settle, what + ": message", conn.limits)
        await conn.call(ftype, codec.message(settle), expect_empty, what)

    async def ping(self, payload: int = 0) -> int:
        """``ping``: returns the ``pong``'s payload (the same)."""
        if not isinstance(payload, int) or not 0 <= payload < 1 << 64:
            raise InvalidArgumentError("ping: payload %r is not a u64 (checked by the client)"
                                       % (payload,), local=True)
        return await self._call(codec.PING, codec.u64(payload),  # type: ignore[no-any-return]
                                expect_u64, "ping")

    def stream(self, credit: int = 100, *, auto_credit: bool = True) -> "Stream":
        """A stream of deliveries for the configured channels (call
        :meth:`update_guest_configuration` first). Use ``async with client.stream(n) as s:
        async for m in s: ...``. ``credit`` is the most messages the server may push before the
        client asks for more; with ``auto_credit`` the stream grants more as the loop takes
        messages (a message counts as done when the loop asks for the next one)."""
        return Stream(self, credit, auto_credit)

    # -- admin extensions (docs/PROTOCOL.md section 13) -------------------------------------

    async def _admin(self, ftype: int, obj: Dict[str, Any], what: str) -> Dict[str, Any]:
        return await self._call(ftype, codec.admin_body(obj),  # type: ignore[no-any-return]
                                _decode_json, what)

    async def channel_list(self) -> List[Dict[str, Any]]:
        """Channel-stats objects of the channels the identity may see."""
        reply = await self._admin(codec.CHANNEL_LIST, {}, "channel-list")
        channels = reply.get("channels")
        if not isinstance(channels, list):
            raise ProtocolViolation("channel-list reply: no 'channels' array")
        return channels

    async def channel_declare(self, name: str,
                              settings: Optional[Mapping[str, Any]] = None) -> None:
        """Creates a channel or updates the settings given (keys of docs/CONFIGURATION.md)."""
        check_channel(name, "channel-declare: name")
        body: Dict[str, Any] = {"name": name}
        if settings is not None:
            body["settings"] = dict(settings)
        await self._admin(codec.CHANNEL_DECLARE, body, "channel-declare")

    async def channel_delete(self, name: str) -> None:
        check_channel(name, "channel-delete: name")
        await self._admin(codec.CHANNEL_DELETE, {"name": name}, "channel-delete")

    async def channel_stats(self, name: str) -> Dict[str, Any]:
        check_channel(name, "channel-stats: name")
        return await self._admin(codec.CHANNEL_STATS, {"name": name}, "channel-stats")

    async def browse(self, channel: str, start: int = 0, max: int = 100) -> List[Message]:
        """Messages from sequence ``start`` on, not acquired; [] at the end. The next page starts
        at the last message's ``sequence + 1``."""
        check_channel(channel, "browse: channel")
        conn = await self._connection()
        assert conn.limits is not None
        at_most = conn.limits.max_receive_messages
        if not isinstance(max, int) or not 0 <= max <= at_most:
            raise InvalidArgumentError("browse: max %r is not 0..max-receive-messages %d "
                                       "(checked by the client)" % (max, at_most), local=True)
        return await conn.call(  # type: ignore[no-any-return]
            codec.BROWSE, codec.admin_body({"channel": channel, "from": start, "max": max}),
            lambda r: _decode_messages(r, at_most), "browse")

    async def replay_dead_letters(self, channel: str, max: Optional[int] = None) -> int:
        """Moves messages of a dead-letter channel back to their sources; returns how many."""
        check_channel(channel, "replay-dead-letters: channel")
        body: Dict[str, Any] = {"channel": channel}
        if max is not None:
            body["max"] = max
        reply = await self._admin(codec.REPLAY_DEAD_LETTERS, body, "replay-dead-letters")
        return int(reply.get("moved", 0))

    async def purge(self, channel: str) -> int:
        """Settles every available message of the channel; returns how many."""
        check_channel(channel, "purge: channel")
        reply = await self._admin(codec.PURGE, {"channel": channel}, "purge")
        return int(reply.get("purged", 0))

    async def server_stats(self) -> Dict[str, Any]:
        return await self._admin(codec.SERVER_STATS, {}, "server-stats")


class Stream:
    """Deliveries pushed under credit (docs/PROTOCOL.md section 7), as an async iterator of
    :class:`Message`. Iteration ends after :meth:`stop`; a stream the server ends (``stream-end``)
    or a lost connection raises that error from the iterator."""

    def __init__(self, client: Client, credit: int, auto_credit: bool) -> None:
        check_u32(credit, "stream-start: credit")
        self._client = client
        self._initial = credit
        self._auto = auto_credit
        self._conn: Optional[Connection] = None
        self._state: Optional[StreamState] = None
        self._taken = 0  # messages handed out since the last grant
        self._grant_error: Optional[WitmqError] = None  # of a pipelined grant, raised next

    @property
    def id(self) -> Optional[int]:
        """The stream id (its stream-start's request id) once started."""
        return None if self._state is None else self._state.id

    async def start(self) -> "Stream":
        conn = await self._client._connection()
        assert conn.limits is not None
        if conn.stream is not None and not conn.stream.stopped:
            raise stream_conflict()
        check_credit(0, self._initial, "stream-start: credit", conn.limits)

        def register(rid: int) -> None:
            conn.stream = StreamState(rid, self._initial)
            self._state = conn.stream
        try:
            await conn.call(codec.STREAM_START, codec.u32(self._initial), expect_empty,
                            "stream-start", before_write=register)
        except asyncio.CancelledError:
            # The server may have started the stream and deliver on it: stop it, and take its
            # deliveries (left to their leases) until stream-stop-ok says no more will come.
            if self._state is not None:
                self._stop_in_background(conn, self._state)
            raise
        except BaseException:
            if self._state is not None:
                self._state.end(None)
            raise
        self._conn = conn
        return self

    @staticmethod
    def _stop_in_background(conn: Connection, state: StreamState) -> None:
        try:
            _, future = conn.start(codec.STREAM_STOP, b"", expect_empty, "stream-stop")
        except WitmqError:
            state.end(None)  # the connection is gone, and the stream with it
            return
        future.add_done_callback(lambda f: f.cancelled() or f.exception() or state.end(None))

    async def grant(self, additional: int) -> None:
        """Adds ``additional`` to the stream's credit (a ``credit`` request)."""
        conn, state = self._started()
        assert conn.limits is not None
        check_credit(state.credit, additional, "credit: additional", conn.limits)
        # Counted before the reply: the server may deliver against it as soon as it has read it.
        state.credit += additional
        try:
            await conn.call(codec.CREDIT, codec.u32(additional), expect_empty, "credit")
        except FailedPreconditionError:
            if not state.stopped:  # after a stream-end, the server has no stream to credit
                raise

    async def stop(self) -> None:
        """``stream-stop``: once it returns no more messages arrive; buffered ones are still
        handed out by the iterator. Messages delivered and not settled stay acquired."""
        if self._conn is None or self._state is None or self._state.stopped:
            return
        conn, state = self._conn, self._state
        try:
            await conn.call(codec.STREAM_STOP, b"", expect_empty, "stream-stop")
        except ConnectionLost:
            pass
        state.end(None)

    def _grant_pipelined(self, conn: Connection, state: StreamState, additional: int) -> None:
        """A ``credit`` request whose reply is not waited for (the loop goes on taking messages);
        an error in it is raised by the next step of the iteration."""
        assert conn.limits is not None
        check_credit(state.credit, additional, "credit: additional", conn.limits)
        state.credit += additional
        _, future = conn.start(codec.CREDIT, codec.u32(additional), expect_empty, "credit")

        def done(f: "asyncio.Future[Any]") -> None:
            if f.cancelled():
                return
            e = f.exception()
            # After a stream-end or a lost connection the stream itself reports why.
            if isinstance(e, WitmqError) and not state.stopped:
                self._grant_error = e
        future.add_done_callback(done)

    def _started(self) -> Tuple[Connection, StreamState]:
        if self._conn is None or self._state is None:
            raise FailedPreconditionError("the stream is not started (checked by the client)",
                                          local=True)
        return self._conn, self._state

    async def __aenter__(self) -> "Stream":
        return await self.start()

    async def __aexit__(self, t: Optional[Type[BaseException]], e: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        try:
            await self.stop()
        except WitmqError:
            if t is None:
                raise

    def __aiter__(self) -> "Stream":
        return self

    async def __anext__(self) -> Message:
        conn, state = self._started()
        if self._grant_error is not None:
            error, self._grant_error = self._grant_error, None
            raise error
        if self._auto and self._taken and not state.stopped and (
                self._taken >= max(1, self._initial // 2) or state.credit == 0):
            taken, self._taken = self._taken, 0
            self._grant_pipelined(conn, state, taken)
        while True:
            if not state.buffer.empty():
                self._taken += 1
                return state.buffer.get_nowait()  # type: ignore[return-value]
            if state.stopped:
                if state.error is not None:
                    raise state.error
                raise StopAsyncIteration
            state.wakeup.clear()
            await state.wakeup.wait()


async def connect(servers: Union[Server, Sequence[Server]], *, name: str = "",
                  token: Optional[str] = None, tls: bool = False, ca_file: Optional[str] = None,
                  cert_file: Optional[str] = None, key_file: Optional[str] = None,
                  ssl_context: Optional[ssl.SSLContext] = None,
                  server_hostname: Optional[str] = None, connect_timeout: float = 10.0,
                  reconnect: bool = True,
                  max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Client:
    """Connects to the first server of ``servers`` that answers and returns the :class:`Client`.

    ``servers``: ``"host:port"`` or a list of them (reconnects go to the next one). ``name``: the
    WIT client name (durable subscriptions); ``token``: the identity's token. TLS is on when
    ``tls`` is true or any of ``ca_file``, ``cert_file``, ``ssl_context`` is given: the server's
    certificate is verified against ``ca_file`` (or the system's CAs) and the host name or address;
    ``cert_file`` and ``key_file`` present a client certificate. ``max_frame_bytes`` caps the
    frames the client accepts, whatever the server announces.
    """
    if isinstance(servers, str) or (isinstance(servers, tuple) and len(servers) == 2
                                    and isinstance(servers[1], int)):
        servers = [servers]  # type: ignore[list-item]
    if ssl_context is None and (tls or ca_file is not None or cert_file is not None):
        ssl_context = tls_context(ca_file, cert_file, key_file)
    client = Client(list(servers), name=name, token=token,  # type: ignore[arg-type]
                    ssl_context=ssl_context, server_hostname=server_hostname,
                    connect_timeout=connect_timeout, reconnect=reconnect,
                    max_frame_bytes=max_frame_bytes)
    await client._connection()
    return client
