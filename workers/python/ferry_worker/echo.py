"""The Python echo worker, for tests and benchmarks: ``python -m ferry_worker.echo``.

It mirrors the Rust echo worker (``ferry worker echo``):

- ``echo``: answers the request's data and attachments unchanged, not timed (no
  ``processing_time_ms``), as the Rust echo worker's ``echo``.
- ``sleep`` ``{"ms": 100, "steps": 10}``: works for ``ms`` in ``steps`` steps, checking for
  cancellation and sending a progress event after each; answers ``{"slept_ms", "steps"}``.
- ``fail`` ``{"code": "invalid_request", "message": "..."}``: answers that error; with
  ``{"raise": "ValueError", "message": "..."}`` it raises that built-in exception instead,
  to show how exceptions map to codes.
- ``print``: writes to stdout with ``print()`` and ``os.write(1, ...)``, then echoes (not
  timed either).
- ``async_echo``: ``echo`` as an ``async def`` handler.

With ``--raw`` (or ``FERRY_ECHO_RAW=1`` in its environment, which ``ferry bench --worker
python --python-echo raw`` sets), ``echo`` is a raw handler (:meth:`Worker.raw_operation`): the data as
JSON bytes, the attachments as views over the receive buffer, answered from where they are.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from ferry_worker import (
    Context,
    FerryError,
    InvalidRequest,
    RawRequest,
    Reply,
    Request,
    Worker,
    error_code,
)

worker = Worker("echo")

RAISABLE: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "TypeError": TypeError,
    "KeyError": KeyError,
    "RuntimeError": RuntimeError,
    "ZeroDivisionError": ZeroDivisionError,
}


def _field(data: Any, name: str, default: int) -> int:
    value = data.get(name, default) if isinstance(data, dict) else default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequest(f"data.{name}: expected a non-negative integer")
    return value


@worker.operation(timed=False)
def echo(request: Request, ctx: Context) -> Reply:
    return Reply(request.data, request.attachments)


def raw_echo(request: RawRequest, ctx: Context) -> Reply:
    """``echo`` as a raw handler: no dict built for ``null`` data, no attachment copied."""
    data = request.data
    return Reply(None if data == b"null" else json.loads(data), request.attachments)


@worker.operation()
def sleep(request: Request, ctx: Context) -> dict[str, int]:
    ms = _field(request.data, "ms", 100)
    steps = max(1, _field(request.data, "steps", 10))
    for i in range(1, steps + 1):
        time.sleep(ms / steps / 1000)
        ctx.check_cancelled()
        ctx.progress(i / steps, "sleep", f"step {i}/{steps}")
    return {"slept_ms": ms, "steps": steps}


@worker.operation()
def fail(request: Request, ctx: Context) -> None:
    data = request.data if isinstance(request.data, dict) else {}
    message = str(data.get("message", "requested failure"))
    exception = data.get("raise")
    if exception is not None:
        raise RAISABLE.get(str(exception), RuntimeError)(message)
    # A code outside the closed set is answered `internal`, as the host reads one.
    raise FerryError(message, error_code(str(data.get("code", "internal"))))


@worker.operation("print", timed=False)
def print_(request: Request, ctx: Context) -> Reply:
    print("a library printing to stdout must not corrupt the channel")
    os.write(1, b"nor one writing to fd 1 directly\n")
    sys.stdout.flush()
    return Reply(request.data, request.attachments)


@worker.operation()
async def async_echo(request: Request, ctx: Context) -> Reply:
    await asyncio.sleep(0)
    return Reply(request.data, request.attachments)


if __name__ == "__main__":
    if "--raw" in sys.argv[1:] or os.environ.get("FERRY_ECHO_RAW") == "1":
        worker.add_operation("echo", raw_echo, raw=True, timed=False)
    worker.run()
