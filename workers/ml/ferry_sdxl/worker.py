"""The SDXL worker (worker type ``sdxl``): the seven instructors behind the router.

Start it as ``python -m ferry_worker ferry_sdxl.worker:worker`` or, as the old design
did, ``python -m ferry_sdxl.main --worker pipeline_manager --log-level INFO``.
"""

from __future__ import annotations

from ferry_worker import Context, Reply, Request, Worker

from . import images
from .device import DeviceInstructor
from .inference import InferenceInstructor, max_estimate_s
from .instructors import (
    CommunicationInstructor,
    ConditioningInstructor,
    PostprocessingInstructor,
    SchedulerInstructor,
)
from .models import ModelInstructor, ModelManager
from .paths import Roots
from .router import Router

WORKER_TYPE = "sdxl"


def check_settings() -> None:
    """Reads the settings the environment gives (roots, limits), so that a bad value stops
    the worker at its start (``ValueError`` naming the variable), not each request."""
    Roots.from_env()
    images.max_pixels()
    max_estimate_s()


def build(worker_type: str = WORKER_TYPE) -> tuple[Worker, Router]:
    """A fresh worker and its router (each instructor with its own state)."""
    check_settings()
    device = DeviceInstructor()
    models = ModelManager(device.device)
    inference = InferenceInstructor(models)
    router = Router(
        [
            device,
            CommunicationInstructor(),
            ModelInstructor(models),
            ConditioningInstructor(),
            inference,
            SchedulerInstructor(),
            PostprocessingInstructor(models),
        ]
    )
    new = router.register(Worker(worker_type))

    def legacy_inference(request: Request, ctx: Context) -> Reply:
        """``inference``: the old design's name for ``inference.generate``."""
        return inference.generate(request, ctx)

    new.add_operation("inference", legacy_inference)
    return new, router


worker, router = build()
