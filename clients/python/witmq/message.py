"""Messages as the WIT records them: data, a format and optional metadata pairs."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

RESERVED_PREFIX = "witmq-"


class Format(enum.IntEnum):
    """WIT ``format-spec``, by case index (docs/PROTOCOL.md section 3)."""

    CLOUDEVENTS = 0
    HTTP = 1
    AMQP = 2
    MQTT = 3
    KAFKA = 4
    RAW = 5


@dataclass
class Message:
    """A message. ``metadata`` is ``None`` (the WIT ``none``) or a list of (key, value) pairs.

    Messages witmqd delivers carry the reserved ``witmq-`` entries (docs/PROTOCOL.md 6.5); the
    properties below read them. Keys starting with ``witmq-`` on a sent message are dropped by the
    broker.
    """

    data: bytes = b""
    format: Format = Format.RAW
    metadata: Optional[List[Tuple[str, str]]] = None

    def __init__(self, data: Union[bytes, bytearray, memoryview, str] = b"",
                 format: Format = Format.RAW,
                 metadata: Optional[List[Tuple[str, str]]] = None) -> None:
        self.data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        self.format = Format(format)
        self.metadata = None if metadata is None else [(str(k), str(v)) for k, v in metadata]

    @classmethod
    def _decoded(cls, data: bytes, format: Format,
                 metadata: Optional[List[Tuple[str, str]]]) -> "Message":
        """A message from the codec, whose fields already have their types."""
        m = cls.__new__(cls)
        m.data, m.format, m.metadata = data, format, metadata
        return m

    def get(self, key: str) -> Optional[str]:
        """The value of the first metadata entry named ``key``, or None."""
        for k, v in self.metadata or ():
            if k == key:
                return v
        return None

    @property
    def receipt(self) -> Optional[str]:
        """``witmq-receipt``: what complete and abandon send back."""
        return self.get("witmq-receipt")

    @property
    def id(self) -> Optional[str]:
        """``witmq-id``: ``<channel>/<sequence>``."""
        return self.get("witmq-id")

    @property
    def channel(self) -> Optional[str]:
        """``witmq-channel``: the channel the message was read from."""
        return self.get("witmq-channel")

    @property
    def sequence(self) -> Optional[int]:
        v = self.get("witmq-sequence")
        return int(v) if v is not None and v.isdigit() else None

    @property
    def attempt(self) -> Optional[int]:
        v = self.get("witmq-attempt")
        return int(v) if v is not None and v.isdigit() else None

    @property
    def published_at_ms(self) -> Optional[int]:
        v = self.get("witmq-published-at")
        return int(v) if v is not None and v.isdigit() else None

    def text(self) -> str:
        """The data as UTF-8 text (undecodable bytes replaced)."""
        return self.data.decode("utf-8", "replace")
