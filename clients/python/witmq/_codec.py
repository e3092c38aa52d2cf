"""The wire codec of docs/PROTOCOL.md: pure functions over bytes, no I/O.

Encoders return bodies (``bytes``); :func:`frame` adds the 10-byte header. :class:`Reader` decodes
a body field by field and raises :class:`~witmq.errors.ProtocolViolation` for anything that is not
exactly one valid encoding (section 2: no bytes left over, no field cut short), checking every
length and count against the bytes left before it allocates anything (section 3).
"""

from __future__ import annotations

import json
import struct
from typing import Any, Callable, List, Optional, Sequence, Tuple, TypeVar

from .errors import ProtocolViolation
from .message import Format, Message

T = TypeVar("T")

HEADER = struct.Struct(">IBBI")  # length, type, flags, request id
HEADER_BYTES = 10
MIN_LENGTH = 6  # type + flags + request id

# Frame types (section 4).
CONNECT = 0x01
SEND = 0x02
SUBSCRIBE_TRY_RECEIVE = 0x03
SUBSCRIBE_RECEIVE = 0x04
UPDATE_GUEST_CONFIGURATION = 0x05
COMPLETE_MESSAGE = 0x06
ABANDON_MESSAGE = 0x07
STREAM_START = 0x08
CREDIT = 0x09
STREAM_STOP = 0x0A
PING = 0x0B
CHANNEL_LIST = 0x20
CHANNEL_DECLARE = 0x21
CHANNEL_DELETE = 0x22
CHANNEL_STATS = 0x23
BROWSE = 0x24
REPLAY_DEAD_LETTERS = 0x25
PURGE = 0x26
SERVER_STATS = 0x27
REPLY = 0x80  # the success reply to request type T is T | 0x80
DELIVER = 0xC0
STREAM_END = 0xC1
GOAWAY = 0xFE
ERROR = 0xFF

# Smallest encoded sizes, for checking list counts against the bytes left (section 3).
MIN_STRING = 4
MIN_PAIR = 8
MIN_MESSAGE = 6

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def frame(ftype: int, request_id: int, body: bytes = b"") -> bytes:
    """A whole frame: length, type, flags 0, request id, body."""
    return HEADER.pack(MIN_LENGTH + len(body), ftype, 0, request_id) + body


def u16(v: int) -> bytes:
    return _U16.pack(v)


def u32(v: int) -> bytes:
    return _U32.pack(v)


def u64(v: int) -> bytes:
    return _U64.pack(v)


def string(s: str) -> bytes:
    """A ``string``; raises UnicodeEncodeError for text that has no UTF-8 form (lone surrogates)."""
    b = s.encode("utf-8")
    return _U32.pack(len(b)) + b


def blob(b: bytes) -> bytes:
    return _U32.pack(len(b)) + b


def pairs(entries: Optional[Sequence[Tuple[str, str]]]) -> bytes:
    """``option<list<pair>>``."""
    if entries is None:
        return b"\x00"
    out = [b"\x01", _U32.pack(len(entries))]
    for k, v in entries:
        out.append(string(k))
        out.append(string(v))
    return b"".join(out)


def message(m: Message) -> bytes:
    return blob(m.data) + bytes((int(m.format),)) + pairs(m.metadata)


def messages(ms: Sequence[Message]) -> bytes:
    return _U32.pack(len(ms)) + b"".join(message(m) for m in ms)


def connect_body(versions: Sequence[int], name: str, token: Optional[str]) -> bytes:
    out = _U32.pack(len(versions)) + b"".join(_U16.pack(v) for v in versions) + string(name)
    return out + (b"\x00" if token is None else b"\x01" + string(token))


def guest_configuration(channels: Sequence[str],
                        extensions: Optional[Sequence[Tuple[str, str]]]) -> bytes:
    return _U32.pack(len(channels)) + b"".join(string(c) for c in channels) + pairs(extensions)


def admin_body(obj: Any) -> bytes:
    return string(json.dumps(obj, separators=(",", ":")))


class Reader:
    """Decodes one frame body; every method raises ProtocolViolation naming ``what`` it read.

    Field names are only formatted into text when something is wrong (this is the hot path of
    every delivery)."""

    __slots__ = ("_b", "_pos", "_what")

    def __init__(self, body: bytes, what: str) -> None:
        self._b = body
        self._pos = 0
        self._what = what

    def _bad(self, field: str, why: str) -> ProtocolViolation:
        return ProtocolViolation("%s: %s: %s" % (self._what, field, why))

    def _short(self, n: int, field: str) -> ProtocolViolation:
        return self._bad(field, "needs %d bytes, %d left in the frame" % (n, self.left()))

    def left(self) -> int:
        return len(self._b) - self._pos

    def u8(self, field: str) -> int:
        pos = self._pos
        if pos >= len(self._b):
            raise self._short(1, field)
        self._pos = pos + 1
        return self._b[pos]

    def u16(self, field: str) -> int:
        if self.left() < 2:
            raise self._short(2, field)
        v = _U16.unpack_from(self._b, self._pos)[0]
        self._pos += 2
        return int(v)

    def u32(self, field: str) -> int:
        if self.left() < 4:
            raise self._short(4, field)
        v = _U32.unpack_from(self._b, self._pos)[0]
        self._pos += 4
        return int(v)

    def u64(self, field: str) -> int:
        if self.left() < 8:
            raise self._short(8, field)
        v = _U64.unpack_from(self._b, self._pos)[0]
        self._pos += 8
        return int(v)

    def _span(self, field: str) -> Tuple[int, int]:
        n = self.u32(field)
        start = self._pos
        if n > len(self._b) - start:
            raise self._short(n, field)
        self._pos = start + n
        return start, start + n

    def bytes_(self, field: str) -> bytes:
        start, end = self._span(field)
        return self._b[start:end]

    def string(self, field: str) -> str:
        start, end = self._span(field)
        try:
            # strict: no overlong forms, no surrogates, nothing above U+10FFFF
            return self._b[start:end].decode("utf-8")
        except UnicodeDecodeError as e:
            raise self._bad(field, "not well-formed UTF-8 (%s)" % e.reason) from None

    def count(self, field: str, smallest: int) -> int:
        n = self.u32(field)
        if n * smallest > self.left():
            raise self._bad(field, "count %d cannot fit in the %d bytes left" % (n, self.left()))
        return n

    def option(self, field: str, read: Callable[[], T]) -> Optional[T]:
        tag = self.u8(field)
        if tag == 0:
            return None
        if tag == 1:
            return read()
        raise self._bad(field, "option tag %d is neither 0 nor 1" % tag)

    def pairs(self, field: str) -> Optional[List[Tuple[str, str]]]:
        tag = self.u8(field)
        if tag == 0:
            return None
        if tag != 1:
            raise self._bad(field, "option tag %d is neither 0 nor 1" % tag)
        n = self.count(field, MIN_PAIR)
        string = self.string
        return [(string("metadata key"), string("metadata value")) for _ in range(n)]

    def message(self, field: str) -> Message:
        data = self.bytes_(field)
        fmt = self.u8(field)
        if fmt > 5:
            raise self._bad(field + ".format", "%d is not a format-spec case (0..5)" % fmt)
        return Message._decoded(data, _FORMATS[fmt], self.pairs(field))

    def messages(self, field: str, at_most: int) -> List[Message]:
        n = self.count(field, MIN_MESSAGE)
        if n > at_most:
            raise self._bad(field, "%d messages, more than the %d allowed" % (n, at_most))
        message = self.message
        return [message(field) for _ in range(n)]

    def end(self) -> None:
        if self.left():
            raise self._bad("body", "%d bytes left over after the last field" % self.left())


_FORMATS = list(Format)
