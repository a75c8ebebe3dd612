"""Exceptions a handler raises to answer with a typed error, and how exceptions map to codes.

A handler's exception becomes the request's ``error`` answer:

* :class:`FerryError` (and its subclasses) → its ``code``, with its message;
* ``ValueError`` / ``TypeError`` (bad input) → ``invalid_request``, with ``str(exc)``;
* anything else → ``internal``, with ``"TypeName: message"`` (the traceback goes to the log).
"""

from __future__ import annotations

# The closed set of protocol error codes (docs/protocol.md, section 4).
ERROR_CODES: frozenset[str] = frozenset(
    {
        "invalid_request",
        "unknown_operation",
        "timeout",
        "cancelled",
        "overloaded",
        "worker_crashed",
        "frame_too_large",
        "protocol",
        "version_mismatch",
        "unavailable",
        "startup_failed",
        "internal",
    }
)


class FerryError(Exception):
    """An error with a protocol error code; raised from a handler, it answers with that code.

    ``FerryError("busy", "overloaded")``. A code outside :data:`ERROR_CODES` becomes
    ``internal`` (the message is kept).
    """

    default_code: str = "internal"

    def __init__(self, message: str = "", code: str | None = None) -> None:
        super().__init__(message)
        chosen = code if code is not None else self.default_code
        self.code: str = chosen if chosen in ERROR_CODES else "internal"
        self.message: str = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class InvalidRequest(FerryError, ValueError):
    """The request's data is invalid: answered ``invalid_request`` (never retried)."""

    default_code = "invalid_request"


class Cancelled(FerryError):
    """The request was cancelled or its deadline passed: answered ``cancelled``.

    Raised by ``ctx.check_cancelled()``.
    """

    default_code = "cancelled"


def error_answer(exc: BaseException) -> tuple[str, str]:
    """The ``(code, message)`` a handler's exception is answered with."""
    if isinstance(exc, FerryError):
        return exc.code, exc.message or exc.code
    text = str(exc)
    name = type(exc).__name__
    if isinstance(exc, (ValueError, TypeError)):
        return "invalid_request", text or name
    return "internal", f"{name}: {text}" if text else name
