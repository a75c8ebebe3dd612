"""Schedulers by the names users know (the A1111/ComfyUI names), mapped to diffusers classes."""

from __future__ import annotations

from typing import Any

from ferry_worker import InvalidRequest

# name -> (diffusers class name, config overrides)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "DPM++ 2M Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
    ),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "PNDM": ("PNDMScheduler", {}),
}


def names() -> list[str]:
    """The scheduler names a request may use."""
    return list(SCHEDULERS)


def make(name: str, config: Any) -> Any:
    """A diffusers scheduler ``name`` built from another scheduler's ``config``."""
    import diffusers

    entry = SCHEDULERS.get(name)
    if entry is None:
        raise InvalidRequest(f"scheduler.type: unknown scheduler {name!r} (known: {names()})")
    class_name, overrides = entry
    cls = getattr(diffusers, class_name)
    return cls.from_config(config, **overrides)


def describe() -> list[dict[str, Any]]:
    """``scheduler.list``: each name with its diffusers class and settings."""
    return [
        {"name": name, "class": cls, "config": overrides}
        for name, (cls, overrides) in SCHEDULERS.items()
    ]
