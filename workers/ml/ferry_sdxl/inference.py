"""The inference instructor: ``inference.generate`` (alias ``inference``), ``inference.validate``,
``inference.estimate`` and ``inference.capabilities``.

A generation runs the base pipeline (and the refiner from ``refiner_fraction`` of the way
through, on the base's latents), reports its stages as ``progress`` events (``initialization``
once the request is taken, ``loading`` before each pipeline loaded from disk, ``inference``
after every denoising step, ``postprocessing`` before the images are encoded), sends
``status_change`` events (``busy``, ``loading``, ``idle``, with the device's telemetry), answers
``metrics`` (``device``, ``memory_usage_mb``, ``gpu_utilization`` where known,
``inference_time_s``), and
checks for cancellation at every step: a cancel, a passed deadline or a vanished host stops
it at the next step and answers ``cancelled``. Images come back as attachments (PNG by
default), and also as files when the request names ``output.save_dir`` (a folder under
``$FERRY_ML_OUTPUTS``, :mod:`.paths`; refused without it).

Before anything is loaded, a request the worker's own estimate (``inference.estimate``) puts
beyond the time it may take is refused (``invalid_request`` naming both): beyond the
request's deadline, or beyond ``$FERRY_ML_MAX_ESTIMATE_S`` (3600 s by default; 0: no
ceiling). There is an estimate once a generation was measured.

Each image's seed is the request's plus its index, modulo 2**64 (torch's seed range).

With ``conditioning.controlnet``, the base pipeline is the model manager's
``StableDiffusionXLControlNetPipeline`` for that base and ControlNet (the same modules plus
the ControlNet), given the control image (:mod:`.controlnet`); the refiner, when asked for,
takes over from it as from the plain base, without the ControlNet.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import torch
from ferry_worker import Cancelled, Context, InvalidRequest, Reply, Request

from . import controlnet, images, schedulers
from . import device as devices
from . import request as genreq
from .models import ModelManager, resolve_controlnet
from .paths import Roots

log = logging.getLogger("ferry_sdxl")

# Rough activation memory of one image in a batch, per output pixel, in bytes at fp32
# (UNet activations at 1/64 of the pixels with ~2.5k channels-worth of buffers, plus the VAE
# decode at full size). Used only to size batches and for estimates.
BYTES_PER_PIXEL = 6_000

# A ControlNet is a copy of the UNet's down and middle blocks run beside it at every step: its
# activations add about half of the UNet's (as rough as BYTES_PER_PIXEL).
CONTROLNET_FACTOR = 1.5


# Seeds are 64-bit: each image's seed wraps around.
SEED_MODULUS = 2**64

MAX_ESTIMATE_ENV = "FERRY_ML_MAX_ESTIMATE_S"
DEFAULT_MAX_ESTIMATE_S = 3600.0


def max_estimate_s() -> float | None:
    """The longest a generation may be estimated at: ``$FERRY_ML_MAX_ESTIMATE_S`` (seconds,
    default 3600); ``None`` for 0 (no ceiling)."""
    raw = os.environ.get(MAX_ESTIMATE_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_ESTIMATE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{MAX_ESTIMATE_ENV}: expected seconds (0: no ceiling), not {raw!r}")
    return value or None


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` of a request seeded ``seed``: wraps modulo 2**64."""
    return (seed + index) % SEED_MODULUS


def per_image_bytes(width: int, height: int, dtype_bytes: int, controlnet: bool = False) -> int:
    one = width * height * BYTES_PER_PIXEL * dtype_bytes // 4
    return int(one * CONTROLNET_FACTOR) if controlnet else one


def batch_size(req: genreq.GenerationRequest, info: devices.DeviceInfo) -> int:
    """How many images to run at once: as many as half the free memory holds, at least 1."""
    dtype_bytes = 4 if info.kind == "cpu" else 2
    one = per_image_bytes(req.width, req.height, dtype_bytes, req.controlnet is not None)
    free = info.free_memory
    if free is None:
        return 1
    return max(1, min(req.num_images, (free // 2) // max(one, 1)))


class InferenceInstructor:
    """Generation on the model manager's pipelines."""

    name = "inference"

    def __init__(self, models: ModelManager) -> None:
        self.models = models
        self.generated = 0
        self.running: str | None = None
        # Measured seconds per step per megapixel, for estimates (None until measured).
        self.seconds_per_step_mp: float | None = None

    def operations(self) -> dict[str, Any]:
        return {
            "inference.generate": self.generate,
            "inference.validate": self.validate,
            "inference.estimate": self.estimate,
            "inference.capabilities": self.capabilities,
        }

    # -- validate / estimate / capabilities ---------------------------------------------

    def validate(self, request: Request, ctx: Context) -> dict[str, Any]:
        """Checks a request against the schema without running it; answers every error."""
        data = request.data
        if not isinstance(data, dict):
            return {
                "valid": False,
                "errors": [{"field": "(request)", "message": "expected an object"}],
            }
        try:
            nested = genreq.to_nested(data) if genreq.is_flat(data) else data
        except InvalidRequest as exc:
            return {
                "valid": False,
                "errors": [{"field": exc.message.split(":")[0], "message": exc.message}],
            }
        validator = jsonschema.Draft202012Validator(genreq.schema())
        errors = [
            {
                "field": genreq.error_field(e),
                "message": genreq.error_message(e),
            }
            for e in sorted(validator.iter_errors(nested), key=lambda e: list(e.absolute_path))
        ]
        if not errors:
            try:  # the checks across fields, once the schema holds
                genreq.parse(nested)
            except InvalidRequest as exc:
                errors.append({"field": exc.message.split(":")[0], "message": exc.message})
        return {"valid": not errors, "errors": errors, "normalized": nested if not errors else None}

    def estimate(self, request: Request, ctx: Context) -> dict[str, Any]:
        """Memory and (once a generation was measured) time a request would take."""
        data = request.data
        req = genreq.parse(data)
        info = self.models.device
        dtype_bytes = 4 if info.kind == "cpu" else 2
        batch = batch_size(req, info)
        seconds = self.estimated_seconds(req)
        return {
            "device": info.kind,
            "steps": req.steps,
            "images": req.num_images,
            "batch_size": batch,
            "batches": math.ceil(req.num_images / batch),
            "activation_bytes_per_image": per_image_bytes(
                req.width, req.height, dtype_bytes, req.controlnet is not None
            ),
            "free_memory_bytes": info.free_memory,
            "estimated_seconds": seconds,
            "estimate_basis": "measured" if seconds is not None else "no generation measured yet",
        }

    def estimated_seconds(self, req: genreq.GenerationRequest) -> float | None:
        """How long ``req`` would take, from the last measured generation (``None`` before
        one): the measured seconds per step per megapixel, times steps, megapixels, images."""
        if self.seconds_per_step_mp is None:
            return None
        megapixels = req.width * req.height / 1e6
        return round(self.seconds_per_step_mp * req.steps * megapixels * req.num_images, 3)

    def check_estimate(self, req: genreq.GenerationRequest, ctx: Context) -> None:
        """Refuses ``req`` when its estimate passes the time left before the request's
        deadline or the worker's ceiling (:func:`max_estimate_s`)."""
        seconds = self.estimated_seconds(req)
        if seconds is None:
            return
        limits: list[tuple[float, str]] = []
        ceiling = max_estimate_s()
        if ceiling is not None:
            limits.append((ceiling, f"the worker's limit ({MAX_ESTIMATE_ENV})"))
        left = ctx.time_left
        if left is not None:
            limits.append((left, "the time left before the request's deadline"))
        for limit, what in sorted(limits):
            if seconds > limit:
                raise InvalidRequest(
                    f"(request): estimated at {seconds:g} s (inference.estimate), above {what} "
                    f"of {limit:.0f} s: ask for fewer steps, images or pixels"
                )

    def capabilities(self, request: Request, ctx: Context) -> dict[str, Any]:
        return {
            "schedulers": schedulers.names(),
            "formats": sorted(set(images.FORMATS) - {"jpg"}),
            "max_dimensions": {"width": 2048, "height": 2048},
            "refiner": True,
            "vae_override": True,
            "loras": True,
            "controlnet": controlnet.available(),
            "controlnet_types": list(genreq.CONTROLNET_TYPES),
            "controlnet_preprocessors": list(genreq.PREPROCESSORS),
            "device": self.models.device.kind,
            "request_schema": str(genreq.SCHEMA_PATH),
        }

    # -- generate -----------------------------------------------------------------------

    def generate(self, request: Request, ctx: Context) -> Reply:
        data = request.data
        req = genreq.parse(data)
        self.check_estimate(req, ctx)
        # Events only once the request is taken: a refused one sends none.
        info = self.models.device
        self.running = ctx.request_id
        devices.status_change(ctx, "busy", info)
        try:
            ctx.progress(0.0, "initialization", f"{req.num_images} image(s), {req.steps} steps")
            return self._generate(req, request.attachments, ctx)
        finally:
            self.running = None
            devices.status_change(ctx, "idle", info)

    def _generate(
        self, req: genreq.GenerationRequest, attachments: Sequence[bytes], ctx: Context
    ) -> Reply:
        started = time.perf_counter()
        control: controlnet.ControlImage | None = None
        control_model: Path | None = None
        # The request's own mistakes first, before anything is loaded.
        roots = Roots.from_env()
        for i, lora in enumerate(req.loras):
            roots.model_entry(lora.path, f"conditioning.loras.{i}.path")
        save_dir = None if req.save_dir is None else roots.output_folder(req.save_dir)
        if req.controlnet is not None:
            control = controlnet.control_image(req.controlnet, attachments, req.width, req.height)
            control_model = resolve_controlnet(req.controlnet.model)

        def on_load(kind: str, folder: Path) -> None:
            ctx.progress(0.0, "loading", f"loading the {kind} {folder.name}")
            devices.status_change(ctx, "loading", self.models.device)

        with self.models.reporting(on_load):
            base = self.models.base(req.base, req.vae)
            runner = base  # what runs the base's steps: the base, or its ControlNet pipeline
            if req.controlnet is not None:
                runner = self.models.controlnet(base, req.controlnet.model)
            refiner = self.models.refiner(req.refiner) if req.refiner else None
        self.models.apply_loras(base, [(lora.path, lora.weight) for lora in req.loras])
        runner.pipeline.scheduler = schedulers.make(req.scheduler, base.scheduler_config)
        if refiner is not None:
            refiner.pipeline.scheduler = schedulers.make(req.scheduler, refiner.scheduler_config)
        loaded = time.perf_counter()

        batch = batch_size(req, self.models.device)
        batches = math.ceil(req.num_images / batch)
        total_steps = req.steps * batches
        done = 0

        def on_step(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            nonlocal done
            done += 1
            if ctx.cancelled:
                raise Cancelled("cancelled")
            ctx.progress(done / total_steps, "inference", f"step {done}/{total_steps}")
            return kwargs

        seed = req.seed if req.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item())
        out: list[Any] = []
        for b in range(batches):
            ctx.check_cancelled()
            first = b * batch
            count = min(batch, req.num_images - first)
            generators = [
                torch.Generator("cpu").manual_seed(image_seed(seed, first + i))
                for i in range(count)
            ]
            common: dict[str, Any] = {
                "prompt": [req.prompt] * count,
                "negative_prompt": [req.negative_prompt] * count,
                "num_inference_steps": req.steps,
                "guidance_scale": req.guidance_scale,
                "generator": generators,
                "callback_on_step_end": on_step,
            }
            steer: dict[str, Any] = {}
            if control is not None and req.controlnet is not None:
                steer = {
                    "image": control.image,
                    "controlnet_conditioning_scale": req.controlnet.conditioning_scale,
                    "control_guidance_start": req.controlnet.guidance_start,
                    "control_guidance_end": req.controlnet.guidance_end,
                }
            if refiner is None:
                result = runner.pipeline(**common, **steer, width=req.width, height=req.height)
            else:
                latents = runner.pipeline(
                    **common,
                    **steer,
                    width=req.width,
                    height=req.height,
                    denoising_end=req.refiner_fraction,
                    output_type="latent",
                ).images
                result = refiner.pipeline(
                    **common, image=latents, denoising_start=req.refiner_fraction
                )
            out.extend(result.images)
        finished = time.perf_counter()
        megapixels = req.width * req.height / 1e6
        if done:
            self.seconds_per_step_mp = (finished - loaded) / (done * megapixels * batch)

        ctx.progress(1.0, "postprocessing", f"encoding {len(out)} image(s)")
        blobs = [images.encode(img, req.output_format) for img in out]
        described: list[dict[str, Any]] = []
        for i, (img, blob) in enumerate(zip(out, blobs, strict=True)):
            entry: dict[str, Any] = {
                "index": i,
                "seed": image_seed(seed, i),
                "width": img.width,
                "height": img.height,
                "format": req.output_format,
                "bytes": len(blob),
            }
            if save_dir is not None:
                name = f"{ctx.request_id}-{i}.{req.output_format}"
                entry["path"] = str(roots.write_output(save_dir, name, blob, "output.save_dir"))
            described.append(entry)
        self.generated += len(out)
        data = {
            "images": described,
            "seed": seed,
            "steps": req.steps,
            "scheduler": req.scheduler,
            "refiner": req.refiner is not None,
            "loras": [lora.path for lora in req.loras],
            "controlnet": _describe_controlnet(req.controlnet, control_model, control),
            "batch_size": batch,
            "timings": {
                "load_s": round(loaded - started, 3),
                "denoise_and_decode_s": round(finished - loaded, 3),
            },
            "metrics": {
                **devices.telemetry(self.models.device),
                "inference_time_s": round(time.perf_counter() - started, 3),
            },
        }
        return Reply(data, blobs)

    def status(self) -> dict[str, Any]:
        return {"generated": self.generated, "running": self.running}

    def cleanup(self) -> None:
        self.seconds_per_step_mp = None


def _describe_controlnet(
    spec: genreq.ControlNet | None, folder: Path | None, control: controlnet.ControlImage | None
) -> dict[str, Any] | None:
    """``data.controlnet`` of an answer: what steered the generation (``None`` when nothing)."""
    if spec is None or folder is None or control is None:
        return None
    described: dict[str, Any] = {
        "type": spec.type,
        "model": str(folder),
        "conditioning_scale": spec.conditioning_scale,
        "guidance": [spec.guidance_start, spec.guidance_end],
        **control.describe(),
    }
    if spec.preprocess:
        described["thresholds"] = [spec.low_threshold, spec.high_threshold]
    return described
