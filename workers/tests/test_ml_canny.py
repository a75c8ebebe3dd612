"""The worker's Canny edge detector (:mod:`ferry_sdxl.canny`) and control image set-up.

OpenCV is not installed, so these check the properties that define OpenCV's ``cv2.Canny``
(aperture 3, L1 gradient, strict thresholds, 8-connected hysteresis, per-channel maximum) on
images whose answer is known by hand. Needs numpy and PIL (the ML environment).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from ferry_sdxl import canny, images
from ferry_sdxl.controlnet import control_image
from ferry_sdxl.request import ControlNet
from ferry_worker import FerryError
from PIL import Image


def step(height: int, left: int = 0, right: int = 50, at: int = 8) -> Any:
    """A 16x16 grey image: ``left`` up to column ``at``, ``right`` from there."""
    pixels = np.full((16, 16), left, np.uint8)
    pixels[:, at:] = right
    return pixels


def test_a_flat_image_has_no_edges() -> None:
    assert not canny.edges(np.full((20, 30, 3), 128, np.uint8), 0, 0).any()


def test_a_vertical_step_gives_one_column_of_edges_where_it_is() -> None:
    # Sobel of a 50-high step: |dx| = 4 * 50 = 200 in the two columns beside it; non-maximum
    # suppression keeps the first (c > left, c >= right), so column 7.
    found = canny.edges(step(16), 100, 150)
    assert found[:, 7].all()
    assert found.sum() == 16


def test_thresholds_are_strict_as_opencv_s() -> None:
    assert canny.edges(step(16), 100, 199).any()  # 200 > 199: strong
    assert not canny.edges(step(16), 100, 200).any()  # 200 is not > 200: never strong
    assert not canny.edges(step(16), 200, 200).any()


def test_hysteresis_keeps_weak_edges_connected_to_strong_ones_only() -> None:
    pixels = np.zeros((24, 24), np.uint8)
    pixels[:, 12:] = 30  # a weak step all along (magnitude 120) ...
    pixels[:6, 12:] = 80  # ... strong (320) at the top, so the whole column is kept
    pixels[18:, :4] = 30  # an isolated weak corner far away
    found = canny.edges(pixels, 100, 300)
    assert found[:5, 11].all()  # strong
    assert found[8:, 11].all()  # weak, joined to the strong part (around the corner at row 6)
    assert not found[:, :8].any()  # weak, alone
    # Without the strong part nothing stays.
    pixels[:6, 12:] = 30
    assert not canny.edges(pixels, 100, 300).any()


def test_colour_edges_of_equal_brightness_are_found_per_channel() -> None:
    # Red against green of nearly equal luminance: a grey conversion loses most of the step,
    # OpenCV (and this) take the channel with the largest gradient.
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[:, :8] = (150, 0, 0)
    pixels[:, 8:] = (0, 77, 0)
    grey = np.asarray(Image.fromarray(pixels).convert("L"))
    assert not canny.edges(grey, 100, 200).any()
    assert canny.edges(pixels, 100, 200)[:, 7].all()


def test_a_diagonal_edge_follows_the_boundary_as_a_staircase() -> None:
    yy, xx = np.mgrid[:32, :32]
    pixels = np.where(xx > yy, 200, 0).astype(np.uint8)
    found = canny.edges(pixels, 100, 200)
    for y in range(1, 30):  # the pixels at y and y + 1 on row y: a 4-connected staircase
        assert np.nonzero(found[y])[0].tolist() == [y, y + 1], (y, found[y])


def test_connected_to_follows_long_winding_paths() -> None:
    # A one-pixel spiral: every part of it joins the seed at its centre.
    mask = np.zeros((41, 41), bool)
    y = x = 20
    dy, dx, length = 0, 1, 1
    while 0 <= y < 41 and 0 <= x < 41:
        for _ in range(2):
            for _ in range(length):
                if 0 <= y < 41 and 0 <= x < 41:
                    mask[y, x] = True
                y, x = y + dy, x + dx
            dy, dx = dx, -dy
        length += 2
    seeds = np.zeros_like(mask)
    seeds[20, 20] = True
    assert (canny.connected_to(seeds, mask) == mask).all()
    assert not canny.connected_to(np.zeros_like(mask), mask).any()


def test_canny_answers_white_edges_on_black() -> None:
    out = canny.canny(Image.fromarray(step(16)).convert("RGB"), 100, 150)
    assert out.mode == "L" and set(np.unique(np.asarray(out)).tolist()) == {0, 255}


def test_to_rgb_scales_16_bit_maps_and_lays_transparency_on_black() -> None:
    depth = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    rgb = np.asarray(images.to_rgb(Image.fromarray(depth)))
    assert rgb.shape == (2, 2, 3)
    assert rgb[:, :, 0].tolist() == [[0, 64], [128, 255]]
    clear = Image.new("RGBA", (2, 2), (255, 255, 255, 0))
    assert np.asarray(images.to_rgb(clear)).max() == 0


def spec(**over: Any) -> ControlNet:
    fields: dict[str, Any] = {"type": "canny", "model": "m", "image": 0, "preprocess": True}
    return ControlNet(**{**fields, **over})


def encoded(pixels: Any) -> bytes:
    import io

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_control_image_is_resized_to_the_output_then_edged() -> None:
    made = control_image(spec(), [encoded(step(16, right=255))], 64, 32)
    assert made.image.size == (64, 32) and made.image.mode == "RGB"
    assert made.source_size == (16, 16) and made.source == "attachment 0"
    edges = np.asarray(made.image)[:, :, 0] > 0
    assert edges.any() and edges.sum() <= 32 * 2  # a thin line at the output size
    ready = control_image(spec(preprocess=False), [encoded(step(16))], 64, 32)
    assert not ready.preprocessed and np.asarray(ready.image).max() == 50  # as it came


@pytest.mark.parametrize(
    ("image", "attachments", "expected"),
    [
        (1, [b""], "attachment 1 is not in the request"),
        (0, [b"\x89PNG\r\n\x1a\n broken"], "not a readable image"),
        ("/does/not/exist.png", [], "conditioning.controlnet.image: not found or not allowed"),
    ],
)
def test_control_image_errors_name_the_field(
    image: int | str, attachments: list[bytes], expected: str
) -> None:
    with pytest.raises(FerryError) as raised:
        control_image(spec(image=image), attachments, 64, 64)
    assert raised.value.code == "invalid_request"
    assert raised.value.message.startswith("conditioning.controlnet.image"), raised.value.message
    assert expected in raised.value.message
