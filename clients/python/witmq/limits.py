"""The limits a server announces in ``connect-ok``, and the checks the client makes against them
before it sends a request (docs/PROTOCOL.md sections 5.2 and 11)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from .errors import InvalidArgumentError, ResourceExhaustedError
from .message import RESERVED_PREFIX, Message

# Fixed by the protocol (section 11).
MAX_VERSIONS = 16
MAX_NAME_BYTES = 200
MAX_TOKEN_BYTES = 4096
MAX_CONNECT_LENGTH = 8192
MAX_RESERVED_ENTRIES = 32
MAX_RESERVED_BYTES = 4096
MAX_CHANNEL_BYTES = 200
_CHANNEL = re.compile(r"[A-Za-z0-9._\-:/]+")


@dataclass(frozen=True)
class ServerLimits:
    """The body of ``connect-ok``: the version picked, the server's name and its limits."""

    version: int
    server: str
    max_frame_bytes: int
    max_send_messages: int
    max_receive_messages: int
    max_message_bytes: int
    max_metadata_entries: int
    max_metadata_bytes: int
    max_config_channels: int
    max_in_flight: int  # 0 = no limit
    max_credit: int  # 0 = no limit
    idle_timeout_ms: int  # 0 = never


def _invalid(text: str) -> InvalidArgumentError:
    return InvalidArgumentError(text + " (checked by the client)", local=True)


def _exhausted(text: str) -> ResourceExhaustedError:
    return ResourceExhaustedError(text + " (checked by the client)", local=True)


def utf8(value: str, field: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _invalid("%s: has no UTF-8 form (%s at index %d)"
                       % (field, e.reason, e.start)) from None


def check_channel(name: str, field: str) -> None:
    """A channel name: 1 to 200 bytes of ``A-Z a-z 0-9 . _ - : /``, not starting with ``.``."""
    if not isinstance(name, str):
        raise _invalid("%s: %r is not a string" % (field, name))
    if not 1 <= len(name) <= MAX_CHANNEL_BYTES:
        raise _invalid("%s: '%s' is %d bytes; a channel name is 1 to %d bytes"
                       % (field, name[:64], len(name.encode("utf-8", "replace")),
                          MAX_CHANNEL_BYTES))
    if not _CHANNEL.fullmatch(name) or name.startswith("."):
        raise _invalid("%s: '%s' is not a channel name (A-Z a-z 0-9 . _ - : /, not starting "
                       "with '.')" % (field, name[:64]))


def check_connect(name: str, token: Optional[str]) -> None:
    if len(utf8(name, "connect: name")) > MAX_NAME_BYTES:
        raise _exhausted("connect: name: more than %d bytes" % MAX_NAME_BYTES)
    if token is not None and len(utf8(token, "connect: token")) > MAX_TOKEN_BYTES:
        raise _exhausted("connect: token: more than %d bytes" % MAX_TOKEN_BYTES)


def check_pairs(entries: Optional[Sequence[Tuple[str, str]]], field: str,
                limits: ServerLimits) -> None:
    """Metadata (or extensions) against the metadata limits, reserved entries apart."""
    entries = entries or ()
    plain = plain_bytes = reserved = reserved_bytes = 0
    for i, (k, v) in enumerate(entries):
        size = len(utf8(k, "%s[%d].key" % (field, i))) + len(utf8(v, "%s[%d].value" % (field, i)))
        if k.startswith(RESERVED_PREFIX):
            reserved += 1
            reserved_bytes += size
        else:
            plain += 1
            plain_bytes += size
    if plain > limits.max_metadata_entries:
        raise _exhausted("%s: %d entries, more than max-metadata-entries %d"
                         % (field, plain, limits.max_metadata_entries))
    if plain_bytes > limits.max_metadata_bytes:
        raise _exhausted("%s: %d key and value bytes, more than max-metadata-bytes %d"
                         % (field, plain_bytes, limits.max_metadata_bytes))
    if reserved > MAX_RESERVED_ENTRIES or reserved_bytes > MAX_RESERVED_BYTES:
        raise _exhausted("%s: %d witmq- entries of %d bytes, more than %d entries or %d bytes"
                         % (field, reserved, reserved_bytes, MAX_RESERVED_ENTRIES,
                            MAX_RESERVED_BYTES))


def check_message(m: Message, field: str, limits: ServerLimits) -> None:
    if not isinstance(m, Message):
        raise _invalid("%s: %r is not a witmq.Message" % (field, type(m).__name__))
    if len(m.data) > limits.max_message_bytes:
        raise _exhausted("%s.data: %d bytes, more than max-message-bytes %d"
                         % (field, len(m.data), limits.max_message_bytes))
    check_pairs(m.metadata, field + ".metadata", limits)


def check_send(channel: str, messages: Sequence[Message], limits: ServerLimits) -> None:
    check_channel(channel, "send: channel")
    if len(messages) > limits.max_send_messages:
        raise _exhausted("send: messages: %d, more than max-send-messages %d"
                         % (len(messages), limits.max_send_messages))
    for i, m in enumerate(messages):
        check_message(m, "send: messages[%d]" % i, limits)


def check_configuration(channels: Sequence[str], extensions: Optional[Sequence[Tuple[str, str]]],
                        limits: ServerLimits) -> None:
    if len(channels) > limits.max_config_channels:
        raise _exhausted("update-guest-configuration: channels: %d, more than "
                         "max-config-channels %d" % (len(channels), limits.max_config_channels))
    for i, c in enumerate(channels):
        check_channel(c, "update-guest-configuration: channels[%d]" % i)
    n = len(extensions or ())
    if n > limits.max_metadata_entries:
        raise _exhausted("update-guest-configuration: extensions: %d entries, more than "
                         "max-metadata-entries %d" % (n, limits.max_metadata_entries))
    size = 0
    for i, (k, v) in enumerate(extensions or ()):
        size += len(utf8(k, "update-guest-configuration: extensions[%d].key" % i))
        size += len(utf8(v, "update-guest-configuration: extensions[%d].value" % i))
    if size > limits.max_metadata_bytes:
        raise _exhausted("update-guest-configuration: extensions: %d key and value bytes, more "
                         "than max-metadata-bytes %d" % (size, limits.max_metadata_bytes))


def check_u32(value: int, field: str) -> None:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise _invalid("%s: %r is not a u32 (0..4294967295)" % (field, value))


def check_credit(counter: int, additional: int, field: str, limits: ServerLimits) -> None:
    check_u32(additional, field)
    if limits.max_credit and counter + additional > limits.max_credit:
        raise _exhausted("%s: %d would make the stream's credit %d, more than max-credit %d"
                         % (field, additional, counter + additional, limits.max_credit))


def check_frame(length: int, what: str, limits: ServerLimits) -> None:
    if length > limits.max_frame_bytes:
        raise _exhausted("%s: the frame would be %d bytes, more than max-frame-bytes %d"
                         % (what, length, limits.max_frame_bytes))
