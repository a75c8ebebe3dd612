"""The generation request: its JSON Schema, the flat form of the old design, and defaults.

The schema (``schema/generation_request.json``, shipped with the package so the host can read
it too) describes the nested form. A request in the old design's flat form (``prompt``,
``width``, ``steps``, ... at the top level) is first converted to the nested form; a key the
conversion does not know is an error naming it. Validation errors name the field:
``dimensions.width: 70 is not a multiple of 8``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from ..errors import InvalidRequest

SCHEMA_PATH = Path(__file__).parent / "schema" / "generation_request.json"

# flat key -> (section, key) in the nested form
FLAT_KEYS: dict[str, tuple[str, str]] = {
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


@cache
def _validator() -> Any:
    return jsonschema.Draft202012Validator(schema())


@dataclass(frozen=True)
class Lora:
    """A LoRA to apply, with its weight."""

    path: str
    weight: float = 1.0


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
    controlnet: dict[str, Any] | None = None
    output_format: str = "png"
    save_dir: str | None = None


def is_flat(data: dict[str, Any]) -> bool:
    """Whether ``data`` is in the old design's flat form (a top-level ``prompt``)."""
    return "prompt" in data or isinstance(data.get("model"), str)


def to_nested(data: dict[str, Any]) -> dict[str, Any]:
    """Converts the flat form to the nested form; unknown keys are an error naming them."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        target = FLAT_KEYS.get(key)
        if target is None:
            known = ", ".join(sorted(FLAT_KEYS))
            raise InvalidRequest(f"{key}: not a field of the flat request form (known: {known})")
        section, name = target
        nested.setdefault(section, {})[name] = value
    return nested


def _field_path(error: Any) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        path = f"{path}.{missing}" if path else missing
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
        raise InvalidRequest(f"{where}: {first.message}")
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
        controlnet=cond.get("controlnet"),
        output_format=out.get("format", "png"),
        save_dir=out.get("save_dir"),
    )
