"""ferry_worker: write ferry workers in Python.

The protocol, every transport and every codec are ferry's Rust worker runtime, bound with
pyo3 (``ferry_worker._native``); this package adds the Python API::

    from ferry_worker import Context, Request, Worker

    worker = Worker("sdxl")

    @worker.operation()
    def inference(request: Request, ctx: Context) -> dict:
        for step in range(30):
            ctx.check_cancelled()
            ...
            ctx.progress((step + 1) / 30, "inference", f"step {step + 1}/30")
        return {"images": 1}

Start it from a host as ``python -m ferry_worker my_module:worker`` (see docs/python.md).
"""

from __future__ import annotations

from ._native import PROTOCOL_VERSION, TRANSPORTS, VERSION
from .connection import configure_logging, connect
from .context import Context, LocalContext
from .errors import (
    ERROR_CODES,
    Cancelled,
    ErrorCode,
    FerryError,
    InvalidRequest,
    error_answer,
    error_code,
)
from .legacy import WorkerRequest, WorkerResponse
from .messages import Buffer, Priority, RawRequest, Reply, ReplyBuffer, Request
from .worker import RUNTIME, Handler, LegacyHandler, RawHandler, Worker

__version__ = VERSION

__all__ = [
    "ERROR_CODES",
    "PROTOCOL_VERSION",
    "RUNTIME",
    "TRANSPORTS",
    "Buffer",
    "Cancelled",
    "Context",
    "ErrorCode",
    "FerryError",
    "Handler",
    "InvalidRequest",
    "LegacyHandler",
    "LocalContext",
    "Priority",
    "RawHandler",
    "RawRequest",
    "Reply",
    "ReplyBuffer",
    "Request",
    "Worker",
    "WorkerRequest",
    "WorkerResponse",
    "__version__",
    "configure_logging",
    "connect",
    "error_answer",
    "error_code",
]
