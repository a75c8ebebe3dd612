"""Encoding images for answers, and reading images from requests.

Decoding is bounded: only the formats of :data:`DECODERS` (never EPS, which runs
Ghostscript), and at most ``FERRY_ML_MAX_IMAGE_PIXELS`` pixels (64 Mpx by default), checked
from the header before any pixel is decoded (PIL's decompression-bomb guard, at the same
bound, stays on as well).
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

import numpy as np
from ferry_worker import InvalidRequest
from PIL import Image

FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}

# The formats an input image may be in.
DECODERS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")

MAX_PIXELS_ENV = "FERRY_ML_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 8192 * 8192


def max_pixels() -> int:
    """The most pixels an input image may have: ``$FERRY_ML_MAX_IMAGE_PIXELS``, else 64 Mpx."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{MAX_PIXELS_ENV}: expected a positive number of pixels, not {raw!r}")
    return value


# PIL's own guard (a warning above it, an error above twice it): on, at the same bound.
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS


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
    """An image from encoded bytes (one of :data:`DECODERS`), of at most :func:`max_pixels`
    pixels; raises :class:`InvalidRequest` naming ``what`` otherwise."""
    limit = max_pixels()
    # PIL's guard is a module global: set for this decode, then put back, so a limit set
    # here (e.g. a low one from the environment) does not outlive the call.
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=DECODERS)
            pixels = image.width * image.height
            if pixels > limit:  # from the header: nothing is decoded yet
                raise InvalidRequest(
                    f"{what}: {image.width}x{image.height}, more than the {limit} pixels an "
                    f"input image may have ({MAX_PIXELS_ENV})"
                )
            image.load()
    except InvalidRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequest(
            f"{what}: more than the {limit} pixels an input image may have ({MAX_PIXELS_ENV})"
        ) from None
    except Exception as exc:  # PIL raises many types for bad input; their text holds reprs
        raise InvalidRequest(
            f"{what}: not a readable image ({type(exc).__name__}; PNG, JPEG, WebP, BMP, GIF "
            "or TIFF)"
        ) from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous
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
