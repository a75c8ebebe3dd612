"""ControlNet conditioning: the control image of a request, and what the worker offers.

A request's ``conditioning.controlnet`` names a ControlNet model, its type (``canny``,
``depth``, ``pose``) and a control image, one of the request's attachments (its index, or
``{"attachment": index}``) or a path. The
image is read, made 8-bit RGB (:func:`images.to_rgb`) and resized to the output size (an
ordinary image bicubically, a ready map bilinearly, which keeps its values); a path must name
an image file under the ``$FERRY_ML_INPUTS`` roots (:mod:`.paths`). Then:

- ``canny`` with ``preprocess`` (its default): the image is an ordinary picture and the worker
  computes its Canny edge map (:mod:`.canny`, OpenCV's algorithm in numpy), after resizing, so
  the edges are one pixel wide at the output size;
- ``canny`` without ``preprocess``: the image is a ready edge map, used as it is;
- ``depth`` and ``pose``: the image is a ready control map (a depth map, near bright; an
  OpenPose skeleton drawing). Making one from a photo needs an annotator model (a depth or
  pose estimator), and none is available offline, so a request with ``preprocess: true`` is
  refused (:func:`ferry_sdxl.request.parse`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ferry_worker import InvalidRequest
from PIL import Image

from . import canny, images, models
from .paths import Roots, is_dir, refuse
from .request import ANNOTATORS, CONTROLNET_TYPES, PREPROCESSORS, ControlNet

FIELD = "conditioning.controlnet.image"

# What each type's control image is, for `conditioning.controlnet_types`.
CONTROL_IMAGES = {
    "canny": "an ordinary image, whose Canny edge map the worker computes (preprocess true, the "
    "default), or a ready edge map, white edges on black (preprocess false)",
    "depth": "a ready depth map, grey levels with near bright (as MiDaS or DPT make); 16-bit "
    "and float images are scaled from their own range",
    "pose": "a ready OpenPose skeleton drawing (coloured limbs and joints on black)",
}


@dataclass(frozen=True)
class ControlImage:
    """The control image handed to the pipeline, and where it came from."""

    image: Any  # PIL, RGB, the output size
    source: str  # "attachment 0" or the path read
    source_size: tuple[int, int]
    preprocessed: bool

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_size": list(self.source_size),
            "preprocessed": self.preprocessed,
        }


def attachment_index(image: object) -> int | None:
    """The attachment an ``image`` field names: an index, or ``{"attachment": index}`` (the
    schema has checked both); ``None`` for a path."""
    if isinstance(image, dict):
        image = image.get("attachment")
    return image if isinstance(image, int) and not isinstance(image, bool) else None


def _read(spec: ControlNet, attachments: Sequence[bytes]) -> tuple[Any, str]:
    """The control image's decoded source image, and where it came from."""
    index = attachment_index(spec.image)
    if index is not None:
        if index >= len(attachments):
            have = f"{len(attachments)} attachment" + ("" if len(attachments) == 1 else "s")
            raise InvalidRequest(
                f"{FIELD}: attachment {index} is not in the request (it has {have})"
            )
        source = f"attachment {index}"
        return images.decode(bytes(attachments[index]), f"{FIELD} ({source})"), source
    if not isinstance(spec.image, str):
        raise InvalidRequest(f"{FIELD}: expected an attachment index or a path")
    data, path = Roots.from_env().read_input(spec.image, FIELD)
    try:
        return images.decode(data, FIELD), str(path)
    except InvalidRequest as exc:  # not an image: told apart from a missing file by no one
        raise refuse(FIELD, spec.image, exc.message) from None


def control_image(
    spec: ControlNet, attachments: Sequence[bytes], width: int, height: int
) -> ControlImage:
    """The control image of ``spec`` at ``width`` x ``height``, made as its type asks."""
    source, where = _read(spec, attachments)
    size = (source.width, source.height)
    rgb = images.to_rgb(source)
    if rgb.size != (width, height):
        # A photo keeps its edges sharper with bicubic; a ready map must keep its values
        # (bicubic overshoots at steps), so it is resized bilinearly.
        resample = Image.Resampling.BICUBIC if spec.preprocess else Image.Resampling.BILINEAR
        rgb = rgb.resize((width, height), resample)
    if spec.preprocess:  # request.parse allows it for canny only
        edges = canny.canny(rgb, spec.low_threshold, spec.high_threshold)
        rgb = edges.convert("RGB")
    return ControlImage(rgb, where, size, spec.preprocess)


def available() -> bool:
    """Whether diffusers has the SDXL ControlNet pipeline (it has since 0.19)."""
    import diffusers

    return hasattr(diffusers, "StableDiffusionXLControlNetPipeline")


def find_models() -> list[dict[str, str]]:
    """The ControlNet folders directly under the ``$FERRY_ML_MODELS`` folders (those a
    request may name: resolved as requests are, so a symlink out of the roots is left out)."""
    found = []
    for root in models.search_dirs():
        if not is_dir(root):
            continue
        for folder in sorted(p for p in root.iterdir() if is_dir(p)):
            try:
                path = models.resolve_controlnet(str(folder), "model")
            except InvalidRequest:
                continue
            found.append({"name": folder.name, "path": str(path)})
    return found


def describe_types() -> list[dict[str, Any]]:
    """Each ControlNet type: whether it runs here, its control image, its preprocessor."""
    ok = available()
    described = []
    for kind in CONTROLNET_TYPES:
        entry: dict[str, Any] = {
            "type": kind,
            "available": ok,
            "control_image": CONTROL_IMAGES[kind],
            "preprocessor": "canny (built in: OpenCV's Canny in numpy)"
            if kind in PREPROCESSORS
            else None,
        }
        if kind not in PREPROCESSORS:
            entry["from_photo"] = (
                f"not available: needs {ANNOTATORS[kind]}, and no annotator model is "
                "available offline; send a ready map"
            )
        described.append(entry)
    return described
