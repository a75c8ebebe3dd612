"""The native loop calls synchronous handlers itself; its answers are ``_dispatch``'s.

Each operation of ``fixtures/answers_worker.py`` is called over the wire (the native loop's
direct call) and in-process with ``Worker.handle`` (through ``Worker._dispatch``); the two
must answer alike.
"""

from __future__ import annotations

import base64
import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest
from ferry_worker import FerryError, Worker

from conftest import FIXTURES, PipeHost

ANSWERS = ("-m", "ferry_worker", "answers_worker")


@pytest.fixture
def in_process() -> Iterator[Worker]:
    """The fixture's worker, imported into this process."""
    spec = importlib.util.spec_from_file_location("answers_worker", FIXTURES / "answers_worker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    worker = module.worker
    assert isinstance(worker, Worker)
    yield worker
    worker.close()


def _in_process(
    worker: Worker, operation: str, data: Any, attachments: list[bytes] | None = None
) -> dict[str, Any]:
    """``Worker.handle``'s answer in the wire's shape (data and attachments, or the error)."""
    try:
        reply = worker.handle(operation, data, attachments or [])
    except FerryError as e:
        return {"error": (e.code, e.message)}
    return {"data": reply.data, "attachments": [bytes(a) for a in reply.attachments]}


def _served(
    host: PipeHost, operation: str, data: Any, attachments: list[bytes] | None = None
) -> dict[str, Any]:
    answer = host.call(operation, data, attachments=attachments or [])
    if "error" in answer:
        return {"error": (answer["error"]["code"], answer["error"]["message"])}
    attachments = [base64.b64decode(a["data_base64"]) for a in answer.get("attachments", [])]
    return {"data": answer.get("data"), "attachments": attachments}


OPERATIONS = [
    "reply",
    "plain_data",
    "nothing",
    "legacy_success",
    "legacy_failure",
    "returned_error",
    "raised_error",
    "raised_value_error",
    "raised_runtime_error",
    "cancelled",
    "awaitable",
    "awaitable_that_raises",
    "not_json",
    "async_caller",
    "raw_echo",
]


@pytest.fixture
def served(spawn: Any) -> PipeHost:
    host: PipeHost = spawn(*ANSWERS)
    host.read()
    return host


def test_the_loop_calls_sync_handlers_itself_and_async_ones_through_dispatch(
    served: PipeHost, in_process: Worker
) -> None:
    assert served.call("caller")["data"] == "run"  # the frame that called `serve`
    assert _in_process(in_process, "caller", None)["data"] == "_dispatch"


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_direct_call_answers_as_dispatch_does(
    served: PipeHost, in_process: Worker, operation: str
) -> None:
    data = {"k": [1, "two"]}
    attachments = [b"\x00\xff", b""]
    over_the_wire = _served(served, operation, data, attachments)
    here = _in_process(in_process, operation, data, attachments)
    if operation == "not_json":
        # Both refuse it; the wording differs (the wire's names the handler's answer).
        assert over_the_wire["error"][0] == here["error"][0] == "internal"
    else:
        assert over_the_wire == here
    # Nothing above ended the loop.
    assert served.call("reply", 1)["data"] == {"echo": 1}


def test_an_unexpected_exception_in_a_direct_call_is_logged_with_its_traceback(
    served: PipeHost,
) -> None:
    assert served.call("raised_runtime_error")["error"]["code"] == "internal"
    assert served.call("awaitable_that_raises")["error"]["code"] == "internal"
    log = served.log()
    assert "RuntimeError: CUDA OOM" in log and "in raised_runtime_error" in log
    assert "KeyError: 'prompt'" in log and "in _fails" in log


def test_a_handler_registered_again_while_serving_is_the_one_called(served: PipeHost) -> None:
    assert served.call("target")["data"] == "original"
    served.call("swap")
    assert served.call("target")["data"] == "replaced"
    served.call("swap", "async")
    assert served.call("target")["data"] == "replaced-async"
    served.call("swap")
    assert served.call("target")["data"] == "replaced"


def test_a_subclass_with_its_own_dispatch_serves_every_request(spawn: Any) -> None:
    host: PipeHost = spawn("-m", "ferry_worker", "answers_worker:wrapped")
    host.read()
    assert host.call("hello")["data"] == {"wrapped": "hello"}
