"""Type stubs of the native module (pyo3 bindings over ferry's Rust worker runtime)."""

from collections.abc import Callable
from typing import Any

VERSION: str
RUST_RUNTIME: str
PROTOCOL_VERSION: int
TRANSPORTS: list[str]

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
        dispatch: Callable[..., tuple[bool, Any, Any, Any]],
        runtime: str,
    ) -> None: ...

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

def connect() -> Connection: ...
def to_json_value(value: Any) -> Any: ...
