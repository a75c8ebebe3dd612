"""The small instructors: communication, scheduler, conditioning, postprocessing."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from .. import _native
from ..context import Context
from ..errors import InvalidRequest
from ..messages import Reply, Request
from . import controlnet, images, schedulers
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
            "protocol_version": _native.PROTOCOL_VERSION,
            "transports": list(_native.TRANSPORTS),
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


def _image_in(request_attachments: Sequence[bytes], data: dict[str, Any]) -> Any:
    if request_attachments:
        return images.decode(request_attachments[0])
    path = data.get("path")
    if isinstance(path, str):
        try:
            return images.decode(Path(path).read_bytes(), "path")
        except OSError as exc:
            raise InvalidRequest(f"path: cannot read {path!r} ({exc})") from exc
    raise InvalidRequest("attachments[0]: an image is required (or data.path)")


class PostprocessingInstructor:
    """``postprocessing.upscale`` (Lanczos resampling) and ``postprocessing.convert``.

    The upscale is PIL's Lanczos filter, not a learned upscaler: diffusers' x4 upscaler needs
    weights that are not available here, and is not wired in."""

    name = "postprocessing"

    def __init__(self) -> None:
        self.processed = 0

    def operations(self) -> dict[str, Any]:
        return {"postprocessing.upscale": self.upscale, "postprocessing.convert": self.convert}

    def upscale(self, request: Request, ctx: Context) -> Reply:
        data = request.data
        data = data if isinstance(data, dict) else {}
        image = _image_in(request.attachments, data)
        factor = data.get("factor", 2)
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 1 <= factor <= 8:
            raise InvalidRequest("factor: expected a number from 1 to 8")
        size = (round(image.width * factor), round(image.height * factor))
        out = image.resize(size, Image.Resampling.LANCZOS)
        fmt = str(data.get("format", "png"))
        blob = images.encode(out, fmt)
        self.processed += 1
        return Reply(
            {"width": size[0], "height": size[1], "format": fmt, "method": "lanczos"}, [blob]
        )

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
        return {"processed": self.processed}

    def cleanup(self) -> None:
        pass
