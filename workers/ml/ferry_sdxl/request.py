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
    "model_name": ("model", "base"),
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


# The nested form's sections: in an old request, a lowercase one holding an object is read key
# by key (the direct protocol's `hyperparameters`, `dimensions`, ...).
SECTIONS = ("model", "scheduler", "hyperparameters", "conditioning", "dimensions", "output")

# The C# client's (EnhancedSDXLRequest) sections, each with its nested-form name.
CSHARP_SECTIONS: dict[str, str] = {
    "Model": "model",
    "Scheduler": "scheduler",
    "Hyperparameters": "hyperparameters",
    "Conditioning": "conditioning",
    "Dimensions": "dimensions",
    "Output": "output",
}

# Keys of a section that live elsewhere in the nested form; any other key stays in its section.
SECTION_ALIASES: dict[tuple[str, str], tuple[str, ...]] = {
    ("hyperparameters", "num_inference_steps"): ("scheduler", "steps"),
    ("hyperparameters", "steps"): ("scheduler", "steps"),
    ("hyperparameters", "high_noise_frac"): ("hyperparameters", "refiner_fraction"),
    ("scheduler", "num_inference_steps"): ("scheduler", "steps"),
    ("model", "model_name"): ("model", "base"),
}

# C# keys whose snake_case is not the mechanical one.
SNAKE_SPECIAL = {
    "LoRAs": "loras",
    "LoRA": "lora",
    "ControlNet": "controlnet",
    "VAE": "vae",
    "SaveDir": "save_dir",
}

# The C# client's scheduler names that are not the worker's.
SCHEDULER_NAMES = {
    "DPM++": "DPM++ 2M",
    "DPM++ Karras": "DPM++ 2M Karras",
    "DPMPlusPlus2M": "DPM++ 2M",
    "EulerA": "Euler a",
    "Euler A": "Euler a",
    "EulerAncestral": "Euler a",
}


def section_target(section: str, key: str) -> tuple[str, ...]:
    """Where ``key`` of ``section`` goes in the nested form."""
    return SECTION_ALIASES.get((section, key), (section, key))


def snake(key: str) -> str:
    """A C# key in snake_case (``GuidanceScale`` -> ``guidance_scale``, ``LoRAs`` -> ``loras``)."""
    if key in SNAKE_SPECIAL:
        return SNAKE_SPECIAL[key]
    out = []
    for i, c in enumerate(key):
        if "A" <= c <= "Z" and i > 0:
            prev = key[i - 1]
            next_lower = i + 1 < len(key) and "a" <= key[i + 1] <= "z"
            if ("a" <= prev <= "z") or prev.isdigit() or ("A" <= prev <= "Z" and next_lower):
                out.append("_")
        out.append(c.lower() if "A" <= c <= "Z" else c)
    return "".join(out)


def scheduler_name(value: Any) -> Any:
    """The worker's name for a C# scheduler name (others are kept)."""
    return SCHEDULER_NAMES.get(value, value) if isinstance(value, str) else value


def is_csharp_key(key: str) -> bool:
    """Whether a top-level key is the C# client's (a capital first letter)."""
    return bool(key) and "A" <= key[0] <= "Z"


def snake_keys(value: Any, at: str) -> Any:
    """A C# value with every object key in snake_case, at any depth; two spellings of one key
    are an error naming the later by its C# path."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key in sorted(value):
            name = snake(key)
            here = f"{at}.{key}"
            if name in out:
                raise InvalidRequest(f"{here}: {name} is already given")
            out[name] = snake_keys(value[key], here)
        return out
    if isinstance(value, list):
        return [snake_keys(v, f"{at}.{i}") for i, v in enumerate(value)]
    return value


def is_flat(data: dict[str, Any]) -> bool:
    """Whether ``data`` is in one of the old forms (converted by :func:`to_nested`): a top-level
    ``prompt``, a string ``model``, or a C# key (``Model``, ``Conditioning``, ...)."""
    return (
        "prompt" in data
        or isinstance(data.get("model"), str)
        or any(is_csharp_key(k) for k in data)
    )


def _entries(data: dict[str, Any]) -> list[tuple[str, Any, tuple[str, ...]]]:
    """(key as sent, value, target path) of every value of an old request."""
    out: list[tuple[str, Any, tuple[str, ...]]] = []
    for key, value in data.items():
        if is_csharp_key(key):
            section = CSHARP_SECTIONS.get(key)
            if section is None:
                continue  # refused in to_nested, in name order with the flat keys
            converted = snake_keys(value, key)
            if isinstance(converted, dict):
                originals = {snake(k): k for k in value}
                for sub, v in converted.items():
                    if section == "scheduler" and sub == "type":
                        v = scheduler_name(v)
                    out.append((f"{key}.{originals[sub]}", v, section_target(section, sub)))
            elif section == "model":
                out.append((key, converted, ("model", "base")))
            elif section == "scheduler":
                out.append((key, scheduler_name(converted), ("scheduler", "type")))
            else:
                out.append((key, converted, (section,)))
        elif key in SECTIONS and isinstance(value, dict):
            out.extend((f"{key}.{sub}", v, section_target(key, sub)) for sub, v in value.items())
        elif key in FLAT_KEYS:
            out.append((key, value, FLAT_KEYS[key]))
        elif key in SECTIONS:
            out.append((key, value, (key,)))
    return out


def _unknown(data: dict[str, Any]) -> None:
    """Refuses the first key (in name order) the conversion does not know."""
    for key in sorted(data):
        if is_csharp_key(key):
            if key not in CSHARP_SECTIONS:
                known = ", ".join(sorted(CSHARP_SECTIONS))
                raise InvalidRequest(
                    f"{key}: not a field of the EnhancedSDXLRequest form (known: {known})"
                )
        elif key not in FLAT_KEYS and key not in SECTIONS:
            known = ", ".join(sorted(set(FLAT_KEYS) | set(SECTIONS)))
            raise InvalidRequest(f"{key}: not a field of the flat request form (known: {known})")


def to_nested(data: dict[str, Any]) -> dict[str, Any]:
    """Converts an old request to the nested form: the flat form, the direct protocol's
    section objects (``hyperparameters.num_inference_steps`` is ``scheduler.steps``) and the
    C# ``EnhancedSDXLRequest`` (PascalCase; ``"DPM++"`` is ``"DPM++ 2M"``). Values are kept.
    Unknown keys are an error naming them, and so is a field given twice (``steps`` and
    ``num_inference_steps``, or ``controlnet_type`` and a ``controlnet`` object holding
    ``type``, or ``steps`` and ``hyperparameters.num_inference_steps``)."""
    _unknown(data)
    nested: dict[str, Any] = {}
    given: dict[tuple[str, ...], str] = {}
    # Shorter paths first, so that `controlnet_*` keys join a `controlnet` object; then by
    # name, so that which of two keys is refused does not depend on the codec's key order.
    order = sorted(_entries(data), key=lambda e: (len(e[2]), e[0]))
    for key, value, target in order:
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
                (given[target[:n]] for n in range(len(target), 0, -1) if target[:n] in given),
                leaf,
            )
            raise InvalidRequest(f"{key}: {'.'.join(target)} is already given (by {first})")
        node[leaf] = dict(value) if isinstance(value, dict) else value
        given[target] = key
    return nested


# `model.load`'s keys, and the old names the load aliases (`load_model`, ...) take for them.
LOAD_KEYS: dict[str, str] = {
    "base": "base",
    "model": "base",
    "model_name": "base",
    "model_path": "base",
    "refiner": "refiner",
    "vae": "vae",
    "controlnet": "controlnet",
    "upscaler": "upscaler",
}


def load_data(data: Any) -> Any:
    """The data of an old load request (``load_model``, ``model_load``, ``model_load_request``)
    as ``model.load`` reads it: ``{"model_name": ...}`` or ``{"model_path": ...}``, and the C#
    ``{"Model": {"Base", "Refiner", "Vae"}}`` or ``{"Base", ...}``, become ``{"base", "refiner",
    "vae", ...}``; values are kept, a field given twice is an error naming the later key, and a
    key of neither shape is left for ``model.load`` to refuse."""
    if not isinstance(data, dict):
        return data
    flat: list[tuple[str, Any, str]] = []  # (key as sent, value, model.load key)
    for key, value in data.items():
        if key == "Model" and isinstance(value, dict):
            flat.extend((f"Model.{k}", v, snake(k)) for k, v in value.items())
        else:
            flat.append((key, value, snake(key)))
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value, name in sorted(flat, key=lambda e: e[0]):
        target = LOAD_KEYS.get(name, name)
        if name == "model" and isinstance(value, dict):
            target = name  # left for model.load to refuse
        if target in out:
            raise InvalidRequest(f"{key}: {target} is already given (by {given[target]})")
        out[target] = value
        given[target] = key
    return out


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
