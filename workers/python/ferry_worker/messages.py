"""What a handler receives and returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Buffer = bytes | bytearray | memoryview
"""An attachment: bytes, or anything exporting a byte buffer."""


@dataclass(slots=True)
class Request:
    """One request as a handler sees it.

    ``data`` is the request's JSON data as Python objects (usually a ``dict``; ``None`` when
    absent). ``attachments`` are its binary attachments, in order, as ``bytes``.
    """

    operation: str
    data: Any = None
    attachments: Sequence[bytes] = ()
    request_id: str = ""
    deadline_ms: int | None = None
    priority: str | None = None


@dataclass(slots=True)
class Reply:
    """A handler's answer when it has attachments or metrics; plain data may be returned as is.

    ``metrics`` keys: ``processing_time_ms`` (filled in by the runtime when absent),
    ``memory_usage_mb``, ``gpu_utilization``.
    """

    data: Any = None
    attachments: Sequence[Buffer] = field(default_factory=tuple)
    metrics: Mapping[str, float] | None = None
