"""The generation request: its JSON Schema, the flat form of the old design, and defaults.

The schema (``schema/generation_request.json``, shipped with the package so the host can read
it too) describes the nested form. A request in the old design's flat form (``prompt``,
``width``, ``steps``, ... at the top level) is first converted to the nested form; a key the
conversion does not know is an error naming it, and so is a field given twice (``model`` and
``base``). Validation errors name the field: ``dimensions.width: 70 is not a multiple of 8``.
Checks that span fields (ControlNet thresholds, guidance range, what may be preprocessed)
follow the schema in :func:`parse`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from ferry_worker import InvalidRequest

SCHEMA_PATH = Path(__file__).parent / "schema" / "generation_request.json"

# flat key -> its path in the nested form
FLAT_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("model", "base"),
    "base": ("model", "base"),
    "model_path": ("model", "base"),
    "refiner": ("model", "refiner"),
    "vae": ("model", "vae"),
    "scheduler": ("scheduler", "type"),
    "steps": ("scheduler", "steps"),
    "num_inference_steps": ("scheduler", "steps"),
    "guidance_scale": ("hyperparameters", "guidance_scale"),
    "seed": ("hyperparameters", "seed"),
    "num_images": ("hyperparameters", "num_images"),
    "refiner_fraction": ("hyperparameters", "refiner_fraction"),
    "high_noise_frac": ("hyperparameters", "refiner_fraction"),
    "prompt": ("conditioning", "prompt"),
    "negative_prompt": ("conditioning", "negative_prompt"),
    "loras": ("conditioning", "loras"),
    "controlnet": ("conditioning", "controlnet"),
    "controlnet_type": ("conditioning", "controlnet", "type"),
    "controlnet_model": ("conditioning", "controlnet", "model"),
    "controlnet_image": ("conditioning", "controlnet", "image"),
    "controlnet_preprocess": ("conditioning", "controlnet", "preprocess"),
    "controlnet_conditioning_scale": ("conditioning", "controlnet", "conditioning_scale"),
    "controlnet_low_threshold": ("conditioning", "controlnet", "low_threshold"),
    "controlnet_high_threshold": ("conditioning", "controlnet", "high_threshold"),
    "control_guidance_start": ("conditioning", "controlnet", "guidance_start"),
    "control_guidance_end": ("conditioning", "controlnet", "guidance_end"),
    "width": ("dimensions", "width"),
    "height": ("dimensions", "height"),
    "output_format": ("output", "format"),
    "save_dir": ("output", "save_dir"),
}


@cache
def schema() -> dict[str, Any]:
    """The generation request's JSON Schema (draft 2020-12)."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def max_prompt_chars() -> int:
    """The longest prompt the schema allows (``conditioning.prompt``'s ``maxLength``)."""
    conditioning = schema()["properties"]["conditioning"]["properties"]
    return int(conditioning["prompt"]["maxLength"])


@cache
def _validator() -> Any:
    return jsonschema.Draft202012Validator(schema())


@dataclass(frozen=True)
class Lora:
    """A LoRA to apply, with its weight."""

    path: str
    weight: float = 1.0


CONTROLNET_TYPES = ("canny", "depth", "pose")

# The ControlNet types whose control map the worker can make from an ordinary image.
PREPROCESSORS = ("canny",)

# What would make the other maps from a photo (none of them is available offline).
ANNOTATORS = {
    "depth": "a depth estimator such as MiDaS, DPT or Depth Anything",
    "pose": "a pose estimator such as OpenPose or DWPose",
}


@dataclass(frozen=True)
class ControlNet:
    """``conditioning.controlnet``: a ControlNet model, its type and the control image."""

    type: str
    model: str
    image: int | str | dict[str, int]  # an attachment index (or {"attachment": index}), or a path
    preprocess: bool
    conditioning_scale: float = 1.0
    low_threshold: float = 100.0
    high_threshold: float = 200.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0


@dataclass(frozen=True)
class GenerationRequest:
    """A validated generation request with every default filled in."""

    base: str
    prompt: str
    refiner: str | None = None
    vae: str | None = None
    negative_prompt: str = ""
    scheduler: str = "Euler"
    steps: int = 30
    guidance_scale: float = 7.5
    seed: int | None = None
    num_images: int = 1
    refiner_fraction: float = 0.8
    width: int = 1024
    height: int = 1024
    loras: tuple[Lora, ...] = field(default_factory=tuple)
    controlnet: ControlNet | None = None
    output_format: str = "png"
    save_dir: str | None = None


def is_flat(data: dict[str, Any]) -> bool:
    """Whether ``data`` is in the old design's flat form (a top-level ``prompt``)."""
    return "prompt" in data or isinstance(data.get("model"), str)


def to_nested(data: dict[str, Any]) -> dict[str, Any]:
    """Converts the flat form to the nested form; unknown keys are an error naming them, and so
    is a field given twice (``steps`` and ``num_inference_steps``, or ``controlnet_type`` and a
    ``controlnet`` object holding ``type``)."""
    nested: dict[str, Any] = {}
    given: dict[tuple[str, ...], str] = {}
    # Shorter paths first, so that `controlnet_*` keys join a `controlnet` object; then by
    # name, so that which of two keys is refused does not depend on the codec's key order.
    order = sorted(data.items(), key=lambda kv: (len(FLAT_KEYS.get(kv[0], ())), kv[0]))
    for key, value in order:
        target = FLAT_KEYS.get(key)
        if target is None:
            known = ", ".join(sorted(FLAT_KEYS))
            raise InvalidRequest(f"{key}: not a field of the flat request form (known: {known})")
        node = nested
        for depth, part in enumerate(target[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                whose = given.get(target[: depth + 1], part)
                raise InvalidRequest(f"{key}: cannot be combined with {whose} = {child!r}")
            node = child
        leaf = target[-1]
        if leaf in node:
            first = next(
                given[target[:n]] for n in range(len(target), 0, -1) if target[:n] in given
            )
            raise InvalidRequest(f"{key}: {'.'.join(target)} is already given (by {first})")
        node[leaf] = dict(value) if isinstance(value, dict) else value
        given[target] = key
    return nested


def error_field(error: Any) -> str:
    """The field a schema error is about (a missing property is named, not its object)."""
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        path = f"{path}.{missing}" if path else missing
    return path or "(request)"


def error_message(error: Any) -> str:
    """A schema error's message, without echoing a long value back: a string above
    ``maxLength`` is described by its length, other messages are cut at 300 characters."""
    if error.validator == "maxLength" and isinstance(error.instance, str):
        return (
            f"{len(error.instance)} characters, longer than the maximum of {error.validator_value}"
        )
    message: str = error.message
    return message if len(message) <= 300 else message[:300] + "..."


def _field_path(error: Any) -> str:
    path = error_field(error)
    if path == "(request)":
        path = ""
    if error.validator == "additionalProperties":
        return f"{path}: {error.message}" if path else error.message
    return path or "(request)"


def validate(data: Any) -> dict[str, Any]:
    """The nested form of ``data``, validated; raises :class:`InvalidRequest` naming the field."""
    if not isinstance(data, dict):
        raise InvalidRequest("data: expected a JSON object (the generation request)")
    nested = to_nested(data) if is_flat(data) else data
    errors = sorted(_validator().iter_errors(nested), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = _field_path(first)
        if first.validator == "additionalProperties":
            raise InvalidRequest(where)
        raise InvalidRequest(f"{where}: {error_message(first)}")
    return nested


def parse(data: Any) -> GenerationRequest:
    """Validates ``data`` (either form) and fills in the defaults."""
    nested = validate(data)
    model = nested["model"]
    sched = nested.get("scheduler", {})
    hyper = nested.get("hyperparameters", {})
    cond = nested["conditioning"]
    dims = nested.get("dimensions", {})
    out = nested.get("output", {})
    loras = tuple(Lora(str(x["path"]), float(x.get("weight", 1.0))) for x in cond.get("loras", []))
    return GenerationRequest(
        base=model["base"],
        refiner=model.get("refiner"),
        vae=model.get("vae"),
        prompt=cond["prompt"],
        negative_prompt=cond.get("negative_prompt", ""),
        scheduler=sched.get("type", "Euler"),
        steps=int(sched.get("steps", 30)),
        guidance_scale=float(hyper.get("guidance_scale", 7.5)),
        seed=hyper.get("seed"),
        num_images=int(hyper.get("num_images", 1)),
        refiner_fraction=float(hyper.get("refiner_fraction", 0.8)),
        width=int(dims.get("width", 1024)),
        height=int(dims.get("height", 1024)),
        loras=loras,
        controlnet=_controlnet(cond.get("controlnet")),
        output_format=out.get("format", "png"),
        save_dir=out.get("save_dir"),
    )


def _controlnet(data: dict[str, Any] | None) -> ControlNet | None:
    """``conditioning.controlnet`` (already valid against the schema), checked across fields."""
    if data is None:
        return None
    where = "conditioning.controlnet"
    kind = str(data["type"])
    preprocess = bool(data.get("preprocess", kind in PREPROCESSORS))
    if preprocess and kind not in PREPROCESSORS:
        raise InvalidRequest(
            f"{where}.preprocess: the worker cannot make a {kind} map from a photo: that needs "
            f"an annotator model ({ANNOTATORS[kind]}), and none is available offline. Send a "
            f"ready {kind} map as {where}.image with preprocess false (the default for {kind})"
        )
    for name in ("low_threshold", "high_threshold"):
        if name in data and not (kind == "canny" and preprocess):
            raise InvalidRequest(
                f"{where}.{name}: used only when the worker makes a canny map "
                "(type canny with preprocess true)"
            )
    low = float(data.get("low_threshold", 100.0))
    high = float(data.get("high_threshold", 200.0))
    if low > high:
        raise InvalidRequest(f"{where}.low_threshold: {low:g} is above high_threshold {high:g}")
    start = float(data.get("guidance_start", 0.0))
    end = float(data.get("guidance_end", 1.0))
    if start >= end:
        raise InvalidRequest(
            f"{where}.guidance_end: {end:g} must be above guidance_start {start:g}"
        )
    return ControlNet(
        type=kind,
        model=str(data["model"]),
        image=data["image"],
        preprocess=preprocess,
        conditioning_scale=float(data.get("conditioning_scale", 1.0)),
        low_threshold=low,
        high_threshold=high,
        guidance_start=start,
        guidance_end=end,
    )
