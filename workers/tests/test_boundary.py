"""The typed boundary between the native serve loop and Python, over the wire.

The loop hands the dispatcher a native ``Request`` and takes back a ``Reply`` or a
``FerryError``; these tests drive both sides of that contract through a real worker process.
"""

from __future__ import annotations

from typing import Any

from conftest import PipeHost, attachment

BOUNDARY = ("-m", "ferry_worker", "boundary_worker")


def test_the_request_carries_the_envelope_and_the_context(spawn: Any) -> None:
    w: PipeHost = spawn(*BOUNDARY)
    w.read()
    w.send(
        {
            "message_id": "r-prio",
            "type": "request",
            "operation": "describe",
            "priority": "high",
            "deadline_ms": 60_000,
        }
    )
    data = w.answer("r-prio")[1]["data"]
    assert data == {
        "operation": "describe",
        "request_id": "r-prio",
        "priority": "high",
        "deadline_ms": 60_000,
        "attachments": [],
        "context_is_ctx": True,
        "types": ["ferry_worker._native", "NativeContext"],
    }
    plain = w.call("describe", attachments=[b"abc", b""])["data"]
    assert (plain["priority"], plain["deadline_ms"], plain["attachments"]) == (None, None, [3, 0])


def test_errors_answer_with_their_code_and_message(spawn: Any) -> None:
    w: PipeHost = spawn(*BOUNDARY)
    w.read()
    cases = {
        "returned_error": ("unavailable", "returned, not raised", True),
        "custom_error": ("unavailable", "model sdxl-base not found after 3 tries", True),
        "empty_error": ("internal", "internal", False),
    }
    for operation, (code, message, retryable) in cases.items():
        error = w.call(operation)["error"]
        assert (error["code"], error["message"], error["retryable"]) == (code, message, retryable)


def test_metrics_reach_the_host_and_bad_ones_are_internal_errors(spawn: Any) -> None:
    w: PipeHost = spawn(*BOUNDARY)
    w.read()
    answer = w.call("metrics")
    assert answer["data"] == "measured"
    assert answer["metrics"]["gpu_utilization"] == 0.5
    assert answer["metrics"]["memory_usage_mb"] == 12
    assert answer["metrics"]["processing_time_ms"] >= 0
    error = w.call("bad_metrics")["error"]
    assert error["code"] == "internal" and error["message"].startswith("the handler's metrics")
    error = w.call("bad_attachment")["error"]
    assert error["code"] == "internal" and "an attachment must be bytes" in error["message"]
    assert "got int" in error["message"]


def test_a_plain_dispatcher_speaks_the_contract(spawn: Any) -> None:
    w: PipeHost = spawn("boundary_worker.py")
    ready = w.read()["data"]
    assert (ready["worker_type"], ready["runtime"]) == ("raw", "raw-dispatcher/1")
    answer = w.call("reply", {"k": [1]}, attachments=[b"\x00\xff"])
    assert answer["data"] == {"echo": {"k": [1]}} and attachment(answer, 0) == b"\x00\xff"
    errors = {op: w.call(op)["error"] for op in ("returned", "raised", "not_an_answer", "broken")}
    assert (errors["returned"]["code"], errors["returned"]["message"]) == (
        "invalid_request",
        "returned by the dispatcher",
    )
    assert (errors["raised"]["code"], errors["raised"]["message"]) == (
        "cancelled",
        "raised by the dispatcher",
    )
    assert errors["not_an_answer"]["code"] == "internal"
    assert "answered a str, not a Reply or a FerryError" in errors["not_an_answer"]["message"]
    assert errors["broken"]["code"] == "internal"
    assert "RuntimeError: a bug in the dispatcher" in errors["broken"]["message"]
    # None of those ended the loop.
    assert w.call("reply", 1)["data"] == {"echo": 1}
    # A raw operation that is not among those served was a ValueError, before serving; so
    # were handlers without settle and failed, or for what is not served by exact name.
    assert w.call("refused")["data"] == [
        "raw_operations names `img.*`, which is not one of the operations served",
        "handlers needs settle and failed, which finish what a handler returns or raises",
        "handlers names `img.*`, which is not one of the operations served by exact name",
        "handlers names `missing`, which is not one of the operations served by exact name",
    ]
