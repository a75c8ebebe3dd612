"""What a handler receives and returns.

:class:`Request` and :class:`Reply` are the native module's classes: the serve loop hands
the worker a ``Request`` and sends the ``Reply`` it gets back as it is, so neither is
repacked in Python on the way. A raw handler gets a :class:`RawRequest` instead (JSON bytes,
attachments as ``memoryview``s lent for the call); a :class:`ReplyBuffer`
(``ctx.reply_buffer(n)``) is an answer attachment filled in place.

>>> reply = Reply({"images": 1}, [b"\\x89PNG"])
>>> reply.data, reply.attachments, reply.metrics
({'images': 1}, [b'\\x89PNG'], None)
>>> Request("inference", {"prompt": "a fox"}).operation
'inference'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeAlias

from . import _native
from ._native import RawRequest, Reply, ReplyBuffer, Request

if TYPE_CHECKING:
    from ._native import Priority
else:
    # Built from the native list at run time (see errors.ErrorCode).
    Priority = Literal[_native.PRIORITIES]

Buffer: TypeAlias = bytes | bytearray | memoryview | ReplyBuffer
"""An attachment: bytes, or anything exporting a byte buffer (a :class:`ReplyBuffer`)."""

__all__ = ["Buffer", "Priority", "RawRequest", "Reply", "ReplyBuffer", "Request"]
