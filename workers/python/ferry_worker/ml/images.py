"""Encoding images for answers, and reading images from requests."""

from __future__ import annotations

import io
from typing import Any

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
