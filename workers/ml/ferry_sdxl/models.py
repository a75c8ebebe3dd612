"""The model manager: SDXL suites loaded from local folders, kept in a memory-bounded LRU.

A suite is a base pipeline (a diffusers ``save_pretrained`` folder holding
``model_index.json``), optionally with a VAE that replaces the base's and a refiner (another
SDXL folder, run as an img2img pipeline on the base's latents). A ControlNet (a
``ControlNetModel`` folder) is cached as a ``StableDiffusionXLControlNetPipeline`` that shares
every module of its base pipeline and adds only the ControlNet; it depends on that base entry
and leaves the cache with it. An upscaler (diffusers' x4 upscaler or x2 latent upscaler, a
pipeline folder) is cached on its own, as ``postprocessing.upscale`` runs it.

Every model, LoRA, ControlNet and upscaler is a folder (a LoRA also a ``.safetensors`` file)
under the ``$FERRY_ML_MODELS`` roots: a relative name is looked up in each root, an absolute
one must lie inside one (:mod:`.paths`). There is no hub access; anything else is the uniform
``invalid_request`` ``<field>: not found or not allowed``. Weights are read from safetensors
files only (``use_safetensors=True``): no pickle is ever loaded.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ferry_worker import Context, InvalidRequest, Request

from . import device as devices
from .paths import Roots, is_file

log = logging.getLogger("ferry_sdxl")


@dataclass
class Loaded:
    """One cached pipeline."""

    key: tuple[str, ...]
    kind: str  # "base", "refiner", "controlnet" or "upscaler"
    pipeline: Any
    bytes: int  # what this entry holds beyond the entries it depends on
    scheduler_config: Any
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    adapters: dict[str, str] = field(default_factory=dict)  # LoRA path -> adapter name
    offloaded: bool = False  # placed with model CPU offload (CUDA with little free memory)
    attention_slicing: bool = False  # chosen at placement from free memory
    depends: tuple[tuple[str, ...], ...] = ()  # entries whose modules this pipeline shares

    def describe(self) -> dict[str, Any]:
        return {
            "key": list(self.key),
            "kind": self.kind,
            "bytes": self.bytes,
            "loaded_at": self.loaded_at,
            "last_used": self.last_used,
            "loras": sorted(self.adapters),
            "depends_on": [list(k) for k in self.depends],
        }


def search_dirs() -> list[Path]:
    """The models roots (``$FERRY_ML_MODELS``, ``:``-separated), resolved."""
    return list(Roots.from_env().models)


def resolve(name: str, what: str = "model.base", marker: str = "model_index.json") -> Path:
    """The model folder ``name`` names under the models roots (:mod:`.paths`), holding
    ``marker``. Raises the uniform :class:`~.paths.NotAllowed` otherwise."""
    return Roots.from_env().model_folder(name, what, (marker,))[0]


def resolve_vae(name: str, what: str = "model.vae") -> tuple[Path, str | None]:
    """A VAE folder: an ``AutoencoderKL`` folder (``config.json``) or a pipeline's ``vae/``."""
    folder, marker = Roots.from_env().model_folder(name, what, ("config.json", "vae/config.json"))
    return folder, ("vae" if marker.startswith("vae/") else None)


CONTROLNET_CLASS = "ControlNetModel"


def _class_name(config: Path) -> str | None:
    try:
        loaded = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = loaded.get("_class_name") if isinstance(loaded, dict) else None
    return name if isinstance(name, str) else None


def resolve_controlnet(name: str, what: str = "conditioning.controlnet.model") -> Path:
    """A ControlNet folder: a ``ControlNetModel`` folder (``config.json``) or a pipeline's
    ``controlnet/``, under the models roots. Raises :class:`InvalidRequest`: the uniform
    refusal, or naming the class found (inside the roots) where a ControlNet was expected."""
    markers = ("config.json", "controlnet/config.json")
    folder, marker = Roots.from_env().model_folder(name, what, markers)
    found = folder / "controlnet" if marker.startswith("controlnet/") else folder
    kind = _class_name(found / "config.json")
    if kind != CONTROLNET_CLASS:
        raise InvalidRequest(
            f"{what}: {found} holds a {kind or 'model of unknown class'}, not a "
            f"{CONTROLNET_CLASS} (diffusers' SDXL ControlNet)"
        )
    return found


# The pipeline classes an upscaler folder's model_index.json may name (how each runs:
# ferry_sdxl.upscale.LEARNED).
UPSCALER_CLASSES = ("StableDiffusionUpscalePipeline", "StableDiffusionLatentUpscalePipeline")


def resolve_upscaler(name: str, what: str = "model") -> tuple[Path, str]:
    """An upscaler pipeline folder and its pipeline class (one of :data:`UPSCALER_CLASSES`).
    Raises :class:`InvalidRequest`: the uniform refusal, or naming the class found (inside the
    roots) where an upscaler was expected."""
    folder = resolve(name, what)
    kind = _class_name(folder / "model_index.json")
    if kind not in UPSCALER_CLASSES:
        known = " or ".join(UPSCALER_CLASSES)
        raise InvalidRequest(
            f"{what}: {folder} holds a {kind or 'pipeline of unknown class'}, not an upscaler "
            f"({known})"
        )
    return folder, kind


# The UNet settings that decide the shapes of the residuals a ControlNet adds to the UNet.
FIT_KEYS = (
    "in_channels",
    "block_out_channels",
    "layers_per_block",
    "cross_attention_dim",
    "addition_embed_type",
    "addition_time_embed_dim",
    "projection_class_embeddings_input_dim",
)


def _load(what: str, kind: str, cls: Any, folder: Path, **kw: Any) -> Any:
    """``cls.from_pretrained(folder, use_safetensors=True, **kw)``; a folder it cannot load
    (broken, partial, weights that are not safetensors) is ``invalid_request`` naming
    ``what`` (the reason, which may hold object reprs, goes to the log)."""
    try:
        return cls.from_pretrained(str(folder), use_safetensors=True, **kw)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        log.info("%s: cannot load the %s %s", what, kind, folder, exc_info=True)
        raise InvalidRequest(
            f"{what}: cannot load the {kind} {folder} ({type(exc).__name__}; safetensors "
            "weights are required)"
        ) from None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def check_fits(controlnet: Any, pipeline: Any, what: str, folder: Path) -> None:
    """Raises :class:`InvalidRequest` when ``controlnet`` cannot steer ``pipeline``'s UNet: a
    setting of :data:`FIT_KEYS` differs, or its control image embedding does not shrink the
    image to the latents' size (the VAE's scale factor)."""
    unet = pipeline.unet.config
    cn = controlnet.config
    for key in FIT_KEYS:
        theirs, ours = _plain(cn.get(key)), _plain(unet.get(key))
        if theirs != ours:
            raise InvalidRequest(
                f"{what}: the ControlNet {folder} does not fit the base model "
                f"({key} {theirs!r}, the base's UNet has {ours!r}): it was trained for "
                "another model"
            )
    shrink = 2 ** (len(cn.get("conditioning_embedding_out_channels") or ()) - 1)
    if shrink != pipeline.vae_scale_factor:
        raise InvalidRequest(
            f"{what}: the ControlNet {folder} shrinks the control image {shrink}x, the base "
            f"model's VAE {pipeline.vae_scale_factor}x: it was trained for another model"
        )


def _tensor_bytes(module: Any) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def module_bytes(pipeline: Any) -> int:
    """Parameter and buffer bytes of every torch module in ``pipeline``."""
    total = 0
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            total += _tensor_bytes(component)
    return total


def default_budget(info: devices.DeviceInfo) -> int:
    """The cache budget: ``$FERRY_ML_CACHE_BYTES``, else 60% of the device's memory."""
    raw = os.environ.get("FERRY_ML_CACHE_BYTES")
    if raw:
        return int(raw)
    total = info.total_memory or 8 * devices.GIB
    return int(total * 0.6)


# The base pipeline's components that a ControlNet pipeline takes over as they are.
CONTROLNET_PIPELINE_PARTS = (
    "vae",
    "text_encoder",
    "text_encoder_2",
    "tokenizer",
    "tokenizer_2",
    "unet",
    "scheduler",
    "feature_extractor",
    "image_encoder",
)


class ModelManager:
    """Loads and caches pipelines; evicts the least recently used beyond the byte budget."""

    def __init__(self, device: devices.DeviceInfo, budget: int | None = None) -> None:
        self.device = device
        self.budget = default_budget(device) if budget is None else budget
        self.cache: OrderedDict[tuple[str, ...], Loaded] = OrderedDict()
        # Told ``(kind, folder)`` just before a pipeline is loaded from disk (not when it
        # comes from the cache): a request reports its loading stage through it.
        self.on_load: Callable[[str, Path], None] | None = None

    @contextmanager
    def reporting(self, on_load: Callable[[str, Path], None]) -> Iterator[None]:
        """Calls ``on_load(kind, folder)`` before each load from disk while in the block."""
        before, self.on_load = self.on_load, on_load
        try:
            yield
        finally:
            self.on_load = before

    def _loading(self, kind: str, folder: Path) -> None:
        if self.on_load is not None:
            self.on_load(kind, folder)

    def used(self) -> int:
        return sum(e.bytes for e in self.cache.values())

    def _touch(self, entry: Loaded) -> Loaded:
        entry.last_used = time.time()
        self.cache.move_to_end(entry.key)
        return entry

    def _insert(self, entry: Loaded) -> Loaded:
        """Caches ``entry``, then evicts the least recently used entries beyond the budget,
        never ``entry`` itself nor an entry it depends on."""
        self.cache[entry.key] = entry
        keep = {entry.key, *entry.depends}
        while self.used() > self.budget:
            old_key = next((k for k in self.cache if k not in keep), None)
            if old_key is None:
                break
            log.info(
                "evicting %s (%d bytes) to fit the %d-byte budget",
                old_key,
                self.cache[old_key].bytes,
                self.budget,
            )
            self._drop(old_key)
        return entry

    def _drop(self, key: tuple[str, ...]) -> None:
        """Drops ``key`` and the entries that depend on it (a base's ControlNet pipelines)."""
        self.cache.pop(key, None)
        for other in [k for k, e in self.cache.items() if key in e.depends]:
            self.cache.pop(other, None)
        if self.device.kind == "cuda":
            torch.cuda.empty_cache()

    def base(
        self,
        name: str,
        vae: str | None = None,
        fields: tuple[str, str] = ("model.base", "model.vae"),
    ) -> Loaded:
        """The base pipeline for ``name`` (with ``vae`` replacing its VAE), loaded if needed;
        ``fields`` name the two in errors."""
        from diffusers import AutoencoderKL, StableDiffusionXLPipeline

        folder = resolve(name, fields[0])
        vae_folder = resolve_vae(vae, fields[1]) if vae else None
        key = ("base", str(folder), str(vae_folder[0]) if vae_folder else "")
        if key in self.cache:
            return self._touch(self.cache[key])
        dtype = devices.dtype_for(self.device)
        extra: dict[str, Any] = {}
        if vae_folder is not None:
            path, sub = vae_folder
            kw = {"subfolder": sub} if sub else {}
            extra["vae"] = _load(fields[1], "VAE", AutoencoderKL, path, dtype=dtype, **kw)
        started = time.perf_counter()
        self._loading("base", folder)
        pipe = _load(fields[0], "pipeline", StableDiffusionXLPipeline, folder, dtype=dtype, **extra)
        pipe, offloaded, sliced = self._place(pipe)
        log.info("loaded %s in %.2f s", folder, time.perf_counter() - started)
        entry = Loaded(key, "base", pipe, module_bytes(pipe), pipe.scheduler.config)
        entry.offloaded, entry.attention_slicing = offloaded, sliced
        return self._insert(entry)

    def refiner(self, name: str, what: str = "model.refiner") -> Loaded:
        """The refiner pipeline for ``name`` (an SDXL img2img pipeline), loaded if needed."""
        from diffusers import StableDiffusionXLImg2ImgPipeline

        folder = resolve(name, what)
        key = ("refiner", str(folder))
        if key in self.cache:
            return self._touch(self.cache[key])
        dtype = devices.dtype_for(self.device)
        self._loading("refiner", folder)
        pipe = _load(what, "pipeline", StableDiffusionXLImg2ImgPipeline, folder, dtype=dtype)
        pipe, offloaded, sliced = self._place(pipe)
        entry = Loaded(key, "refiner", pipe, module_bytes(pipe), pipe.scheduler.config)
        entry.offloaded, entry.attention_slicing = offloaded, sliced
        return self._insert(entry)

    def controlnet(
        self, base: Loaded, name: str, what: str = "conditioning.controlnet.model"
    ) -> Loaded:
        """The ControlNet pipeline of ``base`` with the ControlNet ``name``, loaded if needed.

        A ``StableDiffusionXLControlNetPipeline`` built on ``base``'s own modules (text
        encoders, UNet, VAE: nothing is copied, LoRAs and memory savers set on the base apply
        to it too) plus the ControlNet, in the base's dtype, on its device. When the base was
        placed with model CPU offload, the new pipeline is offloaded too (diffusers keeps the
        ControlNet out of the offload sequence: it runs beside the UNet at every step)."""
        from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

        folder = resolve_controlnet(name, what)
        key = ("controlnet", *base.key[1:], str(folder))
        if key in self.cache:
            self._touch(base)
            return self._touch(self.cache[key])
        dtype = devices.dtype_for(self.device)
        started = time.perf_counter()
        self._loading("controlnet", folder)
        model = _load(what, "ControlNet", ControlNetModel, folder, dtype=dtype)
        check_fits(model, base.pipeline, what, folder)
        parts = base.pipeline.components
        pipe = StableDiffusionXLControlNetPipeline(
            **{k: parts[k] for k in CONTROLNET_PIPELINE_PARTS if k in parts},
            controlnet=model,
            force_zeros_for_empty_prompt=base.pipeline.config.get(
                "force_zeros_for_empty_prompt", True
            ),
            add_watermarker=getattr(base.pipeline, "watermark", None) is not None,
        )
        pipe.set_progress_bar_config(disable=True)
        if base.offloaded:
            pipe.enable_model_cpu_offload(gpu_id=self.device.index)
        else:
            model.to(devices.torch_device(self.device))
        if base.attention_slicing:
            pipe.enable_attention_slicing()  # the ControlNet's attention too
        log.info("loaded the ControlNet %s in %.2f s", folder, time.perf_counter() - started)
        entry = Loaded(
            key,
            "controlnet",
            pipe,
            _tensor_bytes(model),
            base.scheduler_config,
            offloaded=base.offloaded,
            attention_slicing=base.attention_slicing,
            depends=(base.key,),
        )
        return self._insert(entry)

    def upscaler(self, name: str, what: str = "model") -> Loaded:
        """The upscaler pipeline for ``name`` (diffusers' x4 upscaler or x2 latent upscaler,
        as its ``model_index.json`` says), loaded if needed, with the memory savers its size
        calls for."""
        import diffusers

        folder, class_name = resolve_upscaler(name, what)
        key = ("upscaler", str(folder))
        if key in self.cache:
            return self._touch(self.cache[key])
        dtype = devices.dtype_for(self.device)
        started = time.perf_counter()
        self._loading("upscaler", folder)
        pipe = _load(what, "upscaler", getattr(diffusers, class_name), folder, dtype=dtype)
        pipe, offloaded, sliced = self._place(pipe)
        log.info("loaded the upscaler %s in %.2f s", folder, time.perf_counter() - started)
        entry = Loaded(key, "upscaler", pipe, module_bytes(pipe), pipe.scheduler.config)
        entry.offloaded, entry.attention_slicing = offloaded, sliced
        return self._insert(entry)

    def _place(self, pipe: Any) -> tuple[Any, bool, bool]:
        """``pipe`` on the device with the memory savers its size calls for; whether it was
        placed with model CPU offload, and whether attention slicing is on."""
        pipe.set_progress_bar_config(disable=True)
        need = module_bytes(pipe) * 2
        settings = devices.memory_settings(self.device, need)
        offloaded = settings.cpu_offload and self.device.kind == "cuda"
        if offloaded:
            pipe.enable_model_cpu_offload(gpu_id=self.device.index)
        else:
            pipe = pipe.to(devices.torch_device(self.device))
        if settings.attention_slicing:
            pipe.enable_attention_slicing()
        if settings.vae_slicing and hasattr(pipe, "enable_vae_slicing"):
            pipe.vae.enable_slicing()
        if settings.vae_tiling:
            pipe.vae.enable_tiling()
        return pipe, offloaded, settings.attention_slicing

    def apply_loras(self, entry: Loaded, loras: list[tuple[str, float]]) -> None:
        """Activates exactly ``loras`` (path, weight) on ``entry``'s pipeline, loading new ones.

        A LoRA is a folder (holding ``pytorch_lora_weights.safetensors``) or a
        ``.safetensors`` file under the models roots; one diffusers cannot load (another kind
        of file, another model's LoRA) is ``invalid_request`` naming its field."""
        pipe = entry.pipeline
        if not loras:
            if entry.adapters:
                pipe.disable_lora()
            return
        roots = Roots.from_env()
        found = [
            roots.model_entry(path, f"conditioning.loras.{i}.path")
            for i, (path, _) in enumerate(loras)
        ]
        names = []
        for i, ((path, _), where) in enumerate(zip(loras, found, strict=True)):
            key = str(where)
            if key not in entry.adapters:
                name = f"lora{len(entry.adapters)}"
                self._load_lora(pipe, where, name, f"conditioning.loras.{i}.path")
                entry.adapters[key] = name
            names.append(entry.adapters[key])
        pipe.enable_lora()
        pipe.set_adapters(names, adapter_weights=[w for _, w in loras])

    @staticmethod
    def _load_lora(pipe: Any, where: Path, name: str, field: str) -> None:
        kw: dict[str, Any] = {"use_safetensors": True}
        if is_file(where):
            kw["weight_name"] = where.name
            where = where.parent
        try:
            pipe.load_lora_weights(str(where), adapter_name=name, **kw)
        except Exception as exc:  # diffusers and peft raise many types for a bad file
            log.info("%s: cannot load the LoRA %s", field, where, exc_info=True)
            try:
                pipe.delete_adapters(name)  # whatever was loaded of it
            except Exception:
                log.debug("%s: no adapter %s to delete", field, name, exc_info=True)
            raise InvalidRequest(
                f"{field}: not a LoRA this model can load (diffusers' format, safetensors: "
                f"{type(exc).__name__})"
            ) from None
        loaded = {a for adapters in pipe.get_list_adapters().values() for a in adapters}
        if name not in loaded:
            raise InvalidRequest(
                f"{field}: not a LoRA this model can load (no weights of it fit the model)"
            )

    def unload(self, name: str | None = None) -> list[list[str]]:
        """Drops the cached pipelines whose folder is ``name`` (all when ``None``)."""
        if name is None:
            dropped = list(self.cache)
        else:
            targets = {str(p) for p in Roots.inside(name, Roots.from_env().models)}
            dropped = [k for k in self.cache if targets & set(k)]
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
        if not isinstance(data, dict):
            raise InvalidRequest("base: required (a local SDXL folder), or upscaler")
        for name in ("base", "vae", "refiner", "controlnet", "upscaler"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise InvalidRequest(f"{name}: expected a model folder or name")
        with_base = [n for n in ("vae", "refiner", "controlnet") if data.get(n) is not None]
        if data.get("base") is None and (with_base or data.get("upscaler") is None):
            also = f" with {', '.join(with_base)}" if with_base else ", or upscaler"
            raise InvalidRequest(f"base: required (a local SDXL folder){also}")
        started = time.perf_counter()
        info = self.manager.device
        wanted = [n for n in ("base", "refiner", "controlnet", "upscaler") if data.get(n)]
        ctx.progress(0.0, "initialization", f"{len(wanted)} to load: {', '.join(wanted)}")
        devices.status_change(ctx, "loading", info)
        done = 0

        def on_load(kind: str, folder: Path) -> None:
            ctx.progress(done / len(wanted), "loading", f"loading the {kind} {folder.name}")

        entries = []
        try:
            with self.manager.reporting(on_load):
                if isinstance(data.get("base"), str):
                    base = self.manager.base(data["base"], data.get("vae"), ("base", "vae"))
                    entries.append(base)
                    done += 1
                    if isinstance(data.get("refiner"), str):
                        entries.append(self.manager.refiner(data["refiner"], "refiner"))
                        done += 1
                    if isinstance(data.get("controlnet"), str):
                        entries.append(
                            self.manager.controlnet(base, data["controlnet"], "controlnet")
                        )
                        done += 1
                if isinstance(data.get("upscaler"), str):
                    entries.append(self.manager.upscaler(data["upscaler"], "upscaler"))
                    done += 1
        finally:
            devices.status_change(ctx, "idle", info)
        ctx.progress(1.0, "loading", f"{len(entries)} loaded")
        return {
            "loaded": [e.describe() for e in entries],
            "seconds": round(time.perf_counter() - started, 3),
            "metrics": devices.telemetry(info),
        }

    def unload(self, request: Request, ctx: Context) -> dict[str, Any]:
        data = request.data if isinstance(request.data, dict) else {}
        names = [data[k] for k in ("base", "upscaler") if isinstance(data.get(k), str)]
        if not names:
            return {"unloaded": self.manager.unload(None)}
        return {"unloaded": [key for name in names for key in self.manager.unload(name)]}

    def list(self, request: Request, ctx: Context) -> dict[str, Any]:
        return self.manager.describe()

    def status(self) -> dict[str, Any]:
        return {"loaded": len(self.manager.cache), "used_bytes": self.manager.used()}

    def cleanup(self) -> None:
        self.manager.unload(None)
