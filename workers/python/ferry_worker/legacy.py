"""The old design's message shapes, for porting its workers.

An old worker read ``{"type": "inference", "request_id": "x", "data": {...}}`` and answered
``{"success": true, "request_id": "x", "data": {...}}``. A function written against these
dataclasses is served unchanged with :meth:`ferry_worker.Worker.legacy_operation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ErrorCode, error_code


@dataclass(slots=True)
class WorkerRequest:
    """A request in the old design's shape: ``type`` is the operation."""

    type: str
    request_id: str
    data: Any = field(default_factory=dict)

    @property
    def operation(self) -> str:
        """The operation (the old design called it ``type``)."""
        return self.type

    @classmethod
    def from_dict(cls, message: dict[str, Any]) -> WorkerRequest:
        """Reads an old-design request line (already parsed)."""
        return cls(
            type=str(message.get("type", "")),
            request_id=str(message.get("request_id", "")),
            data=message.get("data", {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The old-design request line (to be ``json.dumps``-ed)."""
        return {"type": self.type, "request_id": self.request_id, "data": self.data}


@dataclass(slots=True)
class WorkerResponse:
    """An answer in the old design's shape.

    On failure ``error`` is a message (answered ``internal``, as the host reads a legacy
    string error) or ``{"code": ..., "message": ...}``.
    """

    success: bool
    request_id: str = ""
    data: Any = None
    error: str | dict[str, Any] | None = None

    @classmethod
    def ok(cls, request_id: str, data: Any) -> WorkerResponse:
        """A successful answer."""
        return cls(success=True, request_id=request_id, data=data)

    @classmethod
    def fail(cls, request_id: str, error: str | dict[str, Any]) -> WorkerResponse:
        """A failed answer."""
        return cls(success=False, request_id=request_id, error=error)

    @classmethod
    def from_dict(cls, message: dict[str, Any]) -> WorkerResponse:
        """Reads an old-design answer (already parsed)."""
        return cls(
            success=bool(message.get("success", False)),
            request_id=str(message.get("request_id", "")),
            data=message.get("data"),
            error=message.get("error"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The old-design answer line (to be ``json.dumps``-ed)."""
        out: dict[str, Any] = {"success": self.success, "request_id": self.request_id}
        if self.success:
            out["data"] = self.data
        else:
            out["error"] = self.error
        return out

    def error_answer(self) -> tuple[ErrorCode, str]:
        """The ``(code, message)`` a failed answer is sent as."""
        error = self.error
        if isinstance(error, dict):
            code = error_code(str(error.get("code", "internal")))
            message = str(error.get("message", "legacy worker reported an error"))
            return code, message
        if isinstance(error, str):
            return "internal", error
        return "internal", "legacy worker reported failure"
