"""One exception class per protocol error code (docs/PROTOCOL.md section 9), plus the client's own.

Every error a server reports (an ``error`` reply, a ``goaway``, a ``stream-end``) is raised as the
class of its code, carrying the code and the server's text (WIT ``error.trace()``). The same classes
are raised when the client refuses a request before sending it (``local`` is then True): a request
over a limit of ``connect-ok`` raises :class:`ResourceExhaustedError`, a bad channel name
:class:`InvalidArgumentError`, exactly as the server would answer.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class WitmqError(Exception):
    """Base of every witmq error. ``code`` is the protocol code (0 for the client's own errors)."""

    code: int = 0
    name: str = "error"

    def __init__(self, text: str, *, code: Optional[int] = None, local: bool = False,
                 goaway: bool = False) -> None:
        super().__init__(text)
        self.text = text
        if code is not None:
            self.code = code
        self.local = local  # refused by the client before anything was sent
        self.goaway = goaway  # the server closed the connection with this error

    def trace(self) -> str:
        """What WIT's ``error.trace()`` returns: the server's text."""
        return self.text

    def __str__(self) -> str:
        return "%s (%s)" % (self.text, self.name)


class InvalidArgumentError(WitmqError):
    code, name = 1, "invalid-argument"


class NotFoundError(WitmqError):
    code, name = 2, "not-found"


class AlreadyExistsError(WitmqError):
    code, name = 3, "already-exists"


class StaleReceiptError(WitmqError):
    code, name = 4, "stale-receipt"


class PermissionDeniedError(WitmqError):
    code, name = 5, "permission-denied"


class ResourceExhaustedError(WitmqError):
    code, name = 6, "resource-exhausted"


class UnavailableError(WitmqError):
    code, name = 7, "unavailable"


class CorruptionError(WitmqError):
    code, name = 8, "corruption"


class IoError(WitmqError):
    code, name = 9, "io-error"


class UnsupportedError(WitmqError):
    code, name = 10, "unsupported"


class FailedPreconditionError(WitmqError):
    code, name = 11, "failed-precondition"


class InternalError(WitmqError):
    """Code 12, and every code this client does not know (a newer server's), as section 9 says."""

    code, name = 12, "internal"


class RequestTimeoutError(WitmqError):
    """Code 13: a request got no reply within its timeout (no responder answered)."""

    code, name = 13, "timeout"


class ConnectionLost(WitmqError):
    """The connection ended without a ``goaway`` (reset, closed, or no server of the list answered).

    Requests that were in flight may or may not have been carried out."""

    name = "connection-lost"


class ProtocolViolation(WitmqError):
    """The server sent something docs/PROTOCOL.md does not allow (a malformed or oversized frame, an
    unknown frame type, a reply to no request). The client closes the connection."""

    name = "protocol-violation"


BY_CODE: Dict[int, Type[WitmqError]] = {
    c.code: c
    for c in (InvalidArgumentError, NotFoundError, AlreadyExistsError, StaleReceiptError,
              PermissionDeniedError, ResourceExhaustedError, UnavailableError, CorruptionError,
              IoError, UnsupportedError, FailedPreconditionError, InternalError,
              RequestTimeoutError)
}


def from_code(code: int, text: str, *, goaway: bool = False) -> WitmqError:
    """The exception for an ``error-body``; unknown codes become InternalError keeping the code."""
    cls = BY_CODE.get(code, InternalError)
    return cls(text, code=code, goaway=goaway)
