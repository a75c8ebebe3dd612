"""Canny edge detection in numpy: the control map of a ``canny`` ControlNet, made by the worker.

The SDXL canny ControlNets are trained on maps from OpenCV's ``cv2.Canny(rgb, low, high)``
(aperture 3, L1 gradient). OpenCV is not a dependency of the worker, so this module computes
the same map with numpy, step by step as OpenCV does:

1. 3x3 Sobel derivatives ``dx``, ``dy`` of each colour channel, borders replicated;
2. the magnitude ``|dx| + |dy|``; with several channels, each pixel takes the channel of the
   largest magnitude (the first on a tie) and that channel's derivatives;
3. non-maximum suppression across the edge: the gradient direction is put in one of four
   sectors with OpenCV's fixed-point tangents of 22.5 and 67.5 degrees, and a pixel survives
   when its magnitude beats its two neighbours along the gradient (outside the image counts as
   zero);
4. hysteresis: surviving pixels above ``high`` are edges, and so are surviving pixels above
   ``low`` that are 8-connected to an edge through surviving pixels above ``low`` (the
   connected parts are found by union by hooking and pointer jumping, see
   :func:`connected_to`).

The result is bit for bit OpenCV's (checked against ``cv2.Canny`` of opencv-python-headless
5.0 on random colour and grey scenes while writing this; OpenCV is not needed to run it).

>>> import numpy as np
>>> from PIL import Image
>>> square = np.zeros((16, 16), np.uint8)
>>> square[4:12, 4:12] = 255
>>> found = np.asarray(canny(Image.fromarray(square), 100, 200))
>>> sorted(set(found.ravel().tolist()))
[0, 255]
>>> bool(found[:, :3].any()), bool(found[8, 3] or found[8, 4])
(False, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from . import images

# OpenCV's tangents in 15-bit fixed point: |dy| < |dx| tan(22.5) is a horizontal gradient,
# |dy| > |dx| tan(67.5) a vertical one, anything between a diagonal.
SHIFT = 15
TG22 = 13573  # round(tan(22.5 deg) * 2**15)


def _sobel(channel: Any) -> tuple[Any, Any]:
    """``dx`` and ``dy`` of a 2-D ``int32`` array (3x3 Sobel, borders replicated)."""
    p = np.pad(channel, 1, mode="edge")
    rows = p[:-2] + 2 * p[1:-1] + p[2:]  # vertical smoothing for dx
    cols = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]  # horizontal smoothing for dy
    return rows[:, 2:] - rows[:, :-2], cols[2:] - cols[:-2]


def gradients(pixels: Any) -> tuple[Any, Any, Any]:
    """``(dx, dy, magnitude)`` of an ``(h, w)`` or ``(h, w, channels)`` ``uint8`` array."""
    data = pixels.astype(np.int32)
    if data.ndim == 2:
        data = data[:, :, None]
    pairs = [_sobel(data[:, :, c]) for c in range(data.shape[2])]
    dxs = np.stack([p[0] for p in pairs])
    dys = np.stack([p[1] for p in pairs])
    mags = np.abs(dxs) + np.abs(dys)
    best = np.argmax(mags, axis=0)[None]  # the first channel of the largest magnitude
    dx = np.take_along_axis(dxs, best, axis=0)[0]
    dy = np.take_along_axis(dys, best, axis=0)[0]
    mag = np.take_along_axis(mags, best, axis=0)[0]
    return dx, dy, mag


def suppress(dx: Any, dy: Any, mag: Any) -> Any:
    """Where ``mag`` is a maximum across the edge (OpenCV's non-maximum suppression)."""
    m = np.pad(mag, 1)  # zeros outside the image
    c = m[1:-1, 1:-1]
    ax = np.abs(dx).astype(np.int64)
    ay = np.abs(dy).astype(np.int64) << SHIFT
    tg22x = ax * TG22
    tg67x = tg22x + (ax << (SHIFT + 1))
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg67x)
    same_sign = (dx ^ dy) >= 0  # gradient along the main diagonal (y grows downwards)
    across_h = (c > m[1:-1, :-2]) & (c >= m[1:-1, 2:])
    across_v = (c > m[:-2, 1:-1]) & (c >= m[2:, 1:-1])
    across_d = np.where(
        same_sign,
        (c > m[:-2, :-2]) & (c > m[2:, 2:]),
        (c > m[:-2, 2:]) & (c > m[2:, :-2]),
    )
    return np.where(horizontal, across_h, np.where(vertical, across_v, across_d))


def connected_to(seeds: Any, mask: Any) -> Any:
    """The pixels of ``mask`` 8-connected within ``mask`` to a pixel of ``seeds``.

    Works on the pixels of ``mask`` only (a few percent of an image's pixels are edge
    candidates): each links to its right, lower-left, lower and lower-right neighbours in
    ``mask``, and the parts are found by hooking and pointer jumping. Every pixel starts as its
    own root; each round, every root linked to a smaller root takes the smallest as its parent,
    then every pixel follows parents up to its root. A round joins at least two parts, and
    when no link joins two roots, each part has one.
    """
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    count = len(ys)
    index = np.full((h + 2, w + 2), -1, dtype=np.int64)
    index[ys + 1, xs + 1] = np.arange(count)
    links = []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        other = index[ys + 1 + dy, xs + 1 + dx]
        linked = other >= 0
        links.append((np.nonzero(linked)[0], other[linked]))
    a = np.concatenate([pair[0] for pair in links])
    b = np.concatenate([pair[1] for pair in links])
    parent = np.arange(count)
    while True:
        ra, rb = parent[a], parent[b]
        apart = ra != rb
        if not apart.any():
            break
        ra, rb = ra[apart], rb[apart]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:  # pointer jumping: every pixel to its root
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
    keep = np.zeros(count, dtype=bool)
    keep[parent[seeds[ys, xs]]] = True
    result = np.zeros((h, w), dtype=bool)
    result[ys, xs] = keep[parent]
    return result


def edges(pixels: Any, low: float, high: float) -> Any:
    """The boolean edge map of an ``(h, w)`` or ``(h, w, channels)`` ``uint8`` array."""
    if low > high:
        low, high = high, low
    dx, dy, mag = gradients(pixels)
    candidates = suppress(dx, dy, mag) & (mag > low)
    return connected_to(candidates & (mag > high), candidates)


def canny(image: Any, low: float = 100, high: float = 200) -> Any:
    """The Canny edge map of a PIL image (as RGB, see :func:`images.to_rgb`): mode ``L``,
    255 on edges, 0 elsewhere."""
    found = edges(np.asarray(images.to_rgb(image)), low, high)
    return Image.fromarray(np.where(found, 255, 0).astype(np.uint8))
