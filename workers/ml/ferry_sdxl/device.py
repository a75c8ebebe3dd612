"""The device manager: which accelerator to use, its memory, and memory settings.

Detects CUDA, Apple's MPS, DirectML (when ``torch_directml`` imports) and the CPU. Memory
settings (attention slicing, VAE slicing/tiling, model CPU offload) are chosen from the free
memory of the chosen device and an estimate of what a generation needs.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
from ferry_worker import Context, Request

GIB = 1 << 30


@dataclass(frozen=True)
class DeviceInfo:
    """One device torch can use."""

    kind: str  # "cuda", "mps", "directml", "cpu"
    name: str
    index: int
    total_memory: int | None
    free_memory: int | None


@dataclass(frozen=True)
class MemorySettings:
    """What to switch on in a pipeline given the free memory."""

    attention_slicing: bool
    vae_slicing: bool
    vae_tiling: bool
    cpu_offload: bool
    reason: str


def _host_memory() -> tuple[int | None, int | None]:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return fields.get("MemTotal"), fields.get("MemAvailable")
    except (OSError, ValueError, IndexError):
        pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
        size = os.sysconf("SC_PAGE_SIZE") if pages is not None else None
        return (pages * size if pages and size else None), None


def list_devices() -> list[DeviceInfo]:
    """Every device found, best first; the CPU is always last."""
    found: list[DeviceInfo] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            found.append(DeviceInfo("cuda", torch.cuda.get_device_name(i), i, total, free))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        total, free = _host_memory()  # unified memory
        found.append(DeviceInfo("mps", "Apple MPS", 0, total, free))
    if importlib.util.find_spec("torch_directml") is not None:
        import torch_directml

        for i in range(torch_directml.device_count()):
            found.append(DeviceInfo("directml", str(torch_directml.device_name(i)), i, None, None))
    total, free = _host_memory()
    found.append(DeviceInfo("cpu", "cpu", 0, total, free))
    return found


def choose(requested: str | None = None) -> DeviceInfo:
    """The device to run on: ``requested`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...) or the
    best found. ``FERRY_ML_DEVICE`` overrides the default."""
    want = requested or os.environ.get("FERRY_ML_DEVICE")
    devices = list_devices()
    if not want:
        return devices[0]
    kind, _, index = want.partition(":")
    for d in devices:
        if d.kind == kind and (not index or str(d.index) == index):
            return d
    raise ValueError(f"device {want!r} is not available (found: {[d.kind for d in devices]})")


def torch_device(info: DeviceInfo) -> Any:
    """The ``torch.device`` (or DirectML device object) for ``info``."""
    if info.kind == "directml":
        import torch_directml

        return torch_directml.device(info.index)
    if info.kind == "cuda":
        return torch.device("cuda", info.index)
    return torch.device(info.kind)


def memory_settings(info: DeviceInfo, need_bytes: int) -> MemorySettings:
    """Memory savers for a job needing about ``need_bytes`` on ``info``'s free memory."""
    free = info.free_memory
    if free is None:
        return MemorySettings(True, True, False, False, "free memory unknown: slicing on")
    if info.kind == "cpu":
        tight = free < 2 * need_bytes
        return MemorySettings(tight, tight, tight, False, f"cpu, {free // GIB} GiB free")
    if free >= 2 * need_bytes:
        return MemorySettings(False, False, False, False, f"{free // GIB} GiB free: no savers")
    if free >= need_bytes:
        return MemorySettings(True, True, False, False, f"{free // GIB} GiB free: slicing")
    return MemorySettings(True, True, True, True, f"{free // GIB} GiB free: offload to CPU")


def dtype_for(info: DeviceInfo) -> Any:
    """float16 on accelerators, float32 on the CPU."""
    return torch.float32 if info.kind == "cpu" else torch.float16


def as_dict(info: DeviceInfo) -> dict[str, Any]:
    return asdict(info)


class DeviceInstructor:
    """``device.list``, ``device.info``."""

    name = "device"

    def __init__(self) -> None:
        self.device = choose()

    def operations(self) -> dict[str, Any]:
        return {"device.list": self.list, "device.info": self.info}

    def list(self, request: Request, ctx: Context) -> dict[str, Any]:
        return {"devices": [as_dict(d) for d in list_devices()]}

    def info(self, request: Request, ctx: Context) -> dict[str, Any]:
        need = 8 * GIB
        settings = memory_settings(self.device, need)
        return {
            "device": as_dict(self.device),
            "dtype": str(dtype_for(self.device)).removeprefix("torch."),
            "torch": torch.__version__,
            "memory_settings": asdict(settings),
        }

    def status(self) -> dict[str, Any]:
        return {"device": self.device.kind, "name": self.device.name}

    def cleanup(self) -> None:
        if self.device.kind == "cuda":
            torch.cuda.empty_cache()
