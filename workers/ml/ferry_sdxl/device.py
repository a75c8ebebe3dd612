"""The device manager: which accelerator to use, its memory, and memory settings.

Detects CUDA, Apple's MPS, DirectML (when ``torch_directml`` imports) and the CPU. Memory
settings (attention slicing, VAE slicing/tiling, model CPU offload) are chosen from the free
memory of the chosen device and an estimate of what a generation needs.

The device is, first, the one the host assigned (``FERRY_DEVICE``, from the pool's
``devices``; for ``cuda:N`` the host also sets ``CUDA_VISIBLE_DEVICES=N``, so that GPU is
the only one visible, as CUDA device 0), then ``FERRY_ML_DEVICE``, then the best found.

Telemetry (:func:`telemetry`): memory in use (the CUDA device's memory this process holds,
else the process's resident set) and, where the device reports it, GPU utilization (CUDA
with ``pynvml`` installed; absent otherwise, never a made-up zero).
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


ASSIGNED_ENV = "FERRY_DEVICE"
"""The device the host assigned this worker (``cuda:1``, ``cpu``, ...), unset when none."""


def assigned() -> str | None:
    """The host's name of the device it assigned this worker (``FERRY_DEVICE``), if any."""
    return os.environ.get(ASSIGNED_ENV, "").strip() or None


def requested_device() -> str | None:
    """The device asked for, in this process's own numbering: the host's assignment, then
    ``FERRY_ML_DEVICE``. An assigned ``cuda:N`` that the host made the only visible GPU
    (``CUDA_VISIBLE_DEVICES=N``) is this process's ``cuda:0``."""
    host = assigned()
    if host is None:
        return os.environ.get("FERRY_ML_DEVICE") or None
    kind, _, index = host.partition(":")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if kind == "cuda" and index and visible == index:
        return "cuda:0"
    return host


def choose(requested: str | None = None) -> DeviceInfo:
    """The device to run on: ``requested`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...), else
    :func:`requested_device`, else the best found."""
    want = requested or requested_device()
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


def device_name(info: DeviceInfo) -> str:
    """The device as reports name it: the host's name when it assigned one, else
    ``kind:index`` (``cpu`` for the CPU)."""
    host = assigned()
    if host is not None:
        return host
    return "cpu" if info.kind == "cpu" else f"{info.kind}:{info.index}"


def process_rss_mb() -> float | None:
    """This process's resident memory in MiB (``VmRSS``; the peak where that is unknown)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (1 << 20 if sys.platform == "darwin" else 1024), 1)
    except (ImportError, OSError):
        return None


def memory_usage_mb(info: DeviceInfo) -> float | None:
    """Memory in use, MiB: on CUDA, the device memory this process holds (torch's reserved
    memory); elsewhere the process's resident set."""
    if info.kind == "cuda":
        reserved = int(torch.cuda.memory_reserved(info.index))
        return round(reserved / (1 << 20), 1)
    return process_rss_mb()


def gpu_utilization(info: DeviceInfo) -> float | None:
    """GPU utilization in percent where the device reports it: CUDA with ``pynvml``
    installed. ``None`` otherwise (not zero: unknown is not idle)."""
    if info.kind != "cuda" or importlib.util.find_spec("pynvml") is None:
        return None
    try:
        return float(torch.cuda.utilization(info.index))
    except Exception:  # noqa: BLE001 - NVML errors are many and none is the request's
        return None


def telemetry(info: DeviceInfo) -> dict[str, Any]:
    """``{"device", "memory_usage_mb", "gpu_utilization"}``, the last only where known: the
    ``metrics`` of replies and the data of ``status_change`` events."""
    out: dict[str, Any] = {"device": device_name(info), "memory_usage_mb": memory_usage_mb(info)}
    utilization = gpu_utilization(info)
    if utilization is not None:
        out["gpu_utilization"] = utilization
    return out


def status_change(ctx: Context, status: str, info: DeviceInfo) -> None:
    """Sends a ``status_change`` event about this worker (its id as the host named it,
    ``status``, and :func:`telemetry`): the host keeps it as the worker's telemetry."""
    data: dict[str, Any] = {"worker_id": os.environ.get("FERRY_WORKER_ID"), "status": status}
    data.update(telemetry(info))
    ctx.event("status_change", data)


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
            "assigned": assigned(),
            "telemetry": telemetry(self.device),
            "dtype": str(dtype_for(self.device)).removeprefix("torch."),
            "torch": torch.__version__,
            "memory_settings": asdict(settings),
        }

    def status(self) -> dict[str, Any]:
        return {
            "device": self.device.kind,
            "name": self.device.name,
            "assigned": assigned(),
            **{k: v for k, v in telemetry(self.device).items() if k != "device"},
        }

    def cleanup(self) -> None:
        if self.device.kind == "cuda":
            torch.cuda.empty_cache()
