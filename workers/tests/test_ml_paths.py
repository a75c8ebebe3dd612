"""The paths a request may name, confined to the worker's roots (``ferry_sdxl.paths``).

Each attack an HTTP client made on the SDXL worker is a case here, sent over stdio to a
worker whose roots are folders of this test: ``FERRY_ML_MODELS`` (the tiny models, and a
second root holding traps), ``FERRY_ML_INPUTS`` and ``FERRY_ML_OUTPUTS``. Beside them lies
``outside/``, which no request may reach: a real image, a real pipeline, a real LoRA, an
unreadable "shadow" file. Every attack is answered with the one message
``<field>: not found or not allowed``, whatever the path was (missing, a folder, a FIFO, a
device, /proc, outside the roots through ``..`` or a symlink, not an image), and nothing is
written outside the outputs root.

The worker under attack runs under a data-size limit (``RLIMIT_DATA``), so that code which
reads ``/dev/zero`` fails with an error instead of taking the machine's memory; a read that
blocks (a FIFO) fails the test at the host's watchdog (``PipeHost.wait_s``), a hang guard
only: every check here waits for the worker's answer, never for time to pass.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ferry_sdxl import paths
from ferry_worker import FerryError, LocalContext
from ferry_worker.messages import Request
from PIL import Image

from conftest import PipeHost, attachment

DATA_LIMIT = 6 * 1024**3  # far above what the tiny models need, far below the machine
CAPPED = (
    "import resource, sys; "
    "cap = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_DATA, (cap, cap)); "
    "from ferry_sdxl.main import main; sys.exit(main(sys.argv[2:]))"
)
SHM_TARGET = Path("/dev/shm") / f"ferry-attack-{uuid.uuid4().hex}"


def png(color: tuple[int, int, int] = (200, 10, 10), size: tuple[int, int] = (16, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> dict[str, Path]:
    """The roots and what lies in and around them."""
    top = tmp_path_factory.mktemp("attack")
    where = {name: top / name for name in ("inputs", "outputs", "outside", "traps", "fixtures")}
    for folder in where.values():
        folder.mkdir()
    where["top"] = top
    where["models"] = models["base"].parent
    outside, inputs, traps, outputs = (
        where["outside"],
        where["inputs"],
        where["traps"],
        where["outputs"],
    )
    # Outside every root: what an attacker wants.
    (outside / "secret.png").write_bytes(png((1, 2, 3)))
    (outside / "shadow").write_text("root:$6$salt$hash:19000:0:99999:7:::\n")
    (outside / "shadow").chmod(0)
    shutil.copytree(models["base"], outside / "base")
    shutil.copytree(models["lora"], outside / "lora")
    # The inputs root.
    (inputs / "good.png").write_bytes(png())
    (inputs / "folder").mkdir()
    (inputs / "notes.txt").write_text("not an image\n")
    (inputs / "shadow").write_text("root:$6$salt$hash:19000:0:99999:7:::\n")
    (inputs / "shadow").chmod(0)
    os.mkfifo(inputs / "fifo")
    (inputs / "escape.png").symlink_to(outside / "secret.png")
    (inputs / "zero").symlink_to("/dev/zero")
    (inputs / "stderr").symlink_to("/proc/self/fd/2")
    # A second models root, of traps.
    (traps / "escape").symlink_to(outside / "base", target_is_directory=True)
    (traps / "lora-escape").symlink_to(outside / "lora", target_is_directory=True)
    (traps / "empty").mkdir()
    (traps / "file").write_text("not a model\n")
    (traps / "lora.txt").write_text("not a LoRA\n")
    (traps / "garbage.safetensors").write_bytes(b"\x00\x01 not safetensors " * 16)
    os.mkfifo(traps / "fifo")
    # The outputs root: a way out, and a file where a folder is asked for.
    (outputs / "link").symlink_to(outside, target_is_directory=True)
    (outputs / "taken").write_text("a file, not a folder\n")
    return where


@pytest.fixture(scope="module")
def worker(place: dict[str, Path]) -> Iterator[PipeHost]:
    env = {
        "FERRY_ML_DEVICE": "cpu",
        "FERRY_ML_MODELS": f"{place['models']}{os.pathsep}{place['traps']}",
        "FERRY_ML_INPUTS": str(place["inputs"]),
        "FERRY_ML_OUTPUTS": str(place["outputs"]),
    }
    args = ("-c", CAPPED, str(DATA_LIMIT), "--worker", "pipeline_manager", "--log-level", "INFO")
    host = PipeHost(args, env)
    host.wait_s = 300.0  # a hang guard only: loading torch and a model is slow on a busy CPU
    ready = host.read()
    assert ready["event_name"] == "ready", ready
    yield host
    host.close()
    SHM_TARGET.unlink(missing_ok=True)


def refused(answer: dict[str, Any], field: str) -> None:
    """``answer`` is the uniform refusal of ``field``."""
    assert answer["type"] == "error", answer
    assert answer["error"]["code"] == "invalid_request", answer
    assert answer["error"]["message"] == f"{field}: not found or not allowed", answer


def generation(models: dict[str, Path], **over: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "model": {"base": str(models["base"])},
        "scheduler": {"type": "Euler", "steps": 1},
        "hyperparameters": {"guidance_scale": 1.0, "seed": 7},
        "conditioning": {"prompt": "a cat"},
        "dimensions": {"width": 64, "height": 64},
    }
    for section, values in over.items():
        req[section] = {**req.get(section, {}), **values}
    return req


# -- Input images -------------------------------------------------------------------------

# Paths to images the worker must not read ({outside}: the folder beside the roots).
IMAGE_ATTACKS = [
    "/etc/passwd",
    "/etc/shadow",
    "{outside}/secret.png",  # a real image, outside the inputs root
    "{outside}/shadow",  # unreadable, outside
    "shadow",  # unreadable (to anyone but root), inside
    "../outside/secret.png",
    "folder/../../outside/secret.png",
    "escape.png",  # a symlink inside the root to an image outside
    "/dev/zero",
    "zero",  # a symlink to /dev/zero
    "/proc/self/fd/2",
    "stderr",  # a symlink to /proc/self/fd/2
    "/proc/self/environ",
    "fifo",  # must not hang
    "{inputs}/fifo",
    "folder",
    "{inputs}",
    "missing.png",
    "{inputs}/missing.png",
    "notes.txt",  # inside, readable, not an image
    "/",
]


def attack(place: dict[str, Path], template: str) -> str:
    return template.format(outside=place["outside"], inputs=place["inputs"])


@pytest.mark.parametrize("template", IMAGE_ATTACKS)
def test_an_image_path_outside_or_unreadable_gets_the_one_answer_for_every_operation(
    worker: PipeHost, models: dict[str, Path], place: dict[str, Path], template: str
) -> None:
    path = attack(place, template)
    refused(worker.call("postprocessing.convert", {"path": path, "format": "png"}), "path")
    refused(worker.call("postprocessing.upscale", {"path": path, "factor": 2}), "path")
    control = {"type": "depth", "model": str(models["controlnet"]), "image": path}
    req = generation(models, conditioning={"prompt": "a cat", "controlnet": control})
    refused(worker.call("inference.generate", req), "conditioning.controlnet.image")


def test_an_image_inside_the_inputs_root_is_read_relative_or_absolute(
    worker: PipeHost, models: dict[str, Path], place: dict[str, Path]
) -> None:
    for path in ("good.png", str(place["inputs"] / "good.png"), "folder/../good.png"):
        converted = worker.call("postprocessing.convert", {"path": path, "format": "jpeg"})
        assert converted["type"] == "response", converted
        assert Image.open(io.BytesIO(attachment(converted, 0))).format == "JPEG"
        up = worker.call("postprocessing.upscale", {"path": path, "factor": 2})
        assert up["type"] == "response", up
        assert Image.open(io.BytesIO(attachment(up, 0))).size == (32, 16)
    control = {"type": "depth", "model": str(models["controlnet"]), "image": "good.png"}
    req = generation(models, conditioning={"prompt": "a cat", "controlnet": control})
    answer = worker.call("inference.generate", req)
    assert answer["type"] == "response", answer
    assert answer["data"]["controlnet"]["source"] == str(place["inputs"] / "good.png")


def test_an_image_file_above_the_byte_limit_gets_the_one_answer(
    models: dict[str, Path], place: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ferry_sdxl.device import GIB, DeviceInfo
    from ferry_sdxl.instructors import PostprocessingInstructor
    from ferry_sdxl.models import ModelManager

    monkeypatch.setenv("FERRY_ML_INPUTS", str(place["inputs"]))
    post = PostprocessingInstructor(ModelManager(DeviceInfo("cpu", "cpu", 0, 8 * GIB, 8 * GIB)))
    size = len((place["inputs"] / "good.png").read_bytes())

    def convert() -> Any:
        data = {"path": "good.png", "format": "png"}
        return post.convert(Request("postprocessing.convert", data, []), LocalContext())

    monkeypatch.setenv("FERRY_ML_MAX_INPUT_BYTES", str(size))
    assert convert().data["width"] == 16
    monkeypatch.setenv("FERRY_ML_MAX_INPUT_BYTES", str(size - 1))
    with pytest.raises(FerryError) as raised:
        convert()
    assert (raised.value.code, raised.value.message) == (
        "invalid_request",
        "path: not found or not allowed",
    )
    monkeypatch.delenv("FERRY_ML_INPUTS")  # no inputs root: no path may be read
    monkeypatch.delenv("FERRY_ML_MAX_INPUT_BYTES")
    with pytest.raises(FerryError) as raised:
        convert()
    assert raised.value.message == "path: not found or not allowed"


# -- Models -------------------------------------------------------------------------------

# Models the worker must not load or tell apart ({outside}: a real pipeline and LoRA there).
MODEL_ATTACKS = [
    "/etc",
    "/etc/shadow",
    "/etc/passwd",
    "/nonexistent/model",
    "stabilityai/stable-diffusion-xl-base-1.0",
    "{outside}/base",  # a real pipeline outside the models roots
    "{outside}/lora",
    "{up}/outside/base",  # .. out of the first models root
    "../outside/base",  # .. out of the traps root
    "escape",  # a symlink in a models root to the pipeline outside
    "lora-escape",
    "empty",  # a folder, not a model
    "file",  # a file, not a folder
    "lora.txt",
    "fifo",
    "/dev/zero",
    "/proc/self/cwd",
    "/proc/self/root/etc",
]


def model_requests(models: dict[str, Path], name: str) -> list[tuple[str, str, Any]]:
    """(operation, field, data) naming ``name`` as each kind of model."""
    base = str(models["base"])
    control = {"type": "depth", "model": name, "image": 0}
    return [
        ("inference.generate", "model.base", generation(models, model={"base": name})),
        ("inference.generate", "model.refiner", generation(models, model={"refiner": name})),
        ("inference.generate", "model.vae", generation(models, model={"vae": name})),
        (
            "inference.generate",
            "conditioning.loras.0.path",
            generation(models, conditioning={"prompt": "x", "loras": [{"path": name}]}),
        ),
        (
            "inference.generate",
            "conditioning.controlnet.model",
            generation(models, conditioning={"prompt": "x", "controlnet": control}),
        ),
        ("postprocessing.upscale", "model", {"model": name, "steps": 1}),
        ("model.load", "base", {"base": name}),
        ("model.load", "vae", {"base": base, "vae": name}),
        ("model.load", "refiner", {"base": base, "refiner": name}),
        ("model.load", "controlnet", {"base": base, "controlnet": name}),
        ("model.load", "upscaler", {"upscaler": name}),
    ]


@pytest.mark.parametrize("template", MODEL_ATTACKS)
def test_a_model_path_outside_the_roots_or_not_a_model_gets_the_one_answer(
    worker: PipeHost, models: dict[str, Path], place: dict[str, Path], template: str
) -> None:
    up = os.path.relpath(place["top"], place["models"])
    name = template.format(outside=place["outside"], up=up)
    for operation, field, data in model_requests(models, name):
        refused(worker.call(operation, data, attachments=[png()]), field)


def test_a_lora_file_of_another_kind_inside_the_roots_is_a_request_error(
    worker: PipeHost, models: dict[str, Path]
) -> None:
    # A .safetensors file that is not one: the request's mistake, not the worker's.
    req = generation(
        models, conditioning={"prompt": "x", "loras": [{"path": "garbage.safetensors"}]}
    )
    answer = worker.call("inference.generate", req)
    assert answer["type"] == "error" and answer["error"]["code"] == "invalid_request", answer
    assert answer["error"]["message"].startswith(
        "conditioning.loras.0.path: not a LoRA this model can load"
    ), answer
    assert " at 0x" not in answer["error"]["message"]
    # The pipeline is unharmed: a generation with the real LoRA, then none, still runs.
    lora = generation(models, conditioning={"prompt": "x", "loras": [{"path": "lora"}]})
    assert worker.call("inference.generate", lora)["type"] == "response"
    assert worker.call("inference.generate", generation(models))["type"] == "response"


def test_models_inside_the_roots_load_by_name_and_by_path(
    worker: PipeHost, models: dict[str, Path]
) -> None:
    for base in ("base", str(models["base"])):
        loaded = worker.call("model.load", {"base": base})
        assert loaded["type"] == "response", loaded
    assert worker.call("model.load", {"upscaler": "upscaler"})["type"] == "response"


# -- Outputs ------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root`` (symlinks not followed): kind and size."""
    found: dict[str, tuple[str, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            found[str(path.relative_to(root))] = (kind, 0 if kind == "dir" else st.st_size)
    return found


SAVE_ATTACKS = [
    "../outside/written",
    "{outside}/written",
    "../../escaped",
    str(SHM_TARGET),
    "link",  # a symlink in the outputs root to outside/
    "link/written",
    "taken",  # a file, not a folder
    "taken/sub",
    "/proc/self/cwd/written",
    "/",
]


def test_save_dir_outside_the_outputs_root_writes_nothing_anywhere(
    worker: PipeHost, models: dict[str, Path], place: dict[str, Path]
) -> None:
    before = tree(place["top"])
    for template in SAVE_ATTACKS:
        save_dir = template.format(outside=place["outside"])
        answer = worker.call(
            "inference.generate", generation(models, output={"save_dir": save_dir})
        )
        refused(answer, "output.save_dir")
        flat = {
            "model": str(models["base"]),
            "prompt": "a cat",
            "steps": 1,
            "width": 64,
            "height": 64,
            "save_dir": save_dir,
        }
        refused(worker.call("inference", flat), "output.save_dir")
    assert tree(place["top"]) == before
    assert not SHM_TARGET.exists()


def test_save_dir_under_the_outputs_root_writes_there(
    worker: PipeHost, models: dict[str, Path], place: dict[str, Path]
) -> None:
    for save_dir, folder in (
        ("runs/a", place["outputs"] / "runs" / "a"),
        (str(place["outputs"] / "runs" / "b"), place["outputs"] / "runs" / "b"),
        (".", place["outputs"]),
    ):
        answer = worker.call(
            "inference.generate", generation(models, output={"save_dir": save_dir})
        )
        assert answer["type"] == "response", answer
        written = Path(answer["data"]["images"][0]["path"])
        assert written.parent == folder and written.read_bytes() == attachment(answer, 0)


def test_save_dir_without_an_outputs_root_is_refused_before_anything_runs(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ferry_sdxl.device import GIB, DeviceInfo
    from ferry_sdxl.inference import InferenceInstructor
    from ferry_sdxl.models import ModelManager

    monkeypatch.setenv("FERRY_ML_MODELS", str(models["base"].parent))
    monkeypatch.delenv("FERRY_ML_OUTPUTS", raising=False)
    manager = ModelManager(DeviceInfo("cpu", "cpu", 0, 8 * GIB, 8 * GIB))
    inference = InferenceInstructor(manager)
    req = generation(models, output={"save_dir": str(tmp_path)})
    with pytest.raises(FerryError) as raised:
        inference.generate(Request("inference.generate", req, []), LocalContext())
    assert (raised.value.code, raised.value.message) == (
        "invalid_request",
        "output.save_dir: saving to disk is not enabled: set FERRY_ML_OUTPUTS",
    )
    assert list(tmp_path.iterdir()) == [] and manager.cache == {}


# -- The module itself --------------------------------------------------------------------


def test_roots_come_from_the_environment_resolved(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    roots = paths.Roots.from_env(
        {
            "FERRY_ML_MODELS": f"{tmp_path / 'alias'}{os.pathsep}{os.pathsep}{tmp_path}",
            "FERRY_ML_INPUTS": "",
            "FERRY_ML_OUTPUTS": str(tmp_path / "alias" / "out"),
            "FERRY_ML_MAX_INPUT_BYTES": "1024",
        }
    )
    assert roots.models == (tmp_path / "real", tmp_path)
    assert roots.inputs == () and roots.outputs == tmp_path / "real" / "out"
    assert roots.max_input_bytes == 1024
    assert paths.Roots.from_env({}).max_input_bytes == 64 * 1024 * 1024
    with pytest.raises(ValueError, match="FERRY_ML_MAX_INPUT_BYTES"):
        paths.Roots.from_env({"FERRY_ML_MAX_INPUT_BYTES": "lots"})
    assert paths.Roots.inside("a\0b", (tmp_path,)) == []
    assert paths.Roots.inside("../x", (tmp_path / "real",)) == []
    assert paths.Roots.inside("x/../y", (tmp_path,)) == [tmp_path / "y"]
