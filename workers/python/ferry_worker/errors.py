"""Exceptions a handler raises to answer with a typed error, and how exceptions map to codes.

The exception classes and the closed set of codes are the native module's (defined in Rust
over ferry's ``ErrorCode``), re-exported here. A handler's exception becomes the request's
``error`` answer:

* :class:`FerryError` (and its subclasses) → its ``code``, with its message;
* ``ValueError`` / ``TypeError`` (bad input) → ``invalid_request``, with ``str(exc)``;
* anything else → ``internal``, with ``"TypeName: message"`` (the traceback goes to the log).

>>> FerryError("busy", "overloaded").code
'overloaded'
>>> error_answer(KeyError("prompt"))
('internal', "KeyError: 'prompt'")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from . import _native
from ._native import Cancelled, FerryError, InvalidRequest, error_code

if TYPE_CHECKING:
    from ._native import ErrorCode
else:
    # The stub spells the literal out for type checkers; at run time it is built from the
    # native list, which tests/test_native_types.py checks against the stub.
    ErrorCode = Literal[_native.ERROR_CODES]

ERROR_CODES: frozenset[ErrorCode] = frozenset(_native.ERROR_CODES)
"""The closed set of protocol error codes (docs/protocol.md, section 4)."""

__all__ = [
    "ERROR_CODES",
    "Cancelled",
    "ErrorCode",
    "FerryError",
    "InvalidRequest",
    "error_answer",
    "error_code",
]


def error_answer(exc: BaseException) -> tuple[ErrorCode, str]:
    """The ``(code, message)`` a handler's exception is answered with."""
    if isinstance(exc, FerryError):
        return exc.code, exc.message or exc.code
    text = str(exc)
    name = type(exc).__name__
    if isinstance(exc, (ValueError, TypeError)):
        return "invalid_request", text or name
    return "internal", f"{name}: {text}" if text else name
