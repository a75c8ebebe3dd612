"""The worker's channel to its host, opened once, before user code is imported.

For the stdio transport, opening it duplicates fds 0 and 1 for the protocol and points fd 1
at stderr (and fd 0 at ``/dev/null``). From then on ``print()``, ``os.write(1, ...)`` and a
native library writing to stdout all land in the host's log instead of corrupting the
channel. Other transports leave fds alone (the host logs the worker's stdout).
"""

from __future__ import annotations

import io
import logging
import os
import sys

from . import _native

_connection: _native.Connection | None = None


def connect() -> _native.Connection:
    """Opens the channel the host set up (idempotent) and returns it.

    Call it first thing in a worker script, before importing heavy libraries, or start the
    worker with ``python -m ferry_worker MODULE:WORKER``, which does so for you. Raises
    :class:`~ferry_worker.FerryError` when the process was not started by a ferry host.
    """
    global _connection
    if _connection is None:
        _connection = _native.connect()
        _line_buffered_stdout()
    return _connection


def _line_buffered_stdout() -> None:
    # fd 1 is the log now: flush each line so prints reach the host's log as they happen.
    out = sys.stdout
    if isinstance(out, io.TextIOWrapper):
        out.reconfigure(line_buffering=True)


def configure_logging() -> None:
    """Sends Python ``logging`` to stderr (the host's log) unless the program set it up.

    The level is ``FERRY_PYTHON_LOG`` (``DEBUG``, ``INFO``, ...; default ``INFO``).
    """
    root = logging.getLogger()
    if root.handlers:
        return
    level = os.environ.get("FERRY_PYTHON_LOG", "INFO").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format="%(levelname)s %(name)s: %(message)s",
    )
