"""witmq: a Python client for the witmq message broker (docs/PROTOCOL.md, version 1).

asyncio first::

    import asyncio, witmq

    async def main():
        async with await witmq.connect("127.0.0.1:7400", name="demo") as client:
            await client.send("orders", witmq.Message(b"hello"))
            for m in await client.subscribe_try_receive("orders", 1000):
                await client.complete_message(m)

    asyncio.run(main())

and a blocking wrapper with the same methods, :mod:`witmq.sync`.
"""

from .client import Client, Stream, connect, parse_server, tls_context
from .errors import (AlreadyExistsError, ConnectionLost, CorruptionError, FailedPreconditionError,
                     InternalError, InvalidArgumentError, IoError, NotFoundError,
                     PermissionDeniedError, ProtocolViolation, RequestTimeoutError,
                     ResourceExhaustedError, StaleReceiptError, UnavailableError, UnsupportedError, WitmqError, from_code)
from .limits import ServerLimits
from .message import Format, Message

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError", "Client", "ConnectionLost", "CorruptionError", "FailedPreconditionError",
    "Format", "InternalError", "InvalidArgumentError", "IoError", "Message", "NotFoundError",
    "PermissionDeniedError", "ProtocolViolation", "RequestTimeoutError", "ResourceExhaustedError",
    "ServerLimits",
    "StaleReceiptError", "Stream", "UnavailableError", "UnsupportedError", "WitmqError", "connect",
    "from_code", "parse_server", "tls_context",
]
