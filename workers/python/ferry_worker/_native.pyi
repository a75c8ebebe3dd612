"""Type stubs of the native module (pyo3 bindings over ferry's Rust worker runtime).

The two literal types spell out closed sets the Rust crate defines (``ErrorCode::ALL``,
``Priority``); ``tests/test_native_types.py`` checks them, and every name here, against
what the built module reports.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final, Literal, TypeAlias, final

from ferry_worker.context import Context
from ferry_worker.messages import Buffer

ErrorCode: TypeAlias = Literal[
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
]
Priority: TypeAlias = Literal["high", "normal", "low"]

VERSION: Final[str]
RUST_RUNTIME: Final[str]
PROTOCOL_VERSION: Final[int]
TRANSPORTS: Final[list[str]]
ERROR_CODES: Final[tuple[ErrorCode, ...]]
PRIORITIES: Final[tuple[Priority, ...]]

class FerryError(Exception):
    """An error with a protocol error code; raised from a handler, it answers with that code."""

    default_code: ClassVar[ErrorCode]
    def __init__(self, message: str = "", code: ErrorCode | None = None) -> None: ...
    @property
    def code(self) -> ErrorCode: ...
    @property
    def message(self) -> str: ...
    @property
    def retryable(self) -> bool: ...

class InvalidRequest(FerryError, ValueError):
    """The request's data is invalid: answered ``invalid_request`` (never retried)."""

class Cancelled(FerryError):
    """The request was cancelled or its deadline passed: answered ``cancelled``."""

@final
class Request:
    """One request, as the dispatcher and handlers see it."""

    def __new__(
        cls,
        operation: str,
        data: Any = None,
        attachments: Sequence[bytes] | None = None,
        request_id: str | None = None,
        deadline_ms: int | None = None,
        priority: Priority | None = None,
        context: Context | None = None,
    ) -> Request: ...
    @property
    def operation(self) -> str: ...
    @property
    def data(self) -> Any: ...
    @property
    def attachments(self) -> Sequence[bytes]: ...
    @property
    def request_id(self) -> str: ...
    @property
    def deadline_ms(self) -> int | None: ...
    @property
    def priority(self) -> Priority | None: ...
    @property
    def context(self) -> Context | None: ...

@final
class Reply:
    """A handler's answer: JSON data, binary attachments, metrics."""

    def __new__(
        cls,
        data: Any = None,
        attachments: Sequence[Buffer] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> Reply: ...
    @property
    def data(self) -> Any: ...
    @property
    def attachments(self) -> list[Buffer]: ...
    @property
    def metrics(self) -> Mapping[str, float] | None: ...
    def __eq__(self, other: object) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

@final
class RawRequest:
    """One request as a raw handler sees it: JSON bytes, attachments lent for the call."""

    def __new__(
        cls,
        operation: str,
        data: Buffer | None = None,
        attachments: Sequence[Buffer] | None = None,
        request_id: str | None = None,
        deadline_ms: int | None = None,
        priority: Priority | None = None,
        context: Context | None = None,
    ) -> RawRequest: ...
    @property
    def operation(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def attachments(self) -> list[memoryview]: ...
    @property
    def request_id(self) -> str: ...
    @property
    def deadline_ms(self) -> int | None: ...
    @property
    def priority(self) -> Priority | None: ...
    @property
    def context(self) -> Context | None: ...
    def revoke(self) -> None: ...

@final
class Attachment:
    """One request attachment lent for a call (a raw request's ``view.obj``): read-only."""

    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __len__(self) -> int: ...

@final
class ReplyBuffer:
    """A writable buffer a handler fills and answers with as an attachment, sent uncopied."""

    def __new__(cls, n: int) -> ReplyBuffer: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __len__(self) -> int: ...

@final
class Connection:
    """The worker's end of the link to its host, not yet served."""

    @property
    def transport(self) -> str: ...
    @property
    def codec(self) -> str: ...
    def serve(
        self,
        worker_type: str,
        operations: list[str],
        dispatch: Callable[[Request], Reply | FerryError]
        | Callable[[Request | RawRequest], Reply | FerryError],
        runtime: str,
        raw_operations: list[str] = ...,
        untimed_operations: list[str] = ...,
        handlers: dict[str, Callable[[Any, Any], Any]] | None = ...,
        settle: Callable[[Any, Any], Reply | FerryError] | None = ...,
        failed: Callable[[Any, BaseException], Reply | FerryError] | None = ...,
    ) -> None: ...

@final
class NativeContext:
    """The context of one request, as handlers see it."""

    @property
    def request_id(self) -> str: ...
    @property
    def deadline(self) -> float | None: ...
    @property
    def time_left(self) -> float | None: ...
    @property
    def cancelled(self) -> bool: ...
    def check_cancelled(self) -> None: ...
    def progress(self, fraction: float, stage: str = "", message: str = "") -> None: ...
    def event(self, name: str, data: Any = None) -> None: ...
    def reply_buffer(self, n: int) -> ReplyBuffer: ...

def connect() -> Connection: ...
def to_json_value(value: Any) -> Any: ...
def error_code(code: str) -> ErrorCode: ...
def wire_answer(answer: Reply | FerryError) -> Reply: ...
