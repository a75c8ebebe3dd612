"""The Python API in this process, with no host: declaring, dispatching, answering."""

from __future__ import annotations

import asyncio
import copy
import math
import pickle
from typing import Any

import ferry_worker
import pytest
from ferry_worker import (
    Cancelled,
    Context,
    FerryError,
    InvalidRequest,
    LocalContext,
    Reply,
    Request,
    Worker,
    WorkerRequest,
    WorkerResponse,
    _native,
    error_answer,
    error_code,
)
from ferry_worker.echo import worker as echo_worker


def make_worker() -> Worker:
    worker = Worker("test")

    @worker.operation()
    def echo(request: Request, ctx: Context) -> Any:
        return request.data

    @worker.operation("device.*")
    def device(request: Request, ctx: Context) -> Any:
        return {"prefix": "device.", "operation": request.operation}

    @worker.operation("device.gpu.*")
    def gpu(request: Request, ctx: Context) -> Any:
        return {"prefix": "device.gpu.", "operation": request.operation}

    return worker


def test_operations_list_exact_names_then_prefixes() -> None:
    assert make_worker().operations == ["echo", "device.gpu.*", "device.*"]


def test_plain_return_value_is_the_response_data() -> None:
    reply = make_worker().handle("echo", {"prompt": "a fox", "n": [1, 2.5, None, True]})
    assert reply == Reply({"prompt": "a fox", "n": [1, 2.5, None, True]}, [], None)


def test_longest_prefix_wins_and_exact_names_win_over_prefixes() -> None:
    worker = make_worker()
    assert worker.handle("device.gpu.list").data["prefix"] == "device.gpu."
    assert worker.handle("device.cpu").data["prefix"] == "device."
    assert worker.handler_for("echo") is not None
    assert worker.handler_for("model.load") is None


def test_unknown_operation_is_a_typed_error() -> None:
    with pytest.raises(FerryError) as info:
        make_worker().handle("model.load")
    assert info.value.code == "unknown_operation"


def test_untimed_operations_are_listed_and_a_later_registration_decides() -> None:
    worker = Worker("t")

    @worker.operation(timed=False)
    def quick(request: Request, ctx: Context) -> Any:
        return None

    @worker.raw_operation("look.*", timed=False)
    def look(request: Any, ctx: Context) -> Reply:
        return Reply(None)

    worker.add_operation("slow", lambda r, c: None)
    assert worker.untimed_operations == ["look.*", "quick"]
    worker.add_operation("quick", lambda r, c: None)  # timed again
    assert worker.untimed_operations == ["look.*"]
    assert echo_worker.untimed_operations == ["echo", "print"]


def test_builtin_operation_names_are_refused() -> None:
    with pytest.raises(ValueError, match="built-in"):
        Worker("t").add_operation("health", lambda r, c: None)


def test_reply_carries_attachments_and_metrics() -> None:
    worker = Worker("t")

    @worker.operation()
    def image(request: Request, ctx: Context) -> Reply:
        return Reply(
            {"format": "png"},
            [b"\x89PNG", bytearray(b"ab"), memoryview(b"cd")],
            {"gpu_utilization": 0.5},
        )

    reply = worker.handle("image")
    assert reply.attachments == [b"\x89PNG", b"ab", b"cd"]
    assert reply.metrics == {"gpu_utilization": 0.5}


def test_attachments_reach_the_handler_as_bytes() -> None:
    reply = echo_worker.handle("echo", {"k": 1}, [b"\x00\n\xff", bytearray(b"x")])
    assert reply.attachments == [b"\x00\n\xff", b"x"]


@pytest.mark.parametrize(
    ("exception", "code", "message"),
    [
        (ValueError("data.prompt: required"), "invalid_request", "data.prompt: required"),
        (TypeError("expected str"), "invalid_request", "expected str"),
        (InvalidRequest("bad seed"), "invalid_request", "bad seed"),
        (FerryError("busy", "overloaded"), "overloaded", "busy"),
        # An untyped caller's unknown code is read as `internal`, as the host reads one.
        (FerryError("odd", "no_such_code"), "internal", "odd"),  # type: ignore[arg-type]
        (Cancelled("cancelled"), "cancelled", "cancelled"),
        (RuntimeError("boom"), "internal", "RuntimeError: boom"),
        (KeyError("prompt"), "internal", "KeyError: 'prompt'"),
        (ZeroDivisionError(), "internal", "ZeroDivisionError"),
    ],
)
def test_exceptions_map_to_error_codes(exception: Exception, code: str, message: str) -> None:
    assert error_answer(exception) == (code, message)
    worker = Worker("t")

    @worker.operation()
    def boom(request: Request, ctx: Context) -> None:
        raise exception

    with pytest.raises(FerryError) as info:
        worker.handle("boom")
    assert (info.value.code, info.value.message) == (code, message)


def test_async_handlers_are_awaited() -> None:
    worker = Worker("t")

    @worker.operation()
    async def slow_double(request: Request, ctx: Context) -> Any:
        await asyncio.sleep(0.001)
        ctx.progress(1.0, "done")
        return request.data * 2

    ctx = LocalContext()
    assert worker.handle("slow_double", 21, ctx=ctx).data == 42
    assert worker.handle("slow_double", 2).data == 4  # the loop is reused
    assert ctx.events == [("progress", {"progress": 1.0, "stage": "done", "message": ""})]
    worker.close()


def test_async_handler_exception_and_cancellation_map_to_codes() -> None:
    worker = Worker("t")

    @worker.operation()
    async def bad(request: Request, ctx: Context) -> None:
        raise ValueError("nope")

    @worker.operation()
    async def gone(request: Request, ctx: Context) -> None:
        raise asyncio.CancelledError()

    with pytest.raises(FerryError) as info:
        worker.handle("bad")
    assert info.value.code == "invalid_request"
    with pytest.raises(FerryError) as info:
        worker.handle("gone")
    assert info.value.code == "cancelled"


def test_local_context_cancel_stops_a_checking_handler() -> None:
    ctx = LocalContext()
    ctx.cancel()
    with pytest.raises(FerryError) as info:
        echo_worker.handle("sleep", {"ms": 1000, "steps": 100}, ctx=ctx)
    assert info.value.code == "cancelled"


def test_deadline_counts_down_and_cancels() -> None:
    ctx = LocalContext(deadline_ms=0)
    assert ctx.time_left == 0.0
    assert ctx.cancelled
    with pytest.raises(Cancelled):
        ctx.check_cancelled()
    assert LocalContext().deadline is None and LocalContext().time_left is None


def test_sleep_reports_progress_in_order() -> None:
    ctx = LocalContext()
    reply = echo_worker.handle("sleep", {"ms": 4, "steps": 4}, ctx=ctx)
    assert reply.data == {"slept_ms": 4, "steps": 4}
    assert [data["progress"] for _, data in ctx.events] == [0.25, 0.5, 0.75, 1.0]


def test_echo_validates_its_input() -> None:
    with pytest.raises(FerryError) as info:
        echo_worker.handle("sleep", {"ms": -1})
    assert info.value.code == "invalid_request"
    assert "data.ms" in info.value.message


def test_non_json_answer_is_an_internal_error() -> None:
    worker = Worker("t")

    @worker.operation()
    def odd(request: Request, ctx: Context) -> Any:
        return {"when": object()}

    with pytest.raises(FerryError) as info:
        worker.handle("odd")
    assert info.value.code == "internal"
    assert "not JSON serializable" in info.value.message


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -(2**63), 2**64 - 1, 1.5, "héllo 🦀", [], {}, {"a": [1, {"b": None}]}],
)
def test_json_values_round_trip_through_the_runtime(value: Any) -> None:
    assert _native.to_json_value(value) == value


def test_tuples_become_lists() -> None:
    assert _native.to_json_value((1, (2, 3))) == [1, [2, 3]]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (math.nan, ValueError),
        (math.inf, ValueError),
        (2**64, ValueError),
        ({1: "int key"}, TypeError),
        (b"bytes", TypeError),
        ({1, 2}, TypeError),
    ],
)
def test_values_json_cannot_carry_are_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        _native.to_json_value(value)


def test_self_referencing_value_is_refused_not_a_crash() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nested deeper"):
        _native.to_json_value(loop)


def test_legacy_handlers_port_unchanged() -> None:
    worker = Worker("legacy")

    @worker.legacy_operation("*")
    def handle(request: WorkerRequest) -> WorkerResponse:
        if request.type == "broken":
            return WorkerResponse.fail(request.request_id, "model not loaded")
        if request.type == "typed":
            return WorkerResponse.fail(
                request.request_id, {"code": "invalid_request", "message": "no prompt"}
            )
        return WorkerResponse.ok(request.request_id, {"echo": request.data, "op": request.type})

    assert worker.operations == ["*"]
    assert worker.handle("inference", {"p": 1}).data == {"echo": {"p": 1}, "op": "inference"}
    with pytest.raises(FerryError) as info:
        worker.handle("broken")
    assert (info.value.code, info.value.message) == ("internal", "model not loaded")
    with pytest.raises(FerryError) as info:
        worker.handle("typed")
    assert (info.value.code, info.value.message) == ("invalid_request", "no prompt")


def test_legacy_dataclasses_read_and_write_the_old_lines() -> None:
    line = {"type": "inference", "request_id": "x", "data": {"prompt": "a"}}
    request = WorkerRequest.from_dict(line)
    assert request.operation == "inference" and request.to_dict() == line
    answer = {"success": True, "request_id": "x", "data": {"ok": 1}}
    assert WorkerResponse.from_dict(answer).to_dict() == answer
    failed = WorkerResponse.fail("x", "boom").to_dict()
    assert failed == {"success": False, "request_id": "x", "error": "boom"}


def test_local_context_event_data_must_be_json() -> None:
    ctx = LocalContext()
    ctx.event("preview", {"step": 1})
    assert ctx.events == [("preview", {"step": 1})]
    with pytest.raises(TypeError):
        ctx.event("preview", object())


def test_native_context_satisfies_the_context_protocol() -> None:
    # Structural check of the stub-declared members against the Protocol.
    members = {
        "request_id",
        "deadline",
        "time_left",
        "cancelled",
        "check_cancelled",
        "progress",
        "event",
    }
    assert members <= set(dir(_native.NativeContext))
    assert isinstance(LocalContext(), Context)


def test_package_reports_versions_and_transports() -> None:
    assert ferry_worker.__version__ == _native.VERSION
    assert ferry_worker.PROTOCOL_VERSION == 1
    assert "stdio" in ferry_worker.TRANSPORTS
    assert ferry_worker.RUNTIME.startswith("ferry-python/")


# -- the native classes of the boundary -------------------------------------------------------


def test_ferry_error_keeps_its_code_through_pickling_and_copying() -> None:
    error = FerryError("busy", "overloaded")
    assert (error.code, error.message, error.retryable, str(error)) == (
        "overloaded",
        "busy",
        True,
        "busy",
    )
    assert repr(error) == "FerryError('busy', code='overloaded')"
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(clone) is FerryError
        assert (clone.code, clone.message) == ("overloaded", "busy")
    invalid = pickle.loads(pickle.dumps(InvalidRequest("bad seed")))
    assert isinstance(invalid, InvalidRequest) and isinstance(invalid, ValueError)
    assert (invalid.code, invalid.retryable) == ("invalid_request", False)


def test_ferry_error_subclasses_set_a_default_code_and_their_own_init() -> None:
    class ModelMissing(FerryError):
        default_code = "unavailable"

        def __init__(self, name: str) -> None:
            super().__init__(f"{name} is not loaded")
            self.name = name

    error = ModelMissing("base")
    assert (error.code, error.message, error.name, error.args) == (
        "unavailable",
        "base is not loaded",
        "base",
        ("base is not loaded",),
    )
    assert ModelMissing.__mro__[1] is FerryError
    assert error_code("unavailable") == "unavailable"
    assert error_code("quota_exceeded") == "internal"


def test_request_defaults_and_validation() -> None:
    request = Request("inference")
    assert (request.operation, request.data, list(request.attachments), request.request_id) == (
        "inference",
        None,
        [],
        "",
    )
    assert (request.deadline_ms, request.priority, request.context) == (None, None, None)
    assert repr(Request("x", attachments=[b"a"], priority="low")) == (
        "Request('x', request_id='', attachments=<1 attachment>, deadline_ms=None, priority='low')"
    )
    with pytest.raises(ValueError, match="priority"):
        Request("x", priority="urgent")  # type: ignore[arg-type]


def test_reply_keeps_attachments_as_a_list_and_refuses_a_lone_buffer() -> None:
    chunks = [b"a"]
    assert Reply(None, chunks).attachments is chunks  # no copy of the handler's list
    assert Reply(None, (b"a", bytearray(b"b"))).attachments == [b"a", bytearray(b"b")]
    assert Reply().attachments == [] and Reply().data is None
    assert Reply(1) == Reply(1, [], None) and Reply(1) != Reply(2)
    # mypy refuses these too (bytes is no sequence of buffers); the checks are for untyped code.
    with pytest.raises(TypeError, match="not a single bytes"):
        Reply(None, b"png bytes")  # type: ignore[arg-type]


def test_wire_answer_converts_as_the_serve_loop_does() -> None:
    reply = _native.wire_answer(
        Reply({"t": (1, 2)}, [memoryview(b"ab")], {"gpu_utilization": 1, "unknown": 3})
    )
    assert reply == Reply({"t": [1, 2]}, [b"ab"], {"gpu_utilization": 1.0})
    with pytest.raises(FerryError, match="the handler's metrics") as info:
        _native.wire_answer(Reply(None, [], {"gpu_utilization": "high"}))  # type: ignore[dict-item]
    assert info.value.code == "internal"
    error = Cancelled("cancelled")
    with pytest.raises(Cancelled) as raised:
        _native.wire_answer(error)
    assert raised.value is error


def test_a_returned_ferry_error_answers_like_a_raised_one() -> None:
    worker = Worker("t")

    @worker.operation()
    def busy(request: Request, ctx: Context) -> Any:
        return FerryError("try later", "overloaded")

    with pytest.raises(FerryError) as info:
        worker.handle("busy")
    assert (info.value.code, info.value.message) == ("overloaded", "try later")


def test_handle_passes_the_context_in_the_request() -> None:
    worker = Worker("t")
    seen: list[tuple[Any, Context]] = []

    @worker.operation()
    def look(request: Request, ctx: Context) -> None:
        seen.append((request.context, ctx))

    ctx = LocalContext("r-9")
    worker.handle("look", ctx=ctx)
    assert seen == [(ctx, ctx)]
