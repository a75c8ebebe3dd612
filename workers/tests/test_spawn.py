"""The echo worker and the launcher as separate processes, driven over stdio by a Python host."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from conftest import FIXTURES, PipeHost, attachment

ECHO = ("-m", "ferry_worker.echo")


def test_ready_is_the_first_message_and_describes_the_worker(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    ready = w.read()
    assert (ready["type"], ready["event_name"]) == ("event", "ready")
    info = ready["data"]
    assert info["protocol_version"] == 1
    assert info["worker_type"] == "echo"
    assert info["pid"] == w.proc.pid
    assert info["operations"] == ["echo", "sleep", "fail", "print", "async_echo"]
    assert info["runtime"].startswith("ferry-python/")
    assert "json" in info["codecs"]


def test_echo_round_trip_with_attachments(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    w.read()
    blob = bytes(range(256)) * 1000
    answer = w.call("echo", {"prompt": 'héllo "q" \\ 🦀'}, attachments=[blob, b"\n\0"])
    assert answer["type"] == "response" and answer["success"] is True
    assert answer["data"] == {"prompt": 'héllo "q" \\ 🦀'}
    assert attachment(answer, 0) == blob and attachment(answer, 1) == b"\n\0"
    # `echo` is declared `timed=False`: no clock read, no metrics; `async_echo` is timed.
    assert "metrics" not in answer
    timed = w.call("async_echo", "x")
    assert timed["data"] == "x" and timed["metrics"]["processing_time_ms"] >= 0


def test_async_handler_answers_over_the_wire(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    w.read()
    assert w.call("async_echo", [1, 2])["data"] == [1, 2]
    assert w.call("async_echo", {"again": True})["data"] == {"again": True}


def test_progress_events_come_before_the_response(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    w.read()
    events, answer = w.answer(w.request("sleep", {"ms": 20, "steps": 4}))
    assert [e["data"]["progress"] for e in events] == [0.25, 0.5, 0.75, 1.0]
    assert events[0]["data"] == {"progress": 0.25, "stage": "sleep", "message": "step 1/4"}
    assert answer["data"] == {"slept_ms": 20, "steps": 4}


def test_cancel_reaches_the_running_handler(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    w.read()
    rid = w.request("sleep", {"ms": 60_000, "steps": 6_000})
    first = w.read()  # the handler is running once it reports progress
    assert first["type"] == "event" and first["request_id"] == rid
    w.send({"message_id": "c-1", "type": "cancel", "request_id": rid})
    _, answer = w.answer(rid)
    assert answer["type"] == "error" and answer["error"]["code"] == "cancelled"
    assert w.call("echo", "after")["data"] == "after"


def test_health_is_answered_while_a_handler_runs(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    w.read()
    rid = w.request("sleep", {"ms": 60_000, "steps": 6_000})
    w.read()
    health = w.call("health")
    assert health["data"]["status"] == "ok" and health["data"]["pid"] == w.proc.pid
    w.send({"message_id": "c-1", "type": "cancel", "request_id": rid})
    assert w.answer(rid)[1]["error"]["code"] == "cancelled"


def test_deadline_cancels_at_the_worker(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    w.read()
    answer = w.call("sleep", {"ms": 60_000, "steps": 6_000}, deadline_ms=50)
    assert answer["error"]["code"] == "cancelled"


def test_exceptions_become_typed_errors(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    w.read()
    cases = [
        (
            {"raise": "ValueError", "message": "data.prompt: required"},
            "invalid_request",
            "data.prompt: required",
        ),
        ({"raise": "TypeError", "message": "seed"}, "invalid_request", "seed"),
        ({"raise": "RuntimeError", "message": "CUDA OOM"}, "internal", "RuntimeError: CUDA OOM"),
        ({"code": "overloaded", "message": "busy"}, "overloaded", "busy"),
    ]
    for data, code, message in cases:
        error = w.call("fail", data)["error"]
        assert (error["code"], error["message"]) == (code, message)
        assert error["retryable"] == (code == "overloaded")
    # An unexpected exception's traceback is in the log (stderr), not on the channel.
    assert w.call("echo", 1)["data"] == 1
    assert "RuntimeError: CUDA OOM" in w.log() and "Traceback" in w.log()


def test_unknown_operation_is_answered_by_the_runtime(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    w.read()
    assert w.call("no.such.op")["error"]["code"] == "unknown_operation"


def test_prints_go_to_stderr_and_stdout_carries_only_protocol(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    w.read()
    for i in range(5):
        assert w.call("print", {"i": i})["data"] == {"i": i}
    assert w.call("shutdown")["data"] == {"status": "shutting_down"}
    assert w.wait() == 0
    assert w.proc.stdout is not None
    rest = w.proc.stdout.read()
    assert rest == b"", f"unexpected bytes on the channel: {rest[:200]!r}"
    for line in w.lines:
        assert json.loads(line)["version"] == 1
    log = w.log()
    assert log.count("a library printing to stdout must not corrupt the channel") == 5
    assert log.count("nor one writing to fd 1 directly") == 5


def test_worker_exits_when_its_input_closes(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    w.read()
    assert w.proc.stdin is not None
    w.proc.stdin.close()  # what the kernel does when the host dies
    assert w.wait() == 0


def test_worker_exits_when_the_host_dies_mid_request(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    w.read()
    w.request("sleep", {"ms": 60_000, "steps": 6_000})
    w.read()
    assert w.proc.stdin is not None
    w.proc.stdin.close()
    # The running handler sees the host gone at its next cancellation check.
    assert w.wait() == 0


def test_launcher_connects_before_importing_the_module(spawn: Any) -> None:
    w: PipeHost = spawn("-m", "ferry_worker", "noisy_worker")
    ready = w.read()  # not a banner: the import-time prints went to stderr
    assert ready["event_name"] == "ready" and ready["data"]["worker_type"] == "noisy"
    assert w.call("hello", "you")["data"] == {"hello": "you"}
    assert "banner: printed at import time" in w.log()
    assert "banner: written to fd 1 at import time" in w.log()


def test_launcher_takes_a_file_path_and_attribute(spawn: Any) -> None:
    w: PipeHost = spawn("-m", "ferry_worker", str(FIXTURES / "noisy_worker.py") + ":other")
    assert w.read()["data"]["worker_type"] == "other"
    assert w.call("ping")["data"] == "pong"


def test_system_exit_in_a_handler_answers_then_ends_the_worker(spawn: Any) -> None:
    w: PipeHost = spawn("-m", "ferry_worker", "noisy_worker:other")
    w.read()
    error = w.call("exit_now", 3)["error"]
    assert error["code"] == "internal" and "exiting" in error["message"]
    assert w.wait() == 3


def test_sigint_ends_a_waiting_worker(spawn: Any) -> None:
    w: PipeHost = spawn(*ECHO)
    w.read()
    os.kill(w.proc.pid, signal.SIGINT)
    assert w.wait() == -signal.SIGINT


def test_launcher_without_arguments_prints_usage(spawn: Any) -> None:
    w: PipeHost = spawn("-m", "ferry_worker")
    assert w.wait() == 2
    assert "usage: python -m ferry_worker" in w.log()


THREADS = ("-m", "ferry_worker", "threads_worker")


def test_idle_worker_releases_the_gil_for_other_threads(spawn: Any) -> None:
    w: PipeHost = spawn(*THREADS)
    w.read()
    before = w.call("ticks_now")["data"]
    # The worker now waits in the Rust runtime's recv; its Python thread keeps ticking.
    deadline = time.monotonic() + 30
    while (after := w.call("ticks_now")["data"]) < before + 20:
        assert time.monotonic() < deadline, "background thread made no progress"
        time.sleep(0.01)
    assert after >= before + 20


def test_a_helper_thread_can_report_progress(spawn: Any) -> None:
    w: PipeHost = spawn(*THREADS)
    w.read()
    events, answer = w.answer(w.request("progress_from_thread", 3))
    assert [e["data"]["message"] for e in events] == ["1/3", "2/3", "3/3"]
    assert answer["data"] == "done"


def test_context_used_after_its_handler_returned_is_an_error_not_a_crash(spawn: Any) -> None:
    w: PipeHost = spawn(*THREADS)
    w.read()
    rid = w.request("keep_context")
    assert w.answer(rid)[1]["data"] == rid
    answer = w.call("use_kept_context")["data"]
    assert answer["cancelled"] is True
    assert "used after its handler returned" in answer["error"]


def test_python_logging_goes_to_the_hosts_log(spawn: Any) -> None:
    w: PipeHost = spawn(*THREADS)
    w.read()
    assert w.call("log", "hello")["type"] == "response"
    assert w.call("shutdown")["type"] == "response"
    assert w.wait() == 0
    assert "WARNING threads_worker: handler says hello" in w.log()


def test_deadline_is_visible_to_the_handler(spawn: Any) -> None:
    w: PipeHost = spawn(*THREADS)
    w.read()
    data = w.call("deadline", deadline_ms=5_000)["data"]
    assert 0 < data["time_left"] <= 5.0
    assert 0 < data["until_deadline"] <= 5.0
    assert w.call("deadline")["data"] == {"time_left": None, "until_deadline": None}
