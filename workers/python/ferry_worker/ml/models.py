"""The model manager: SDXL suites loaded from local folders, kept in a memory-bounded LRU.

A suite is a base pipeline (a diffusers ``save_pretrained`` folder holding
``model_index.json``), optionally with a VAE that replaces the base's and a refiner (another
SDXL folder, run as an img2img pipeline on the base's latents). A model named by something
that is not a local folder is looked up under ``$FERRY_ML_MODELS``; there is no hub access, so
a model found nowhere is an ``invalid_request`` naming every place looked at.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..context import Context
from ..errors import InvalidRequest
from ..messages import Request
from . import device as devices

log = logging.getLogger("ferry_worker.ml")


@dataclass
class Loaded:
    """One cached pipeline."""

    key: tuple[str, ...]
    kind: str  # "base" or "refiner"
    pipeline: Any
    bytes: int
    scheduler_config: Any
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    adapters: dict[str, str] = field(default_factory=dict)  # LoRA path -> adapter name

    def describe(self) -> dict[str, Any]:
        return {
            "key": list(self.key),
            "kind": self.kind,
            "bytes": self.bytes,
            "loaded_at": self.loaded_at,
            "last_used": self.last_used,
            "loras": sorted(self.adapters),
        }


def search_dirs() -> list[Path]:
    """Where model names that are not paths are looked up (``$FERRY_ML_MODELS``, ``:``-separated)."""
    raw = os.environ.get("FERRY_ML_MODELS", "")
    return [Path(p) for p in raw.split(os.pathsep) if p]


def resolve(name: str, what: str = "model.base", marker: str = "model_index.json") -> Path:
    """The local folder for ``name``: the path itself, else ``<dir>/<name>`` for each search
    dir. Raises :class:`InvalidRequest` listing what was looked for."""
    candidates = [Path(name).expanduser()]
    candidates += [d / name for d in search_dirs()]
    for c in candidates:
        if c.is_dir() and (c / marker).is_file():
            return c.resolve()
        if marker == "" and c.exists():
            return c.resolve()
    looked = ", ".join(str(c / marker) if marker else str(c) for c in candidates)
    raise InvalidRequest(
        f"{what}: model {name!r} not found (looked for {looked}; downloads from a model hub "
        "are not available: give a local folder, or set FERRY_ML_MODELS)"
    )


def resolve_vae(name: str) -> tuple[Path, str | None]:
    """A VAE folder: an ``AutoencoderKL`` folder (``config.json``) or a pipeline's ``vae/``."""
    for marker, sub in (("config.json", None), ("vae/config.json", "vae")):
        try:
            return resolve(name, "model.vae", marker), sub
        except InvalidRequest:
            continue
    resolve(name, "model.vae", "config.json")  # raises, naming the first place looked
    raise AssertionError("unreachable")


def module_bytes(pipeline: Any) -> int:
    """Parameter and buffer bytes of every torch module in ``pipeline``."""
    total = 0
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            for t in [*component.parameters(), *component.buffers()]:
                total += t.numel() * t.element_size()
    return total


def default_budget(info: devices.DeviceInfo) -> int:
    """The cache budget: ``$FERRY_ML_CACHE_BYTES``, else 60% of the device's memory."""
    raw = os.environ.get("FERRY_ML_CACHE_BYTES")
    if raw:
        return int(raw)
    total = info.total_memory or 8 * devices.GIB
    return int(total * 0.6)


class ModelManager:
    """Loads and caches pipelines; evicts the least recently used beyond the byte budget."""

    def __init__(self, device: devices.DeviceInfo, budget: int | None = None) -> None:
        self.device = device
        self.budget = default_budget(device) if budget is None else budget
        self.cache: OrderedDict[tuple[str, ...], Loaded] = OrderedDict()

    def used(self) -> int:
        return sum(e.bytes for e in self.cache.values())

    def _touch(self, entry: Loaded) -> Loaded:
        entry.last_used = time.time()
        self.cache.move_to_end(entry.key)
        return entry

    def _insert(self, entry: Loaded) -> Loaded:
        self.cache[entry.key] = entry
        while self.used() > self.budget and len(self.cache) > 1:
            old_key, old = next(iter(self.cache.items()))
            if old_key == entry.key:
                break
            log.info(
                "evicting %s (%d bytes) to fit the %d-byte budget", old_key, old.bytes, self.budget
            )
            self._drop(old_key)
        return entry

    def _drop(self, key: tuple[str, ...]) -> None:
        self.cache.pop(key, None)
        if self.device.kind == "cuda":
            torch.cuda.empty_cache()

    def base(self, name: str, vae: str | None = None) -> Loaded:
        """The base pipeline for ``name`` (with ``vae`` replacing its VAE), loaded if needed."""
        from diffusers import AutoencoderKL, StableDiffusionXLPipeline

        folder = resolve(name)
        vae_folder = resolve_vae(vae) if vae else None
        key = ("base", str(folder), str(vae_folder[0]) if vae_folder else "")
        if key in self.cache:
            return self._touch(self.cache[key])
        dtype = devices.dtype_for(self.device)
        extra: dict[str, Any] = {}
        if vae_folder is not None:
            path, sub = vae_folder
            kw = {"subfolder": sub} if sub else {}
            extra["vae"] = AutoencoderKL.from_pretrained(str(path), dtype=dtype, **kw)
        started = time.perf_counter()
        pipe = StableDiffusionXLPipeline.from_pretrained(str(folder), dtype=dtype, **extra)
        pipe = self._place(pipe)
        log.info("loaded %s in %.2f s", folder, time.perf_counter() - started)
        entry = Loaded(key, "base", pipe, module_bytes(pipe), pipe.scheduler.config)
        return self._insert(entry)

    def refiner(self, name: str) -> Loaded:
        """The refiner pipeline for ``name`` (an SDXL img2img pipeline), loaded if needed."""
        from diffusers import StableDiffusionXLImg2ImgPipeline

        folder = resolve(name, "model.refiner")
        key = ("refiner", str(folder))
        if key in self.cache:
            return self._touch(self.cache[key])
        dtype = devices.dtype_for(self.device)
        pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(folder), dtype=dtype)
        pipe = self._place(pipe)
        entry = Loaded(key, "refiner", pipe, module_bytes(pipe), pipe.scheduler.config)
        return self._insert(entry)

    def _place(self, pipe: Any) -> Any:
        pipe.set_progress_bar_config(disable=True)
        need = module_bytes(pipe) * 2
        settings = devices.memory_settings(self.device, need)
        if settings.cpu_offload and self.device.kind == "cuda":
            pipe.enable_model_cpu_offload(gpu_id=self.device.index)
        else:
            pipe = pipe.to(devices.torch_device(self.device))
        if settings.attention_slicing:
            pipe.enable_attention_slicing()
        if settings.vae_slicing and hasattr(pipe, "enable_vae_slicing"):
            pipe.vae.enable_slicing()
        if settings.vae_tiling:
            pipe.vae.enable_tiling()
        return pipe

    def apply_loras(self, entry: Loaded, loras: list[tuple[str, float]]) -> None:
        """Activates exactly ``loras`` (path, weight) on ``entry``'s pipeline, loading new ones."""
        pipe = entry.pipeline
        if not loras:
            if entry.adapters:
                pipe.disable_lora()
            return
        names = []
        for path, _ in loras:
            if path not in entry.adapters:
                folder = resolve(path, "conditioning.loras.path", "")
                name = f"lora{len(entry.adapters)}"
                pipe.load_lora_weights(str(folder), adapter_name=name)
                entry.adapters[path] = name
            names.append(entry.adapters[path])
        pipe.enable_lora()
        pipe.set_adapters(names, adapter_weights=[w for _, w in loras])

    def unload(self, name: str | None = None) -> list[list[str]]:
        """Drops the cached pipelines whose folder is ``name`` (all when ``None``)."""
        if name is None:
            dropped = list(self.cache)
        else:
            target = str(Path(name).expanduser().resolve())
            dropped = [k for k in self.cache if target in k]
        for key in dropped:
            self._drop(key)
        return [list(k) for k in dropped]

    def describe(self) -> dict[str, Any]:
        return {
            "budget_bytes": self.budget,
            "used_bytes": self.used(),
            "loaded": [e.describe() for e in self.cache.values()],
        }


class ModelInstructor:
    """``model.load``, ``model.unload``, ``model.list``."""

    name = "model"

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def operations(self) -> dict[str, Any]:
        return {"model.load": self.load, "model.unload": self.unload, "model.list": self.list}

    def load(self, request: Request, ctx: Context) -> dict[str, Any]:
        data = request.data
        if not isinstance(data, dict) or not isinstance(data.get("base"), str):
            raise InvalidRequest("base: required (a local SDXL folder)")
        started = time.perf_counter()
        entries = [self.manager.base(data["base"], data.get("vae"))]
        if isinstance(data.get("refiner"), str):
            entries.append(self.manager.refiner(data["refiner"]))
        return {
            "loaded": [e.describe() for e in entries],
            "seconds": round(time.perf_counter() - started, 3),
        }

    def unload(self, request: Request, ctx: Context) -> dict[str, Any]:
        data = request.data
        name = data.get("base") if isinstance(data, dict) else None
        return {"unloaded": self.manager.unload(name if isinstance(name, str) else None)}

    def list(self, request: Request, ctx: Context) -> dict[str, Any]:
        return self.manager.describe()

    def status(self) -> dict[str, Any]:
        return {"loaded": len(self.manager.cache), "used_bytes": self.manager.used()}

    def cleanup(self) -> None:
        self.manager.unload(None)
