"""A blocking wrapper around the asyncio client, for scripts and threads that do not run an event
loop: the asyncio client runs on a private loop in a background thread, and each method waits for
its result. Methods may be called from several threads at once (their requests pipeline)::

    from witmq.sync import connect

    with connect("127.0.0.1:7400") as client:
        client.send("orders", b"hello")
        for m in client.subscribe_try_receive("orders", 1000):
            client.complete_message(m)
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import (Any, Awaitable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    Type, TypeVar, Union)

from . import client as aio
from .limits import ServerLimits
from .message import Message

T = TypeVar("T")


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="witmq-client",
                                       daemon=True)
        self.thread.start()

    def run(self, coroutine: Awaitable[T], timeout: Optional[float] = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def _batch(messages: Union[Message, bytes, str, Iterable[Message]]) -> List[Message]:
    if isinstance(messages, (bytes, str)):
        return [Message(messages)]
    if isinstance(messages, Message):
        return [messages]
    return list(messages)


class Client:
    """The blocking client; see :class:`witmq.Client` for what each method does."""

    def __init__(self, runner: _Loop, client: aio.Client) -> None:
        self._run = runner
        self._client = client

    @property
    def limits(self) -> ServerLimits:
        return self._client.limits

    @property
    def server(self) -> str:
        return self._client.server

    def close(self) -> None:
        try:
            self._run.run(self._client.close())
        finally:
            self._run.stop()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, t: Optional[Type[BaseException]], e: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def send(self, channel: str, messages: Union[Message, bytes, str, Iterable[Message]]) -> None:
        self._run.run(self._client.send(channel, _batch(messages)))

    def subscribe_try_receive(self, channel: str, timeout_ms: int) -> List[Message]:
        return self._run.run(self._client.subscribe_try_receive(channel, timeout_ms))

    def subscribe_receive(self, channel: str, timeout: Optional[float] = None) -> List[Message]:
        """Waits for messages; ``timeout`` (seconds) gives up waiting (TimeoutError); messages
        acquired by a reply that comes later are left to their lease."""
        return self._run.run(self._client.subscribe_receive(channel), timeout)

    def update_guest_configuration(self, channels: Sequence[str],
                                   extensions: Optional[Union[Sequence[Any], Mapping[str, str]]]
                                   = None) -> None:
        self._run.run(self._client.update_guest_configuration(channels, extensions))

    def complete_message(self, message: Message) -> None:
        self._run.run(self._client.complete_message(message))

    def abandon_message(self, message: Message) -> None:
        self._run.run(self._client.abandon_message(message))

    def ping(self, payload: int = 0) -> int:
        return self._run.run(self._client.ping(payload))

    def stream(self, credit: int = 100, *, auto_credit: bool = True) -> "Stream":
        return Stream(self._run, self._client.stream(credit, auto_credit=auto_credit))

    def channel_list(self) -> List[Dict[str, Any]]:
        return self._run.run(self._client.channel_list())

    def channel_declare(self, name: str, settings: Optional[Mapping[str, Any]] = None) -> None:
        self._run.run(self._client.channel_declare(name, settings))

    def channel_delete(self, name: str) -> None:
        self._run.run(self._client.channel_delete(name))

    def channel_stats(self, name: str) -> Dict[str, Any]:
        return self._run.run(self._client.channel_stats(name))

    def browse(self, channel: str, start: int = 0, max: int = 100) -> List[Message]:
        return self._run.run(self._client.browse(channel, start, max))

    def replay_dead_letters(self, channel: str, max: Optional[int] = None) -> int:
        return self._run.run(self._client.replay_dead_letters(channel, max))

    def purge(self, channel: str) -> int:
        return self._run.run(self._client.purge(channel))

    def server_stats(self) -> Dict[str, Any]:
        return self._run.run(self._client.server_stats())


class Stream:
    """The blocking stream: ``with client.stream(10) as s: for m in s: ...``."""

    def __init__(self, runner: _Loop, stream: aio.Stream) -> None:
        self._run = runner
        self._stream = stream

    def start(self) -> "Stream":
        self._run.run(self._stream.start())
        return self

    def stop(self) -> None:
        self._run.run(self._stream.stop())

    def grant(self, additional: int) -> None:
        self._run.run(self._stream.grant(additional))

    def __enter__(self) -> "Stream":
        return self.start()

    def __exit__(self, t: Optional[Type[BaseException]], e: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self._run.run(self._stream.__aexit__(t, e, tb))

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        try:
            return self._run.run(self._stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def next(self, timeout: Optional[float] = None) -> Message:
        """The next message, waiting at most ``timeout`` seconds (TimeoutError)."""
        try:
            return self._run.run(self._stream.__anext__(), timeout)
        except StopAsyncIteration:
            raise StopIteration from None


def connect(servers: Union[aio.Server, Sequence[aio.Server]], **options: Any) -> Client:
    """Blocking :func:`witmq.connect`, same arguments."""
    runner = _Loop()
    try:
        client = runner.run(aio.connect(servers, **options))
    except BaseException:
        runner.stop()
        raise
    return Client(runner, client)
