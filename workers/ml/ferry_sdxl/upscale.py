"""``postprocessing.upscale``: a learned upscaler when one is available, else Lanczos.

The learned upscalers are diffusers' pipelines, loaded from local folders and cached by the
model manager (:meth:`ferry_sdxl.models.ModelManager.upscaler`):

- ``sd-x4-upscaler``: ``StableDiffusionUpscalePipeline`` (Stable Diffusion's x4 upscaler),
  which denoises latents at the low-res image's size, conditioned on that image with
  ``noise_level`` of noise added, and decodes them 4x larger;
- ``sd-x2-latent-upscaler``: ``StableDiffusionLatentUpscalePipeline`` (the x2 latent
  upscaler), which encodes the image with its VAE, denoises latents twice that size
  conditioned on them, and decodes them.

Which model: the request's ``model`` (a local pipeline folder, or a name looked up under
``$FERRY_ML_MODELS``), else ``$FERRY_ML_UPSCALER`` (the worker's default, the same lookup).
Without either the image is resized with PIL's Lanczos filter, as ``method: "lanczos"`` asks
in any case. The answer's ``method`` says which ran.

A learned upscaler has one factor (4 or 2). Another ``factor`` is one learned pass, then a
Lanczos resize of its output to the requested size (factor 2 with the x4 model: 4x, then down
to half; factor 8: 4x, then Lanczos 2x). The image is padded (mirrored at the right and bottom
edges) to the sizes the pipeline works in, and the output cropped back, so any size keeps its
exact aspect; transparency is resized with Lanczos and put back.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ferry_worker import Cancelled, Context, InvalidRequest
from PIL import Image

from . import images, models
from . import request as genreq
from .paths import is_dir

DEFAULT_ENV = "FERRY_ML_UPSCALER"
LANCZOS = "lanczos"
# The learned output's largest side (before any Lanczos to the factor): generation's limit.
MAX_LEARNED_SIDE = 2048
# The largest side the Lanczos path makes (WebP's limit is 16383, PNG and JPEG go higher).
MAX_LANCZOS_SIDE = 16384
MAX_STEPS = 200
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class Learned:
    """One kind of learned upscaler: its method name, its factor and its defaults."""

    method: str
    factor: int
    steps: int  # default steps
    guidance_scale: float  # default guidance
    # Whether it conditions on the image's VAE latents (the x2 latent upscaler: no noise level,
    # its UNet at twice the latents' size) or on its pixels (the x4: with a noise level, its
    # UNet at the image's size).
    latent: bool


# By pipeline class (models.UPSCALER_CLASSES). Defaults: the x4 upscaler's are diffusers'
# (75 steps, guidance 9, noise level 20); the latent upscaler's are those of diffusers' example
# for it (20 steps, guidance 0).
LEARNED = {
    "StableDiffusionUpscalePipeline": Learned("sd-x4-upscaler", 4, 75, 9.0, latent=False),
    "StableDiffusionLatentUpscalePipeline": Learned(
        "sd-x2-latent-upscaler", 2, 20, 0.0, latent=True
    ),
}
DEFAULT_NOISE_LEVEL = 20

FIELDS = (
    "factor",
    "format",
    "path",
    "method",
    "model",
    "prompt",
    "negative_prompt",
    "steps",
    "guidance_scale",
    "noise_level",
    "seed",
)
LEARNED_FIELDS = (
    "model",
    "prompt",
    "negative_prompt",
    "steps",
    "guidance_scale",
    "noise_level",
    "seed",
)


@dataclass(frozen=True)
class UpscaleRequest:
    """A ``postprocessing.upscale`` request, checked field by field."""

    method: str  # "lanczos" or "learned"
    factor: float | None  # None: the method's own (2 for Lanczos, the model's for learned)
    format: str
    model: str | None  # learned: the model named, by the request or DEFAULT_ENV
    model_field: str  # where the model name came from: "model" or DEFAULT_ENV
    prompt: str = ""
    negative_prompt: str = ""
    steps: int | None = None
    guidance_scale: float | None = None
    noise_level: int | None = None
    seed: int | None = None


def _number(data: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidRequest(f"{key}: expected a number from {lo:g} to {hi:g}, not {value!r}")
    return float(value)


def _integer(data: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidRequest(f"{key}: expected an integer from {lo} to {hi}, not {value!r}")
    return value


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{key}: expected a string, not {value!r:.100}")
    limit = genreq.max_prompt_chars()
    if len(value) > limit:
        raise InvalidRequest(f"{key}: {len(value)} characters, longer than the maximum of {limit}")
    return value


def parse(data: Any) -> UpscaleRequest:
    """Checks ``data``; raises :class:`InvalidRequest` naming the first bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidRequest("data: expected a JSON object (factor, format, model, ...)")
    for key in data:
        if key not in FIELDS:
            raise InvalidRequest(
                f"{key}: not a field of postprocessing.upscale (known: {', '.join(FIELDS)})"
            )
    factor = _number(data, "factor", 1, 8)
    fmt = data.get("format", "png")
    if not isinstance(fmt, str) or fmt.lower() not in images.FORMATS:
        raise InvalidRequest(
            f"format: unknown image format {fmt!r} (known: {sorted(images.FORMATS)})"
        )
    method = data.get("method")
    if method not in (None, LANCZOS, "learned"):
        raise InvalidRequest(
            f"method: expected 'lanczos' or 'learned', not {method!r} (left out: learned when "
            f"model is given or {DEFAULT_ENV} is set, else lanczos)"
        )
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidRequest(f"model: expected an upscaler folder or name, not {model!r}")
    field = "model"
    if model is None and method != LANCZOS:
        model = os.environ.get(DEFAULT_ENV) or None
        field = DEFAULT_ENV
    given = [k for k in LEARNED_FIELDS if data.get(k) is not None]
    if method == LANCZOS or model is None:
        if method == "learned":
            raise InvalidRequest(
                f"method: 'learned' needs an upscaler model: give model (a local folder or a "
                f"name under FERRY_ML_MODELS), or set {DEFAULT_ENV} on the worker"
            )
        if given:
            why = (
                "method is 'lanczos'"
                if method == LANCZOS
                else f"no upscaler model is given (model) or configured ({DEFAULT_ENV}), so "
                "this is a Lanczos resize"
            )
            raise InvalidRequest(f"{given[0]}: only a learned upscaler takes it ({why})")
        return UpscaleRequest(LANCZOS, factor, fmt.lower(), None, "")
    return UpscaleRequest(
        method="learned",
        factor=factor,
        format=fmt.lower(),
        model=model,
        model_field=field,
        prompt=_text(data, "prompt"),
        negative_prompt=_text(data, "negative_prompt"),
        steps=_integer(data, "steps", 1, MAX_STEPS),
        guidance_scale=_number(data, "guidance_scale", 0, 50),
        noise_level=_integer(data, "noise_level", 0, 1000),
        seed=_integer(data, "seed", 0, MAX_SEED),
    )


def target_size(image: Any, factor: float) -> tuple[int, int]:
    return max(1, round(image.width * factor)), max(1, round(image.height * factor))


def lanczos(image: Any, factor: float, where: str = "factor") -> Any:
    """``image`` resized ``factor`` times with PIL's Lanczos filter."""
    size = target_size(image, factor)
    if max(size) > MAX_LANCZOS_SIDE:
        raise InvalidRequest(
            f"{where}: {factor:g} makes {size[0]}x{size[1]} of {image.width}x{image.height}, "
            f"above {MAX_LANCZOS_SIDE} px a side"
        )
    return image.resize(size, Image.Resampling.LANCZOS)


def _has_alpha(image: Any) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )


def split_alpha(image: Any) -> tuple[Any, Any | None]:
    """``image`` as 8-bit RGB (the colours kept where transparent), and its alpha channel."""
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return images.to_rgb(image), None


def pad_sizes(pipeline: Any, learned: Learned) -> tuple[int, int]:
    """The multiple of which the image's sides must be, and their least size.

    The multiple is the VAE's scale factor (the pipelines resize to it otherwise) and whatever
    makes the UNet's input halve evenly at each of its downsamplings (the latent upscaler's K
    blocks need it; the x4's blocks would not). The least size keeps the K blocks' deepest
    level at 2 x 2 or more (they pad by reflection, which a 1-pixel side cannot)."""
    vae_scale = int(pipeline.vae_scale_factor)
    halvings = 2 ** (len(pipeline.unet.config.block_out_channels) - 1)
    if not learned.latent:  # the UNet runs at the image's own size
        multiple = math.lcm(vae_scale, halvings)
        return multiple, multiple
    # The UNet runs at twice the VAE's latents: image / vae_scale * 2.
    multiple = math.lcm(vae_scale, max(1, vae_scale * halvings // 2))
    return multiple, max(multiple, vae_scale * halvings)


def pad(image: Any, multiple: int, least: int) -> Any:
    """``image`` mirrored at its right and bottom edges up to a multiple of ``multiple``, and
    at least ``least`` a side."""
    width = -(-max(image.width, least) // multiple) * multiple
    height = -(-max(image.height, least) // multiple) * multiple
    if (width, height) == image.size:
        return image
    pixels = np.asarray(image)
    padded = np.pad(
        pixels, ((0, height - image.height), (0, width - image.width), (0, 0)), mode="symmetric"
    )
    return Image.fromarray(padded)


@dataclass(frozen=True)
class Source:
    """The input image, and the field it came from (for errors)."""

    image: Any
    field: str  # "attachments[0]" or "path"


def check_request(req: UpscaleRequest, learned: Learned, source: Source) -> None:
    """What can be refused before the model is loaded: a field this kind of upscaler does not
    take, an image whose learned output would pass :data:`MAX_LEARNED_SIDE`."""
    if req.noise_level is not None and learned.latent:
        raise InvalidRequest(
            f"noise_level: {learned.method} takes none (it conditions on the image's latents, "
            "with no noise added)"
        )
    guidance = req.guidance_scale if req.guidance_scale is not None else learned.guidance_scale
    if learned.latent and guidance == 0 and req.prompt:
        # diffusers' latent upscale pipeline replaces the prompt with "" at guidance 0.
        raise InvalidRequest(
            f"prompt: {learned.method} ignores the prompt at guidance_scale 0 (its default); "
            "give guidance_scale above 0 to use it"
        )
    width, height = source.image.width * learned.factor, source.image.height * learned.factor
    if max(width, height) > MAX_LEARNED_SIDE:
        side = MAX_LEARNED_SIDE // learned.factor
        raise InvalidRequest(
            f"{source.field}: {source.image.width}x{source.image.height} is too large for "
            f"{learned.method}: its output would be {width}x{height}, and the worker makes at "
            f"most {MAX_LEARNED_SIDE} px a side (as for generation), so at most {side} px a "
            "side in; send a smaller image (or tiles of it), or method 'lanczos'"
        )


def run_learned(
    entry: models.Loaded,
    learned: Learned,
    req: UpscaleRequest,
    source: Source,
    ctx: Context,
    on_step: Callable[[int, int], None],
) -> tuple[Any, dict[str, Any]]:
    """Runs ``entry``'s pipeline on ``source``; the image at the requested factor and what
    ran. ``on_step(done, total)`` after every denoising step, where cancellation is checked."""
    pipe = entry.pipeline
    steps = req.steps if req.steps is not None else learned.steps
    guidance = req.guidance_scale if req.guidance_scale is not None else learned.guidance_scale
    seed = req.seed if req.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item())
    extra: dict[str, Any] = {}
    noise_level: int | None = None
    if not learned.latent:
        noise_level = req.noise_level if req.noise_level is not None else DEFAULT_NOISE_LEVEL
        highest = int(pipe.config.get("max_noise_level", 350))
        classes = pipe.unet.config.get("num_class_embeds")
        if classes is not None:
            highest = min(highest, int(classes) - 1)
        if noise_level > highest:
            raise InvalidRequest(
                f"noise_level: {noise_level} is above {highest}, the most this model takes "
                "(its max_noise_level, within its UNet's noise-level classes)"
            )
        extra["noise_level"] = noise_level

    rgb, alpha = split_alpha(source.image)
    padded = pad(rgb, *pad_sizes(pipe, learned))
    done = 0

    def step(index: int, timestep: Any, latents: Any) -> None:
        nonlocal done
        done += 1
        if ctx.cancelled:
            raise Cancelled("cancelled")
        on_step(done, steps)

    ctx.check_cancelled()
    result = pipe(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        image=padded,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator("cpu").manual_seed(seed),
        callback=step,
        callback_steps=1,
        **extra,
    )
    learned_size = (rgb.width * learned.factor, rgb.height * learned.factor)
    out = result.images[0].crop((0, 0, *learned_size))
    factor = req.factor if req.factor is not None else float(learned.factor)
    size = target_size(rgb, factor)
    resized = size != out.size
    if resized:
        out = out.resize(size, Image.Resampling.LANCZOS)
    if alpha is not None:
        out = out.convert("RGBA")
        out.putalpha(alpha.resize(size, Image.Resampling.LANCZOS))
    described: dict[str, Any] = {
        "model": str(entry.key[1]),
        "factor": factor,
        "learned_factor": learned.factor,
        "learned_size": list(learned_size),
        "resized": resized,
        "seed": seed,
        "steps": steps,
        "guidance_scale": guidance,
    }
    if noise_level is not None:
        described["noise_level"] = noise_level
    return out, described


def find_models() -> list[dict[str, str]]:
    """The upscaler folders directly under the ``$FERRY_ML_MODELS`` folders."""
    found = []
    for root in models.search_dirs():
        if not is_dir(root):
            continue
        for folder in sorted(p for p in root.iterdir() if is_dir(p)):
            try:
                _, kind = models.resolve_upscaler(str(folder))
            except InvalidRequest:
                continue
            found.append({"name": folder.name, "path": str(folder), "method": LEARNED[kind].method})
    return found


def describe_default() -> dict[str, Any]:
    """The worker's default upscaler (``$FERRY_ML_UPSCALER``): its name, and what it is."""
    name = os.environ.get(DEFAULT_ENV) or None
    if name is None:
        return {"name": None, "path": None, "method": LANCZOS, "error": None}
    try:
        folder, kind = models.resolve_upscaler(name, DEFAULT_ENV)
    except InvalidRequest as exc:
        return {"name": name, "path": None, "method": None, "error": exc.message}
    return {"name": name, "path": str(folder), "method": LEARNED[kind].method, "error": None}


def timings(started: float, loaded: float) -> dict[str, float]:
    finished = time.perf_counter()
    return {"load_s": round(loaded - started, 3), "upscale_s": round(finished - loaded, 3)}
