"""Encoding images for answers, and reading images from requests."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InvalidRequest

FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}


def encode(image: Any, fmt: str = "png", quality: int = 95) -> bytes:
    """``image`` (a PIL image) as ``fmt`` bytes."""
    pil_format = FORMATS.get(fmt.lower())
    if pil_format is None:
        raise InvalidRequest(f"format: unknown image format {fmt!r} (known: {sorted(FORMATS)})")
    out = io.BytesIO()
    if pil_format == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    kwargs: dict[str, Any] = {} if pil_format == "PNG" else {"quality": quality}
    image.save(out, format=pil_format, **kwargs)
    return out.getvalue()


def decode(data: bytes, what: str = "attachments[0]") -> Any:
    """An image from encoded bytes (PNG, JPEG, WebP, ...)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # PIL raises many types for bad input
        raise InvalidRequest(f"{what}: not a readable image ({exc})") from exc
    return image


def to_rgb(image: Any) -> Any:
    """``image`` as 8-bit RGB: transparency laid on black, 16-bit and float images (depth maps
    are often saved so) scaled from their own minimum and maximum to 0..255."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
        return Image.fromarray(np.rint(scaled).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        black = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")
