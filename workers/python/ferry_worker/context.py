"""The context a handler gets beside its request: progress, cancellation, deadline.

Under a host, ``ctx`` is the native context of the Rust runtime (``_native.NativeContext``).
:class:`LocalContext` is the same interface in pure Python, for calling handlers in tests
(:meth:`ferry_worker.Worker.handle` uses it).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from . import _native
from .errors import Cancelled


@runtime_checkable
class Context(Protocol):
    """What a running handler can do besides computing."""

    @property
    def request_id(self) -> str:
        """The id of the request being served."""
        ...

    @property
    def deadline(self) -> float | None:
        """When the request's deadline passes, on the ``time.monotonic()`` clock."""
        ...

    @property
    def time_left(self) -> float | None:
        """Seconds until the deadline (0.0 once passed), ``None`` without one."""
        ...

    @property
    def cancelled(self) -> bool:
        """Whether the host cancelled the request, its deadline passed or the host is gone.

        Reading it also lets the worker see cancels and answer ``health`` probes while the
        handler runs: long handlers should read it now and then (each step, each batch).
        """
        ...

    def check_cancelled(self) -> None:
        """Raises :class:`~ferry_worker.Cancelled` if :attr:`cancelled`."""
        ...

    def progress(self, fraction: float, stage: str = "", message: str = "") -> None:
        """Sends a ``progress`` event: ``fraction`` in 0..1 (clamped), a stage, a message."""
        ...

    def event(self, name: str, data: Any = None) -> None:
        """Sends any event about this request, with JSON ``data``."""
        ...

    def reply_buffer(self, n: int) -> _native.ReplyBuffer:
        """A writable buffer of ``n`` zeroed bytes to answer with as an attachment
        (``Reply(None, [buf])``), filled in place (``numpy.frombuffer(buf, dtype)``,
        ``memoryview(buf)[...] = ...``): the runtime sends it without copying it into
        ``bytes``."""
        ...


class LocalContext:
    """A :class:`Context` with no host: records events, cancels on demand.

    >>> ctx = LocalContext()
    >>> ctx.progress(0.5, "inference", "step 1/2")
    >>> ctx.events
    [('progress', {'progress': 0.5, 'stage': 'inference', 'message': 'step 1/2'})]
    """

    def __init__(self, request_id: str = "local-1", deadline_ms: int | None = None) -> None:
        self._request_id = request_id
        self._deadline = None if deadline_ms is None else time.monotonic() + deadline_ms / 1000
        self._cancelled = False
        self.events: list[tuple[str, Any]] = []

    @property
    def request_id(self) -> str:
        return self._request_id

    @property
    def deadline(self) -> float | None:
        return self._deadline

    @property
    def time_left(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    @property
    def cancelled(self) -> bool:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._cancelled = True
        return self._cancelled

    def cancel(self) -> None:
        """Marks the request cancelled, as a host's ``cancel`` would."""
        self._cancelled = True

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled("cancelled")

    def progress(self, fraction: float, stage: str = "", message: str = "") -> None:
        clamped = min(1.0, max(0.0, float(fraction)))
        self.events.append(("progress", {"progress": clamped, "stage": stage, "message": message}))

    def event(self, name: str, data: Any = None) -> None:
        self.events.append((name, _native.to_json_value(data)))

    def reply_buffer(self, n: int) -> _native.ReplyBuffer:
        return _native.ReplyBuffer(n)


if TYPE_CHECKING:
    # mypy checks that both implementations satisfy the protocol.
    def _native_is_a_context(ctx: _native.NativeContext) -> Context:
        return ctx

    def _local_is_a_context(ctx: LocalContext) -> Context:
        return ctx
