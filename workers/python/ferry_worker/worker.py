"""The worker: its type, its operations and their handlers, and the loop that serves them."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import platform
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from . import _native
from .connection import configure_logging, connect
from .context import Context, LocalContext
from .errors import Cancelled, FerryError, error_answer
from .legacy import WorkerRequest, WorkerResponse
from .messages import Buffer, RawRequest, Reply, Request

log = logging.getLogger("ferry_worker")

Handler = Callable[[Request, Context], Any]
"""``handler(request, ctx)``: returns JSON data, a :class:`Reply`, a
:class:`WorkerResponse` or a :class:`FerryError` (answered as if raised), or raises; may be
``async def``."""

RawHandler = Callable[[RawRequest, Context], Any]
"""``handler(request, ctx)`` of a raw operation (:meth:`Worker.raw_operation`): the request's
data as JSON bytes, its attachments as ``memoryview``s valid for the call only; answers as a
:data:`Handler` does."""

LegacyHandler = Callable[[WorkerRequest], Any]
"""``handler(WorkerRequest)``: returns a :class:`WorkerResponse` or JSON data."""

H = TypeVar("H", bound=Handler)
R = TypeVar("R", bound=RawHandler)
L = TypeVar("L", bound=LegacyHandler)

Answer = Reply | FerryError
"""What the native loop takes back for each request: the reply to send, or the error to
answer with."""

RUNTIME = (
    f"ferry-python/{_native.VERSION} (CPython {platform.python_version()}; {_native.RUST_RUNTIME})"
)


class Worker:
    """A worker type and its operations.

    >>> worker = Worker("echo")
    >>> @worker.operation()
    ... def echo(request: Request, ctx: Context) -> Any:
    ...     return request.data
    >>> worker.handle("echo", {"x": 1}).data
    {'x': 1}

    ``worker.run()`` serves the host that started the process; ``python -m ferry_worker
    module:worker`` connects first, imports ``module``, then runs ``worker``.
    """

    def __init__(self, worker_type: str) -> None:
        self.worker_type = worker_type
        # name -> (handler, is a coroutine function)
        self._exact: dict[str, tuple[_AnyHandler, bool]] = {}
        self._prefixes: list[tuple[str, tuple[_AnyHandler, bool]]] = []
        # name -> handler, for the exact names with a synchronous handler: the native loop
        # calls these itself (kept up to date, as it reads this dict per request).
        self._direct: dict[str, _AnyHandler] = {}
        # the names (prefixes with their `*`) served by raw handlers
        self._raw: set[str] = set()
        # the names (prefixes with their `*`) whose answers are not timed
        self._untimed: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- declaring operations -------------------------------------------------------------

    def operation(self, name: str | None = None, *, timed: bool = True) -> Callable[[H], H]:
        """Decorator: serve ``name`` (default: the function's name) with this handler.

        A name ending in ``*`` is a prefix (``"device.*"``); exact names win over prefixes,
        longer prefixes over shorter ones. With ``timed=False`` the runtime does not time the
        handler: its answers carry no ``processing_time_ms`` unless the handler's ``Reply``
        sets one (two clock reads saved per call, for operations that take microseconds).
        """

        def register(handler: H) -> H:
            self.add_operation(name or handler.__name__, handler, timed=timed)
            return handler

        return register

    def raw_operation(self, name: str | None = None, *, timed: bool = True) -> Callable[[R], R]:
        """Decorator: serve ``name`` with a raw handler, which skips the per-call conversions.

        The handler gets a :class:`RawRequest`: ``data`` is the request's data as compact
        JSON ``bytes`` (no dict is built), ``attachments`` are read-only ``memoryview``s over
        the runtime's receive buffer (no copy), valid for the call only: when the handler
        returns they are released, and a kept one raises ``ValueError``. It answers as any
        handler does; an attachment answered as one of those views (or a slice of one) is
        sent from the receive buffer, and a ``ctx.reply_buffer(n)`` is sent without a copy.
        ``timed`` as for :meth:`operation`.
        """

        def register(handler: R) -> R:
            self.add_operation(name or handler.__name__, handler, raw=True, timed=timed)
            return handler

        return register

    def add_operation(
        self, name: str, handler: Handler | RawHandler, *, raw: bool = False, timed: bool = True
    ) -> None:
        """Serves ``name`` with ``handler`` (see :meth:`operation`; with ``raw``,
        :meth:`raw_operation`; ``timed`` as for :meth:`operation`)."""
        if not name:
            raise ValueError("an operation needs a name")
        if name in ("health", "capabilities", "shutdown"):
            raise ValueError(f"`{name}` is a built-in operation the runtime answers")
        if raw:
            self._raw.add(name)
        else:
            self._raw.discard(name)
        if timed:
            self._untimed.discard(name)
        else:
            self._untimed.add(name)
        entry: tuple[_AnyHandler, bool] = (handler, inspect.iscoroutinefunction(handler))
        if name.endswith("*"):
            self._prefixes = [(p, e) for p, e in self._prefixes if p != name[:-1]]
            self._prefixes.append((name[:-1], entry))
            self._prefixes.sort(key=lambda pe: len(pe[0]), reverse=True)
        else:
            self._exact[name] = entry
            if entry[1]:
                self._direct.pop(name, None)
            else:
                self._direct[name] = handler

    def legacy_operation(self, name: str) -> Callable[[L], L]:
        """Decorator: serve ``name`` with an old-design ``handler(WorkerRequest)``.

        ``"*"`` serves every operation, as the old single-function workers did.
        """

        def register(handler: L) -> L:
            def adapted(request: Request, ctx: Context) -> Any:
                legacy = WorkerRequest(request.operation, request.request_id, request.data)
                return handler(legacy)

            self.add_operation(name, adapted)
            return handler

        return register

    @property
    def operations(self) -> list[str]:
        """The operation names announced in ``ready`` (prefixes with their ``*``)."""
        return [*self._exact, *(prefix + "*" for prefix, _ in self._prefixes)]

    @property
    def raw_operations(self) -> list[str]:
        """The operations (prefixes with their ``*``) served by raw handlers."""
        return sorted(self._raw)

    @property
    def untimed_operations(self) -> list[str]:
        """The operations (prefixes with their ``*``) whose answers the runtime does not time."""
        return sorted(self._untimed)

    def handler_for(self, operation: str) -> Handler | RawHandler | None:
        """The handler that serves ``operation``, if any."""
        entry = self._entry(operation)
        return None if entry is None else entry[0]

    def is_raw(self, operation: str) -> bool:
        """Whether ``operation`` is served by a raw handler."""
        if operation in self._exact:
            return operation in self._raw
        for prefix, _ in self._prefixes:
            if operation.startswith(prefix):
                return prefix + "*" in self._raw
        return False

    def _entry(self, operation: str) -> tuple[_AnyHandler, bool] | None:
        entry = self._exact.get(operation)
        if entry is not None:
            return entry
        for prefix, candidate in self._prefixes:
            if operation.startswith(prefix):
                return candidate
        return None

    # -- serving ------------------------------------------------------------------------

    def run(self, connection: _native.Connection | None = None) -> None:
        """Serves the host that started this process until it sends ``shutdown`` or goes away.

        Connects first if :func:`ferry_worker.connect` was not called. Python ``logging``
        goes to stderr (the host's log). Ctrl-C ends the worker at once, as it does a Rust
        worker. A handler raising ``SystemExit`` answers its request, then ends the loop and
        the exception propagates from here.
        """
        conn = connection if connection is not None else connect()
        configure_logging()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            conn.serve(
                self.worker_type,
                self.operations,
                self._dispatch,
                RUNTIME,
                self.raw_operations,
                self.untimed_operations,
                # The loop calls these handlers itself (one Python frame fewer per call);
                # `async def` ones and prefixes go through `_dispatch`, and every request
                # does when a subclass has its own `_dispatch`.
                self._direct if type(self)._dispatch is Worker._dispatch else None,
                self._settle,
                self._failed,
            )
        finally:
            self.close()

    def close(self) -> None:
        """Closes the event loop that ran ``async`` handlers, if one was made."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()
        self._loop = None

    def handle(
        self,
        operation: str,
        data: Any = None,
        attachments: Sequence[Buffer] = (),
        *,
        ctx: Context | None = None,
        deadline_ms: int | None = None,
        request_id: str = "local-1",
    ) -> Reply:
        """Calls ``operation`` in this process as the host would, for tests and scripts.

        Returns the answer as a :class:`Reply` whose data, attachments and metrics went
        through the serve loop's own conversion (``_native.wire_answer``): a raw handler
        gets a :class:`RawRequest` (its attachments copies, revoked after the call); raises
        :class:`FerryError` with the code the host would get. ``ctx`` defaults to a fresh
        :class:`LocalContext`.
        """
        context = ctx if ctx is not None else LocalContext(request_id, deadline_ms)
        if self.handler_for(operation) is None:
            raise FerryError(self._unknown(operation), "unknown_operation")
        if self.is_raw(operation):
            raw = RawRequest(
                operation,
                json.dumps(
                    _native.to_json_value(data), separators=(",", ":"), ensure_ascii=False
                ).encode(),
                attachments,
                context.request_id,
                deadline_ms,
                None,
                context,
            )
            try:
                return _native.wire_answer(self._dispatch(raw))
            finally:
                raw.revoke()
        request = Request(
            operation,
            _native.to_json_value(data),
            [bytes(a) for a in attachments],
            context.request_id,
            deadline_ms,
            None,
            context,
        )
        return _native.wire_answer(self._dispatch(request))

    def _unknown(self, operation: str) -> str:
        return f"operation `{operation}` is not served by worker type `{self.worker_type}`"

    def _dispatch(self, request: Request | RawRequest) -> Answer:
        """Runs one request's handler; called by the native loop (and :meth:`handle`)."""
        operation = request.operation
        # An exact name is one dict lookup here: no method call on the hot path.
        entry = self._exact.get(operation) or self._entry(operation)
        if entry is None:
            return FerryError(self._unknown(operation), "unknown_operation")
        handler, is_async = entry
        ctx = request.context
        if ctx is None:
            # A request made in-process without a context (the host always gives one).
            ctx = LocalContext(request.request_id, request.deadline_ms)
        try:
            result = handler(request, ctx)
        except BaseException as exc:  # noqa: BLE001 (`_failed` re-raises all but Exception)
            return self._failed(request, exc)
        # A `Reply`, what most handlers return, answers as it is (no call into `_settle`).
        return result if result.__class__ is Reply else self._settle(request, result, is_async)

    def _settle(self, request: Request | RawRequest, result: Any, is_async: bool = False) -> Answer:
        """The answer for what a handler returned (the native loop calls it too)."""
        try:
            # The common answers skip the (slow) awaitable check; a plain function may
            # still return an awaitable.
            if is_async or (result.__class__ not in _PLAIN and inspect.isawaitable(result)):
                result = self._run_async(result)
        except BaseException as exc:  # noqa: BLE001 (`_failed` re-raises all but Exception)
            return self._failed(request, exc)
        return _answer(result)

    def _failed(self, request: Request | RawRequest, exc: BaseException) -> Answer:
        """The answer for what a handler raised (the native loop calls it too); re-raises
        what is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``), which ends the
        loop."""
        if isinstance(exc, asyncio.CancelledError):
            return Cancelled("cancelled")
        if not isinstance(exc, Exception):
            raise exc
        code, message = error_answer(exc)
        if code == "internal":
            log.error(
                "operation %s (request %s) failed",
                request.operation,
                request.request_id,
                exc_info=exc,
            )
        # A FerryError answers as itself (the serve loop reads its code and message).
        return exc if isinstance(exc, FerryError) else FerryError(message, code)

    def _run_async(self, awaitable: Any) -> Any:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.new_event_loop()
        return loop.run_until_complete(awaitable)


_AnyHandler = Callable[[Any, Context], Any]
"""A :data:`Handler` or a :data:`RawHandler`, as the worker keeps them."""

_PLAIN = frozenset({dict, list, str, int, float, bool, type(None), Reply, WorkerResponse})


def _answer(result: Any) -> Answer:
    if isinstance(result, Reply):
        return result
    if isinstance(result, WorkerResponse):
        if result.success:
            return Reply(result.data)
        code, message = result.error_answer()
        return FerryError(message, code)
    if isinstance(result, FerryError):
        # Returned rather than raised: answered the same way.
        return result
    return Reply(result)
