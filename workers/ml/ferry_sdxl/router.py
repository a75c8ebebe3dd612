"""The router: requests go by operation prefix (``device.*``, ``model.*``, ...) to one of the
seven instructors; ``status`` aggregates their state and ``cleanup`` releases their resources.

The old system's operation names are aliases (:data:`ALIASES`): ``inference_request`` and
``generate_sdxl_enhanced`` generate, ``load_model``, ``model_load`` and
``model_load_request`` load (their data in the old shapes too, :func:`.request.load_data`),
``capability_query`` answers ``inference.capabilities``, ``status_request`` ``status`` and
``health_check`` a health answer with the instructors' status."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ferry_worker import Context, FerryError, Request, Worker

from .request import load_data

log = logging.getLogger("ferry_sdxl")

Operation = Callable[[Request, Context], Any]

PREFIXES = (
    "device",
    "communication",
    "model",
    "conditioning",
    "inference",
    "scheduler",
    "postprocessing",
)


# The old system's operation names -> the operation each stands for ("status" and "health" are
# the router's own answers).
ALIASES: dict[str, str] = {
    "inference_request": "inference.generate",
    "generate_sdxl_enhanced": "inference.generate",
    "load_model": "model.load",
    "model_load": "model.load",
    "model_load_request": "model.load",
    "capability_query": "inference.capabilities",
    "status_request": "status",
    "health_check": "health",
}


class Instructor(Protocol):
    """One area of the worker: its operations (all named ``<name>.<verb>``) and its state."""

    name: str

    def operations(self) -> dict[str, Operation]: ...

    def status(self) -> dict[str, Any]: ...

    def cleanup(self) -> None: ...


class Router:
    """Dispatches ``<prefix>.<verb>`` to the instructor registered for ``<prefix>``."""

    def __init__(self, instructors: Sequence[Instructor]) -> None:
        self.instructors: dict[str, Instructor] = {}
        self.table: dict[str, Operation] = {}
        for instructor in instructors:
            if instructor.name not in PREFIXES:
                raise ValueError(f"no operation prefix for instructor {instructor.name!r}")
            self.instructors[instructor.name] = instructor
            for name, op in instructor.operations().items():
                if not name.startswith(instructor.name + "."):
                    raise ValueError(f"{instructor.name}: operation {name!r} outside its prefix")
                self.table[name] = op

    def route(self, request: Request, ctx: Context) -> Any:
        prefix = request.operation.split(".", 1)[0]
        instructor = self.instructors.get(prefix)
        if instructor is None:
            raise FerryError(f"no instructor serves `{prefix}.*`", "unknown_operation")
        op = self.table.get(request.operation)
        if op is None:
            known = sorted(n for n in self.table if n.startswith(prefix + "."))
            raise FerryError(
                f"operation `{request.operation}` is not served (the {prefix} instructor "
                f"serves {', '.join(known)})",
                "unknown_operation",
            )
        return op(request, ctx)

    def status(self, request: Request, ctx: Context) -> dict[str, Any]:
        return {name: i.status() for name, i in self.instructors.items()}

    def cleanup(self, request: Request, ctx: Context) -> dict[str, Any]:
        done, failed = [], {}
        for name, instructor in self.instructors.items():
            try:
                instructor.cleanup()
                done.append(name)
            except Exception as exc:  # one failing instructor must not stop the others
                log.exception("cleanup of %s failed", name)
                failed[name] = f"{type(exc).__name__}: {exc}"
        return {"cleaned": done, "failed": failed}

    def health(self, request: Request, ctx: Context) -> dict[str, Any]:
        """``health_check`` (the old name): healthy, with every instructor's status."""
        return {"status": "healthy", "instructors": self.status(request, ctx)}

    def alias(self, name: str) -> Operation:
        """The operation an old name (:data:`ALIASES`) stands for."""
        target = ALIASES[name]
        if target == "status":
            return self.status
        if target == "health":
            return self.health
        op = self.table.get(target)
        if op is None:
            raise ValueError(f"alias {name!r}: no instructor serves {target!r}")
        if target == "model.load":
            load = op

            def load_old(request: Request, ctx: Context) -> Any:
                converted = Request(
                    "model.load",
                    load_data(request.data),
                    request.attachments,
                    request.request_id,
                    request.deadline_ms,
                    request.priority,
                    request.context,
                )
                return load(converted, ctx)

            return load_old
        return op

    def register(self, worker: Worker) -> Worker:
        """Serves every prefix, ``status``, ``cleanup`` and the old names on ``worker``."""
        for prefix in self.instructors:
            worker.add_operation(prefix + ".*", self.route)
        worker.add_operation("status", self.status)
        worker.add_operation("cleanup", self.cleanup)
        for name, target in ALIASES.items():
            if target in ("status", "health") or target in self.table:
                worker.add_operation(name, self.alias(name))
        return worker
