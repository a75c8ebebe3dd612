"""The small instructors: communication, scheduler, conditioning, postprocessing."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from ferry_worker import PROTOCOL_VERSION, TRANSPORTS, Context, InvalidRequest, Reply, Request

from . import controlnet, images, schedulers
from . import upscale as upscaling
from .models import ModelManager, resolve_upscaler
from .paths import Roots, refuse
from .request import CONTROLNET_TYPES


class CommunicationInstructor:
    """``communication.ping``, ``communication.info``: the link as the worker sees it."""

    name = "communication"

    def __init__(self) -> None:
        self.pings = 0

    def operations(self) -> dict[str, Any]:
        return {"communication.ping": self.ping, "communication.info": self.info}

    def ping(self, request: Request, ctx: Context) -> dict[str, Any]:
        data = request.data
        self.pings += 1
        return {"pong": True, "echo": data, "worker_time": time.time()}

    def info(self, request: Request, ctx: Context) -> dict[str, Any]:
        return {
            "protocol_version": PROTOCOL_VERSION,
            "transports": list(TRANSPORTS),
            "transport": os.environ.get("FERRY_TRANSPORT", "stdio"),
            "codec": os.environ.get("FERRY_CODEC", "json"),
            "pid": os.getpid(),
        }

    def status(self) -> dict[str, Any]:
        return {"pings": self.pings}

    def cleanup(self) -> None:
        pass


class SchedulerInstructor:
    """``scheduler.list``: the scheduler names requests may use."""

    name = "scheduler"

    def operations(self) -> dict[str, Any]:
        return {"scheduler.list": self.list}

    def list(self, request: Request, ctx: Context) -> dict[str, Any]:
        return {"schedulers": schedulers.describe(), "default": "Euler"}

    def status(self) -> dict[str, Any]:
        return {"available": len(schedulers.SCHEDULERS)}

    def cleanup(self) -> None:
        pass


class ConditioningInstructor:
    """``conditioning.controlnet_types``: the ControlNet types, what each takes as its control
    image, which maps the worker makes itself (canny) and which must come ready (depth, pose),
    and the ControlNet folders found under ``$FERRY_ML_MODELS``."""

    name = "conditioning"

    def operations(self) -> dict[str, Any]:
        return {"conditioning.controlnet_types": self.controlnet_types}

    def controlnet_types(self, request: Request, ctx: Context) -> dict[str, Any]:
        ok = controlnet.available()
        return {
            "available": ok,
            "types": controlnet.describe_types(),
            "models": controlnet.find_models(),
            "pipeline": "StableDiffusionXLControlNetPipeline" if ok else None,
            "refiner": "the ControlNet steers the base model's steps; the refiner runs without "
            "it (an SDXL ControlNet fits the base UNet, not the refiner's)",
            "request_field": "conditioning.controlnet",
        }

    def status(self) -> dict[str, Any]:
        return {"controlnet": controlnet.available(), "types": list(CONTROLNET_TYPES)}

    def cleanup(self) -> None:
        pass


def _source(request_attachments: Sequence[bytes], data: Any) -> upscaling.Source:
    if request_attachments:
        return upscaling.Source(images.decode(request_attachments[0]), "attachments[0]")
    path = data.get("path") if isinstance(data, dict) else None
    if path is not None and not isinstance(path, str):
        raise InvalidRequest("path: expected a string (an image file under FERRY_ML_INPUTS)")
    if isinstance(path, str):
        blob, _ = Roots.from_env().read_input(path, "path")
        try:
            return upscaling.Source(images.decode(blob, "path"), "path")
        except InvalidRequest as exc:  # not an image: answered as a missing file is
            raise refuse("path", path, exc.message) from None
    raise InvalidRequest("attachments[0]: an image is required (or data.path)")


def _image_in(request_attachments: Sequence[bytes], data: dict[str, Any]) -> Any:
    return _source(request_attachments, data).image


class PostprocessingInstructor:
    """``postprocessing.upscale``, ``postprocessing.upscalers`` and ``postprocessing.convert``.

    The upscale runs a learned upscaler (diffusers' x4 upscaler or x2 latent upscaler, from
    the request's ``model`` or ``$FERRY_ML_UPSCALER``, cached by the model manager) when one is
    given, else PIL's Lanczos filter (:mod:`.upscale`)."""

    name = "postprocessing"

    def __init__(self, models: ModelManager) -> None:
        self.models = models
        self.processed = 0
        self.by_method: dict[str, int] = {}
        self.running: str | None = None

    def operations(self) -> dict[str, Any]:
        return {
            "postprocessing.upscale": self.upscale,
            "postprocessing.upscalers": self.upscalers,
            "postprocessing.convert": self.convert,
        }

    def upscale(self, request: Request, ctx: Context) -> Reply:
        req = upscaling.parse(request.data)
        source = _source(request.attachments, request.data)
        if req.method == upscaling.LANCZOS:
            factor = req.factor if req.factor is not None else 2.0
            out = upscaling.lanczos(source.image, factor)
            described: dict[str, Any] = {}
        else:
            self.running = ctx.request_id
            try:
                out, described = self._learned(req, source, ctx)
            finally:
                self.running = None
        blob = images.encode(out, req.format)
        method = str(described.pop("method", upscaling.LANCZOS))
        self.processed += 1
        self.by_method[method] = self.by_method.get(method, 0) + 1
        data = {"width": out.width, "height": out.height, "format": req.format, "method": method}
        return Reply({**data, **described}, [blob])

    def _learned(
        self, req: upscaling.UpscaleRequest, source: upscaling.Source, ctx: Context
    ) -> tuple[Any, dict[str, Any]]:
        assert req.model is not None
        started = time.perf_counter()
        try:
            folder, kind = resolve_upscaler(req.model, req.model_field)
        except InvalidRequest as exc:
            if req.model_field != upscaling.DEFAULT_ENV:
                raise
            raise InvalidRequest(
                f"{exc.message} ({upscaling.DEFAULT_ENV} names the worker's default upscaler; "
                "send method 'lanczos' to resize without it)"
            ) from exc
        learned = upscaling.LEARNED[kind]
        upscaling.check_request(req, learned, source)
        entry = self.models.upscaler(str(folder), req.model_field)
        loaded = time.perf_counter()

        def on_step(done: int, total: int) -> None:
            ctx.progress(done / total, "upscale", f"step {done}/{total}")

        out, described = upscaling.run_learned(entry, learned, req, source, ctx, on_step)
        return out, {
            "method": learned.method,
            **described,
            "timings": upscaling.timings(started, loaded),
        }

    def upscalers(self, request: Request, ctx: Context) -> dict[str, Any]:
        """The learned upscalers found under ``$FERRY_ML_MODELS``, and the default."""
        return {
            "methods": [upscaling.LANCZOS, *(k.method for k in upscaling.LEARNED.values())],
            "default": upscaling.describe_default(),
            "models": upscaling.find_models(),
            "request_field": "model",
        }

    def convert(self, request: Request, ctx: Context) -> Reply:
        data = request.data
        data = data if isinstance(data, dict) else {}
        image = _image_in(request.attachments, data)
        fmt = data.get("format")
        if not isinstance(fmt, str):
            raise InvalidRequest("format: required (png, jpeg or webp)")
        quality = data.get("quality", 95)
        if not isinstance(quality, int) or not 1 <= quality <= 100:
            raise InvalidRequest("quality: expected an integer from 1 to 100")
        blob = images.encode(image, fmt, quality)
        self.processed += 1
        return Reply({"width": image.width, "height": image.height, "format": fmt}, [blob])

    def status(self) -> dict[str, Any]:
        return {"processed": self.processed, "by_method": self.by_method, "running": self.running}

    def cleanup(self) -> None:
        pass
