"""The SDXL worker (``python -m ferry_sdxl.main --worker pipeline_manager``) driven over stdio.

A tiny SDXL pipeline with random weights is built in the session's set-up
(:mod:`ferry_sdxl.tiny`), saved with ``save_pretrained`` and loaded by the worker from
that folder, as a real model would be. Needs the ML environment (scripts/ml-env).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ferry_sdxl import request as genreq
from ferry_sdxl.router import Router
from ferry_worker import FerryError, LocalContext
from PIL import Image, ImageDraw

from conftest import PipeHost, attachment

PIPELINE_MANAGER = (
    "-m",
    "ferry_sdxl.main",
    "--worker",
    "pipeline_manager",
    "--log-level",
    "INFO",
)


@pytest.fixture(autouse=True)
def models_root(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process tests load models too: from the same models root as the worker."""
    monkeypatch.setenv("FERRY_ML_MODELS", str(models["base"].parent))


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The worker's inputs and outputs roots (its models root: ``models["base"].parent``)."""
    return {
        "inputs": tmp_path_factory.mktemp("inputs"),
        "outputs": tmp_path_factory.mktemp("outputs"),
    }


@pytest.fixture(scope="module")
def sdxl(models: dict[str, Path], roots: dict[str, Path]) -> Iterator[PipeHost]:
    env = {
        "FERRY_ML_DEVICE": "cpu",
        "FERRY_ML_MODELS": str(models["base"].parent),
        "FERRY_ML_INPUTS": str(roots["inputs"]),
        "FERRY_ML_OUTPUTS": str(roots["outputs"]),
    }
    host = PipeHost(PIPELINE_MANAGER, env)
    host.wait_s = 300.0  # a hang guard only: loading torch and a model is slow on a busy CPU
    ready = host.read()
    assert ready["event_name"] == "ready", ready
    yield host
    host.close()


def nested(models: dict[str, Path], **over: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "model": {"base": str(models["base"])},
        "scheduler": {"type": "Euler", "steps": 2},
        "hyperparameters": {"guidance_scale": 1.0, "seed": 7},  # 1.0: no CFG, half the work
        "conditioning": {"prompt": "a cat and the sea", "negative_prompt": "blurry"},
        "dimensions": {"width": 64, "height": 64},
    }
    for section, values in over.items():
        req[section] = {**req.get(section, {}), **values}
    return req


def generate(host: PipeHost, data: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    return host.answer(host.request("inference.generate", data))


def steps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The data of the ``inference`` stage's progress events (one per denoising step)."""
    return [
        e["data"]
        for e in events
        if e["event_name"] == "progress" and e["data"]["stage"] == "inference"
    ]


def first_step(host: PipeHost, rid: str) -> dict[str, Any]:
    """Reads the events of ``rid`` up to its first denoising step's progress event."""
    while True:
        event = host.read()
        assert event["request_id"] == rid and event["type"] == "event", event
        if event["event_name"] == "progress" and event["data"]["stage"] == "inference":
            return event


def image(answer: dict[str, Any], i: int = 0) -> Image.Image:
    blob = attachment(answer, i)
    assert blob.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(blob))


def test_ready_announces_the_router_prefixes(sdxl: PipeHost) -> None:
    ops = sdxl.call("capabilities")["data"]["operations"]
    for prefix in genreq_prefixes():
        assert f"{prefix}.*" in ops
    assert {"status", "cleanup", "inference"} <= set(ops)


def genreq_prefixes() -> list[str]:
    from ferry_sdxl.router import PREFIXES

    return list(PREFIXES)


def test_generation_returns_a_png_of_the_requested_size(sdxl: PipeHost, models: Any) -> None:
    req = nested(
        models, dimensions={"width": 96, "height": 64}, hyperparameters={"guidance_scale": 5.0}
    )
    _, answer = generate(sdxl, req)
    assert answer["type"] == "response", answer
    img = image(answer)
    assert (img.format, img.size) == ("PNG", (96, 64))
    assert answer["data"]["images"][0]["width"] == 96
    assert answer["data"]["images"][0]["height"] == 64


def test_progress_event_after_every_step(sdxl: PipeHost, models: Any) -> None:
    events, answer = generate(sdxl, nested(models, scheduler={"steps": 3}))
    assert answer["type"] == "response", answer
    progress = steps(events)
    assert [p["message"] for p in progress] == [f"step {i}/3" for i in range(1, 4)]
    assert progress[-1]["progress"] == 1.0


def test_stages_status_changes_and_metrics_of_a_generation(sdxl: PipeHost, models: Any) -> None:
    sdxl.call("model.unload", {})  # so this generation loads its pipeline
    events, answer = generate(sdxl, nested(models, scheduler={"steps": 2}))
    assert answer["type"] == "response", answer
    stages = [e["data"]["stage"] for e in events if e["event_name"] == "progress"]
    assert stages == ["initialization", "loading", "inference", "inference", "postprocessing"]
    fractions = [e["data"]["progress"] for e in events if e["event_name"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    changes = [e["data"] for e in events if e["event_name"] == "status_change"]
    assert [c["status"] for c in changes] == ["busy", "loading", "idle"]
    for change in changes:
        assert change["device"] == "cpu" and change["memory_usage_mb"] > 0, change
        assert "gpu_utilization" not in change  # the CPU reports none: absent, not zero
    metrics = answer["data"]["metrics"]
    assert metrics["device"] == "cpu" and metrics["memory_usage_mb"] > 0, metrics
    assert "gpu_utilization" not in metrics and metrics["inference_time_s"] >= 0
    # Cached now: no loading stage, no loading status.
    events, _ = generate(sdxl, nested(models, scheduler={"steps": 2}))
    assert "loading" not in [e["data"].get("stage") for e in events]
    assert "loading" not in [e["data"].get("status") for e in events]


def test_a_model_load_reports_its_progress(sdxl: PipeHost, models: Any) -> None:
    sdxl.call("model.unload", {})
    events, answer = sdxl.answer(
        sdxl.request("model.load", {"base": str(models["base"]), "refiner": str(models["refiner"])})
    )
    assert answer["type"] == "response", answer
    progress = [
        (e["data"]["stage"], e["data"]["progress"]) for e in events if e["event_name"] == "progress"
    ]
    assert progress == [
        ("initialization", 0.0),
        ("loading", 0.0),
        ("loading", 0.5),
        ("loading", 1.0),
    ], progress
    changes = [e["data"]["status"] for e in events if e["event_name"] == "status_change"]
    assert changes == ["loading", "idle"]
    assert answer["data"]["metrics"]["memory_usage_mb"] > 0


def test_the_device_the_host_assigned_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry_sdxl import device

    monkeypatch.setenv("FERRY_ML_DEVICE", "cuda:5")
    monkeypatch.delenv("FERRY_DEVICE", raising=False)
    assert device.requested_device() == "cuda:5"  # no assignment: the worker's setting
    # The host made GPU 3 the only visible one: it is this process's cuda:0.
    monkeypatch.setenv("FERRY_DEVICE", "cuda:3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert device.requested_device() == "cuda:0"
    # Without the host's CUDA_VISIBLE_DEVICES the name is taken as it is.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert device.requested_device() == "cuda:3"
    monkeypatch.setenv("FERRY_DEVICE", "cpu")
    info = device.choose()
    assert info.kind == "cpu" and device.device_name(info) == "cpu"
    telemetry = device.telemetry(info)
    assert telemetry["device"] == "cpu" and telemetry["memory_usage_mb"] > 0
    assert "gpu_utilization" not in telemetry


def test_same_seed_gives_the_same_image_and_another_seed_does_not(
    sdxl: PipeHost, models: Any
) -> None:
    first = attachment(generate(sdxl, nested(models))[1], 0)
    again = attachment(generate(sdxl, nested(models))[1], 0)
    other = attachment(generate(sdxl, nested(models, hyperparameters={"seed": 8}))[1], 0)
    assert first == again
    assert first != other


def test_cancel_at_step_1_of_50_stops_the_generation(sdxl: PipeHost, models: Any) -> None:
    rid = sdxl.request("inference.generate", nested(models, scheduler={"steps": 50}))
    first = first_step(sdxl, rid)
    assert first["data"]["message"] == "step 1/50", first
    sdxl.send({"message_id": "c-1", "type": "cancel", "request_id": rid})
    events, answer = sdxl.answer(rid)
    assert answer["type"] == "error" and answer["error"]["code"] == "cancelled", answer
    assert len(events) < 49, "the generation went on after the cancel"
    assert sdxl.call("status")["data"]["inference"]["running"] is None


def test_each_named_scheduler_runs(sdxl: PipeHost, models: Any) -> None:
    listed = [s["name"] for s in sdxl.call("scheduler.list")["data"]["schedulers"]]
    for name in ("Euler", "Euler a", "DPM++ 2M", "DDIM", "UniPC"):
        assert name in listed
        _, answer = generate(sdxl, nested(models, scheduler={"type": name, "steps": 2}))
        assert answer["type"] == "response", (name, answer)
        assert answer["data"]["scheduler"] == name


def test_lora_changes_the_image_and_is_switched_off_after(sdxl: PipeHost, models: Any) -> None:
    plain = attachment(generate(sdxl, nested(models))[1], 0)
    lora = {"loras": [{"path": str(models["lora"]), "weight": 1.0}]}
    _, answer = generate(sdxl, nested(models, conditioning=lora))
    assert answer["type"] == "response", answer
    assert answer["data"]["loras"] == [str(models["lora"])]
    assert attachment(answer, 0) != plain
    assert attachment(generate(sdxl, nested(models))[1], 0) == plain


def test_refiner_takes_over_at_the_hand_off_fraction(sdxl: PipeHost, models: Any) -> None:
    req = nested(
        models,
        model={"refiner": str(models["refiner"])},
        scheduler={"steps": 4},
        hyperparameters={"refiner_fraction": 0.5},
    )
    events, answer = generate(sdxl, req)
    assert answer["type"] == "response", answer
    assert answer["data"]["refiner"] is True
    assert image(answer).size == (64, 64)
    assert len(steps(events)) == 4


def test_flat_form_through_the_old_operation_name(sdxl: PipeHost, models: Any) -> None:
    flat = {"model": str(models["base"]), "prompt": "a cat", "width": 64, "height": 64}
    flat.update({"steps": 2, "seed": 3, "num_images": 2, "scheduler": "DDIM"})
    _, answer = sdxl.answer(sdxl.request("inference", flat))
    assert answer["type"] == "response", answer
    assert len(answer["attachments"]) == 2
    assert [i["seed"] for i in answer["data"]["images"]] == [3, 4]


def test_save_dir_writes_the_files_under_the_outputs_root(
    sdxl: PipeHost, models: Any, roots: dict[str, Path]
) -> None:
    _, answer = generate(sdxl, nested(models, output={"save_dir": "runs/1"}))
    path = Path(answer["data"]["images"][0]["path"])
    assert path.parent == roots["outputs"] / "runs" / "1"
    assert path.read_bytes() == attachment(answer, 0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dimensions": {"width": 70}}, "dimensions.width"),
        ({"scheduler": {"type": "Nope"}}, "scheduler.type"),
        ({"scheduler": {"steps": 0}}, "scheduler.steps"),
        ({"conditioning": {"prompt": ""}}, "conditioning.prompt"),
        ({"hyperparameters": {"guidance": 3}}, "hyperparameters"),
    ],
)
def test_bad_requests_fail_validation_naming_the_field(
    sdxl: PipeHost, models: Any, change: dict[str, Any], field: str
) -> None:
    _, answer = generate(sdxl, nested(models, **change))
    assert answer["type"] == "error" and answer["error"]["code"] == "invalid_request"
    assert answer["error"]["message"].startswith(field), answer["error"]["message"]


def test_missing_prompt_and_unknown_flat_key_are_named(sdxl: PipeHost, models: Any) -> None:
    bad = nested(models)
    del bad["conditioning"]["prompt"]
    message = sdxl.call("inference.generate", bad)["error"]["message"]
    assert message.startswith("conditioning.prompt"), message
    flat = {"model": str(models["base"]), "prompt": "x", "widht": 64}
    message = sdxl.call("inference.generate", flat)["error"]["message"]
    assert message.startswith("widht:"), message


def test_a_model_that_is_not_a_local_folder_is_named(sdxl: PipeHost, models: Any) -> None:
    answer = sdxl.call("inference.generate", nested(models, model={"base": "stabilityai/sdxl"}))
    assert answer["error"]["code"] == "invalid_request"
    assert answer["error"]["message"] == "model.base: not found or not allowed"


def test_validate_and_estimate(sdxl: PipeHost, models: Any) -> None:
    ok = sdxl.call("inference.validate", nested(models))["data"]
    assert ok["valid"] is True and ok["errors"] == []
    bad = sdxl.call("inference.validate", nested(models, dimensions={"height": 1}))["data"]
    assert bad["valid"] is False and bad["errors"][0]["field"] == "dimensions.height"
    # The estimate's time comes from measured generations: one of its own, so this test does
    # not depend on the ones before it.
    assert sdxl.call("inference.generate", nested(models))["type"] == "response"
    estimate = sdxl.call("inference.estimate", nested(models))["data"]
    assert estimate["steps"] == 2 and estimate["batch_size"] >= 1
    assert estimate["estimated_seconds"] is not None


def test_model_device_status_and_cleanup(sdxl: PipeHost, models: Any) -> None:
    devices = sdxl.call("device.list")["data"]["devices"]
    assert devices[-1]["kind"] == "cpu" and devices[-1]["total_memory"] > 0
    assert sdxl.call("device.info")["data"]["device"]["kind"] == "cpu"
    loaded = sdxl.call("model.load", {"base": str(models["base"])})["data"]["loaded"]
    assert loaded[0]["kind"] == "base" and loaded[0]["bytes"] > 0
    assert len(sdxl.call("model.list")["data"]["loaded"]) >= 1
    status = sdxl.call("status")["data"]
    assert set(status) == set(genreq_prefixes())
    assert status["model"]["loaded"] >= 1
    cleaned = sdxl.call("cleanup")["data"]
    assert cleaned["failed"] == {} and len(cleaned["cleaned"]) == 7
    assert sdxl.call("model.list")["data"]["loaded"] == []
    assert sdxl.call("communication.ping", {"n": 1})["data"]["echo"] == {"n": 1}
    unknown = sdxl.call("model.explode")
    assert unknown["error"]["code"] == "unknown_operation"


def test_upscale_and_convert(sdxl: PipeHost) -> None:
    src = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 10, 10)).save(src, format="PNG")
    up = sdxl.call("postprocessing.upscale", {"factor": 4}, attachments=[src.getvalue()])
    assert up["data"] == {"width": 64, "height": 32, "format": "png", "method": "lanczos"}
    assert Image.open(io.BytesIO(attachment(up, 0))).size == (64, 32)
    jpeg = sdxl.call("postprocessing.convert", {"format": "jpeg"}, attachments=[src.getvalue()])
    assert Image.open(io.BytesIO(attachment(jpeg, 0))).format == "JPEG"
    missing = sdxl.call("postprocessing.upscale", {"factor": 2})
    assert missing["error"]["code"] == "invalid_request"


def test_schema_file_is_valid_json_schema() -> None:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(genreq.schema())


def test_router_rejects_an_instructor_operation_outside_its_prefix() -> None:
    class Bad:
        name = "device"

        def operations(self) -> dict[str, Any]:
            return {"model.load": lambda r, c: None}

        def status(self) -> dict[str, Any]:
            return {}

        def cleanup(self) -> None:
            pass

    with pytest.raises(ValueError, match="outside its prefix"):
        Router([Bad()])


def test_cancelled_is_raised_in_process_too(models: Any) -> None:
    from ferry_sdxl.worker import build

    worker, _ = build()
    ctx = LocalContext()
    ctx.cancel()
    with pytest.raises(FerryError) as raised:
        worker.handle("inference.generate", nested(models), ctx=ctx)
    assert raised.value.code == "cancelled"


# -- ControlNet ---------------------------------------------------------------------------


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def photo(shift: int = 0) -> bytes:
    """An ordinary picture (shapes in colours) whose edges the worker finds."""
    img = Image.new("RGB", (120, 80), (40, 70, 110))
    draw = ImageDraw.Draw(img)
    draw.ellipse([10 + shift, 10, 70 + shift, 70], fill=(230, 200, 30))
    draw.rectangle([60, 5, 110, 40], fill=(20, 220, 120))
    return png(img)


def depth_map(width: int = 64, height: int = 64) -> Image.Image:
    """A 16-bit depth map (near bright): a ramp with a nearer disc, as a depth estimator makes."""
    ramp = np.linspace(2000, 30000, width, dtype=np.float64)[None, :].repeat(height, 0)
    yy, xx = np.mgrid[:height, :width]
    ramp[(yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (height / 4) ** 2] = 60000
    return Image.fromarray(ramp.astype(np.uint16))


def with_controlnet(models: dict[str, Path], **control: Any) -> dict[str, Any]:
    spec = {"type": "canny", "model": str(models["controlnet"]), "image": 0, **control}
    return nested(models, conditioning={"controlnet": spec}, dimensions={"width": 96})


def error_of(answer: dict[str, Any]) -> str:
    assert answer["type"] == "error" and answer["error"]["code"] == "invalid_request", answer
    message: str = answer["error"]["message"]
    return message


def test_canny_controlnet_answers_a_png_of_the_requested_size_with_progress_per_step(
    sdxl: PipeHost, models: Any
) -> None:
    req = with_controlnet(models, conditioning_scale=0.8)
    req["scheduler"]["steps"] = 3
    events, answer = sdxl.answer(sdxl.request("inference.generate", req, attachments=[photo()]))
    assert answer["type"] == "response", answer
    img = image(answer)
    assert (img.format, img.size) == ("PNG", (96, 64))
    progress = [p["message"] for p in steps(events)]
    assert progress == ["step 1/3", "step 2/3", "step 3/3"]
    used = answer["data"]["controlnet"]
    assert used["type"] == "canny" and used["preprocessed"] is True
    assert used["model"] == str(models["controlnet"].resolve())
    assert (used["source"], used["source_size"]) == ("attachment 0", [120, 80])
    assert used["conditioning_scale"] == 0.8 and used["thresholds"] == [100.0, 200.0]


def test_canny_controlnet_same_seed_same_image_and_the_control_image_steers_it(
    sdxl: PipeHost, models: Any
) -> None:
    def run(data: dict[str, Any], *attachments: bytes) -> bytes:
        answer = sdxl.call("inference.generate", data, attachments=list(attachments))
        assert answer["type"] == "response", answer
        return attachment(answer, 0)

    first = run(with_controlnet(models), photo())
    assert run(with_controlnet(models), photo()) == first
    assert run(with_controlnet(models), photo(shift=30)) != first  # other edges
    plain = nested(models, dimensions={"width": 96})
    assert run(plain) != first
    # Scale 0 adds nothing: the ControlNet pipeline runs the base's own modules.
    assert run(with_controlnet(models, conditioning_scale=0.0), photo()) == run(plain)


def test_canny_controlnet_takes_a_ready_edge_map_without_preprocess(
    sdxl: PipeHost, models: Any
) -> None:
    from ferry_sdxl.canny import canny

    source = Image.open(io.BytesIO(photo())).resize((96, 64), Image.Resampling.BICUBIC)
    edge_map = png(canny(source))
    computed = sdxl.call("inference.generate", with_controlnet(models), attachments=[photo()])
    ready = sdxl.call(
        "inference.generate", with_controlnet(models, preprocess=False), attachments=[edge_map]
    )
    assert ready["data"]["controlnet"]["preprocessed"] is False
    assert attachment(ready, 0) == attachment(computed, 0)


def test_depth_controlnet_with_a_supplied_16_bit_map_from_a_path(
    sdxl: PipeHost, models: Any, roots: dict[str, Path]
) -> None:
    path = roots["inputs"] / "depth.png"
    depth_map().save(path)
    req = with_controlnet(models, type="depth", image=str(path))
    answer = sdxl.call("inference.generate", req)
    assert answer["type"] == "response", answer
    assert image(answer).size == (96, 64)
    used = answer["data"]["controlnet"]
    assert used["type"] == "depth" and used["preprocessed"] is False
    assert used["source"] == str(path) and "thresholds" not in used
    flat = Image.new("I;16", (64, 64))
    flat.save(roots["inputs"] / "flat.png")
    # A relative path is read from the inputs root.
    other = sdxl.call("inference.generate", with_controlnet(models, type="depth", image="flat.png"))
    assert attachment(other, 0) != attachment(answer, 0)


def test_pose_controlnet_with_a_supplied_map_and_the_model_found_by_name(
    sdxl: PipeHost, models: Any
) -> None:
    skeleton = Image.new("RGB", (64, 64))
    ImageDraw.Draw(skeleton).line([(32, 10), (32, 40), (20, 60)], fill=(255, 0, 85), width=3)
    req = with_controlnet(models, type="pose", model="controlnet")  # under FERRY_ML_MODELS
    answer = sdxl.call("inference.generate", req, attachments=[png(skeleton)])
    assert answer["type"] == "response", answer
    assert answer["data"]["controlnet"]["model"] == str(models["controlnet"].resolve())


@pytest.mark.parametrize("kind", ["depth", "pose"])
def test_depth_or_pose_from_a_photo_is_refused_naming_the_missing_annotator(
    sdxl: PipeHost, models: Any, kind: str
) -> None:
    req = with_controlnet(models, type=kind, preprocess=True)
    message = error_of(sdxl.call("inference.generate", req, attachments=[photo()]))
    assert message.startswith("conditioning.controlnet.preprocess:"), message
    assert "annotator" in message and f"ready {kind} map" in message


def test_a_missing_controlnet_model_is_named_with_the_places_looked_at(
    sdxl: PipeHost, models: Any
) -> None:
    req = with_controlnet(models, model="diffusers/controlnet-canny-sdxl-1.0")
    message = error_of(sdxl.call("inference.generate", req, attachments=[photo()]))
    assert message == "conditioning.controlnet.model: not found or not allowed"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("controlnet_misfit", "shrinks the control image 8x"),
        ("base", "holds a UNet2DConditionModel, not a ControlNetModel"),  # base/unet
    ],
)
def test_a_model_that_is_not_a_controlnet_for_this_base_is_refused(
    sdxl: PipeHost, models: Any, model: str, expected: str
) -> None:
    target = models[model] / "unet" if model == "base" else models[model]
    req = with_controlnet(models, model=str(target))
    message = error_of(sdxl.call("inference.generate", req, attachments=[photo()]))
    assert message.startswith("conditioning.controlnet.model:"), message
    assert expected in message, message


@pytest.mark.parametrize(
    ("control", "attachments", "expected"),
    [
        ({"image": 0}, [b"not an image at all"], "not a readable image"),
        ({"image": 2}, [b"x"], "attachment 2 is not in the request (it has 1 attachment)"),
        ({"image": "/nonexistent/control.png"}, [], "image: not found or not allowed"),
        ({"image": -1}, [], "-1 is less than the minimum of 0"),
        ({"image": ""}, [], "should be non-empty"),
    ],
)
def test_a_bad_control_image_is_named(
    sdxl: PipeHost, models: Any, control: dict[str, Any], attachments: list[bytes], expected: str
) -> None:
    req = with_controlnet(models, **control)
    message = error_of(sdxl.call("inference.generate", req, attachments=attachments))
    assert message.startswith("conditioning.controlnet.image"), message
    assert expected in message, message


@pytest.mark.parametrize(
    ("control", "field"),
    [
        ({"model": None}, "conditioning.controlnet.model"),
        ({"type": "scribble"}, "conditioning.controlnet.type"),
        ({"conditioning_scale": 5}, "conditioning.controlnet.conditioning_scale"),
        ({"low_threshold": 250}, "conditioning.controlnet.low_threshold"),
        ({"type": "depth", "high_threshold": 50}, "conditioning.controlnet.high_threshold"),
        ({"guidance_start": 0.6, "guidance_end": 0.5}, "conditioning.controlnet.guidance_end"),
        ({"strength": 1}, "conditioning.controlnet"),
    ],
)
def test_bad_controlnet_fields_are_named(
    sdxl: PipeHost, models: Any, control: dict[str, Any], field: str
) -> None:
    req = with_controlnet(models, **control)
    spec = req["conditioning"]["controlnet"]
    for key in [k for k, v in spec.items() if v is None]:
        del spec[key]
    message = error_of(sdxl.call("inference.generate", req, attachments=[photo()]))
    assert message.startswith(field), message
    checked = sdxl.call("inference.validate", req)["data"]
    assert checked["valid"] is False and checked["errors"][0]["field"].startswith(field)


def test_controlnet_with_the_refiner_steers_the_base_steps_only(
    sdxl: PipeHost, models: Any
) -> None:
    req = with_controlnet(models)
    req["model"]["refiner"] = str(models["refiner"])
    req["scheduler"]["steps"] = 4
    req["hyperparameters"]["refiner_fraction"] = 0.5
    events, answer = sdxl.answer(sdxl.request("inference.generate", req, attachments=[photo()]))
    assert answer["type"] == "response", answer
    assert answer["data"]["refiner"] is True and answer["data"]["controlnet"]["type"] == "canny"
    assert image(answer).size == (96, 64)
    assert len(steps(events)) == 4
    without = dict(req, conditioning={"prompt": req["conditioning"]["prompt"]})
    assert attachment(sdxl.call("inference.generate", without), 0) != attachment(answer, 0)


def test_lora_applies_through_the_controlnet_pipeline(sdxl: PipeHost, models: Any) -> None:
    def run(data: dict[str, Any]) -> bytes:
        return attachment(sdxl.call("inference.generate", data, attachments=[photo()]), 0)

    plain = run(with_controlnet(models))
    lora = with_controlnet(models)
    lora["conditioning"]["loras"] = [{"path": str(models["lora"]), "weight": 1.0}]
    assert run(lora) != plain
    assert run(with_controlnet(models)) == plain


def test_cancel_at_step_1_of_50_stops_a_controlnet_generation(sdxl: PipeHost, models: Any) -> None:
    req = with_controlnet(models)
    req["scheduler"]["steps"] = 50
    rid = sdxl.request("inference.generate", req, attachments=[photo()])
    first = first_step(sdxl, rid)
    assert first["data"]["message"] == "step 1/50", first
    sdxl.send({"message_id": "c-2", "type": "cancel", "request_id": rid})
    events, answer = sdxl.answer(rid)
    assert answer["type"] == "error" and answer["error"]["code"] == "cancelled", answer
    assert len(events) < 49, "the generation went on after the cancel"


def test_flat_form_controlnet_keys(sdxl: PipeHost, models: Any) -> None:
    flat = {"model": str(models["base"]), "prompt": "a cat", "width": 64, "height": 64}
    flat.update({"steps": 2, "seed": 3, "controlnet_type": "canny", "controlnet_image": 0})
    flat.update(
        {"controlnet_model": str(models["controlnet"]), "controlnet_conditioning_scale": 0.5}
    )
    answer = sdxl.call("inference", flat, attachments=[photo()])
    assert answer["type"] == "response", answer
    assert answer["data"]["controlnet"]["conditioning_scale"] == 0.5
    both = dict(flat, controlnet={"type": "depth"})
    message = error_of(sdxl.call("inference", both, attachments=[photo()]))
    assert message.startswith(
        "controlnet_type: conditioning.controlnet.type is already given (by controlnet)"
    ), message
    twice = dict(flat, num_inference_steps=3)
    message = error_of(sdxl.call("inference", twice))
    assert message.startswith("steps: scheduler.steps is already given (by num_inference_steps)")


def test_controlnet_types_and_capabilities_report_what_runs(sdxl: PipeHost, models: Any) -> None:
    answer = sdxl.call("conditioning.controlnet_types")["data"]
    assert answer["available"] is True
    types = {t["type"]: t for t in answer["types"]}
    assert set(types) == {"canny", "depth", "pose"}
    assert all(t["available"] for t in types.values())
    assert types["canny"]["preprocessor"] is not None and "from_photo" not in types["canny"]
    for kind in ("depth", "pose"):
        assert types[kind]["preprocessor"] is None
        assert types[kind]["from_photo"].startswith("not available")
    found = {m["name"]: m["path"] for m in answer["models"]}
    assert found == {
        "controlnet": str(models["controlnet"]),
        "controlnet-misfit": str(models["controlnet_misfit"]),
    }
    caps = sdxl.call("inference.capabilities")["data"]
    assert caps["controlnet"] is True
    assert caps["controlnet_types"] == ["canny", "depth", "pose"]
    assert caps["controlnet_preprocessors"] == ["canny"]


def test_model_load_and_unload_with_a_controlnet(sdxl: PipeHost, models: Any) -> None:
    data = {"base": str(models["base"]), "controlnet": str(models["controlnet"])}
    loaded = sdxl.call("model.load", data)["data"]["loaded"]
    assert [e["kind"] for e in loaded] == ["base", "controlnet"]
    assert loaded[1]["depends_on"] == [loaded[0]["key"]] and loaded[1]["bytes"] > 0
    unloaded = sdxl.call("model.unload", {"base": str(models["base"])})["data"]["unloaded"]
    assert loaded[0]["key"] in unloaded
    kinds = [e["kind"] for e in sdxl.call("model.list")["data"]["loaded"]]
    assert "controlnet" not in kinds  # it shared the base's modules: it left with it
    bad = sdxl.call("model.load", {"base": str(models["base"]), "controlnet": "nowhere"})
    assert error_of(bad) == "controlnet: not found or not allowed"


def test_cache_keeps_a_controlnet_s_base_and_they_leave_together(models: Any) -> None:
    from ferry_sdxl.device import GIB, DeviceInfo
    from ferry_sdxl.inference import InferenceInstructor
    from ferry_sdxl.models import ModelManager
    from ferry_worker.messages import Request

    # 1 byte free turns every memory saver on; a 1-byte budget keeps only what must stay.
    manager = ModelManager(DeviceInfo("cpu", "cpu", 0, 8 * GIB, 1), budget=1)
    base = manager.base(str(models["base"]))
    assert base.attention_slicing
    control = manager.controlnet(base, str(models["controlnet"]))
    assert list(manager.cache) == [base.key, control.key]  # its base was not evicted for it
    processors = control.pipeline.controlnet.attn_processors.values()
    assert all(type(p).__name__ == "SlicedAttnProcessor" for p in processors)
    ctx = LocalContext()
    request = Request("inference.generate", with_controlnet(models), [photo()])
    reply = InferenceInstructor(manager).generate(request, ctx)
    assert Image.open(io.BytesIO(bytes(reply.attachments[0]))).size == (96, 64)
    refiner = manager.refiner(str(models["refiner"]))
    assert list(manager.cache) == [refiner.key]  # the base was evicted, its ControlNet with it


# -- Upscaling ----------------------------------------------------------------------------


def picture(width: int = 32, height: int = 32, shift: int = 0, mode: str = "RGB") -> bytes:
    """A small picture to upscale: two shapes on a background (half transparent in RGBA)."""
    w, h = max(width, 16), max(height, 16)  # drawn at least 16 x 16, then shrunk
    img = Image.new("RGBA", (w, h), (40, 70, 110, 128))
    draw = ImageDraw.Draw(img)
    draw.ellipse([2 + shift, 2, w // 2 + shift, h // 2], fill=(230, 200, 30, 255))
    draw.rectangle([w // 2, h // 2, w - 3, h - 3], fill=(20, 220, 120, 255))
    return png(img.resize((width, height), Image.Resampling.BILINEAR).convert(mode))


def learned(models: dict[str, Path], which: str = "upscaler", **over: Any) -> dict[str, Any]:
    # guidance 1.0: no classifier-free guidance, half the work.
    return {"model": str(models[which]), "steps": 3, "seed": 1, "guidance_scale": 1.0, **over}


def upscaled(host: PipeHost, data: dict[str, Any], *attachments: bytes) -> bytes:
    answer = host.call("postprocessing.upscale", data, attachments=list(attachments))
    assert answer["type"] == "response", answer
    return attachment(answer, 0)


def test_x4_upscaler_answers_a_4x_png_with_progress_per_step(sdxl: PipeHost, models: Any) -> None:
    rid = sdxl.request("postprocessing.upscale", learned(models), attachments=[picture()])
    events, answer = sdxl.answer(rid)
    assert answer["type"] == "response", answer
    img = image(answer)
    assert (img.format, img.size, img.mode) == ("PNG", (128, 128), "RGB")
    data = answer["data"]
    assert (data["width"], data["height"], data["format"]) == (128, 128, "png")
    assert data["method"] == "sd-x4-upscaler"
    assert data["model"] == str(models["upscaler"].resolve())
    assert (data["factor"], data["learned_factor"], data["learned_size"]) == (4, 4, [128, 128])
    assert data["resized"] is False
    assert (data["seed"], data["steps"], data["noise_level"]) == (1, 3, 20)
    progress = [e["data"] for e in events if e["event_name"] == "progress"]
    assert [p["message"] for p in progress] == ["step 1/3", "step 2/3", "step 3/3"]
    assert {p["stage"] for p in progress} == {"upscale"} and progress[-1]["progress"] == 1.0


def test_x4_upscaler_same_seed_same_image_and_the_inputs_steer_it(
    sdxl: PipeHost, models: Any
) -> None:
    first = upscaled(sdxl, learned(models), picture())
    assert upscaled(sdxl, learned(models), picture()) == first
    assert upscaled(sdxl, learned(models, seed=2), picture()) != first
    assert upscaled(sdxl, learned(models), picture(shift=8)) != first
    assert upscaled(sdxl, learned(models, noise_level=200), picture()) != first
    assert upscaled(sdxl, learned(models, prompt="a cat"), picture()) != first
    # With guidance the negative prompt counts too (guidance 1.0 ignores it).
    guided = learned(models, guidance_scale=5.0)
    assert upscaled(sdxl, guided, picture()) != upscaled(
        sdxl, {**guided, "negative_prompt": "blurry"}, picture()
    )


def test_x4_upscaler_cancel_at_step_1_of_50_stops_it(sdxl: PipeHost, models: Any) -> None:
    rid = sdxl.request("postprocessing.upscale", learned(models, steps=50), attachments=[picture()])
    first = sdxl.read()
    assert first["request_id"] == rid and first["data"]["message"] == "step 1/50", first
    sdxl.send({"message_id": "c-3", "type": "cancel", "request_id": rid})
    events, answer = sdxl.answer(rid)
    assert answer["type"] == "error" and answer["error"]["code"] == "cancelled", answer
    assert len(events) < 49, "the upscale went on after the cancel"
    assert sdxl.call("status")["data"]["postprocessing"]["running"] is None


def test_x4_upscaler_by_name_with_other_factors_and_odd_sizes(
    sdxl: PipeHost, models: Any, roots: dict[str, Path]
) -> None:
    # Found under FERRY_ML_MODELS; factor 2 is the x4 pass, then Lanczos down by half.
    answer = sdxl.call(
        "postprocessing.upscale",
        learned(models, model="upscaler", factor=2),
        attachments=[picture()],
    )
    assert answer["type"] == "response", answer
    assert image(answer).size == (64, 64)
    data = answer["data"]
    assert data["model"] == str(models["upscaler"].resolve())
    assert (data["learned_size"], data["resized"]) == ([128, 128], True)
    # Sides that are not multiples of the VAE's 4 keep their exact size (padded, cropped).
    odd = sdxl.call("postprocessing.upscale", learned(models), attachments=[picture(30, 18)])
    assert image(odd).size == (120, 72) and odd["data"]["resized"] is False
    # 2.5 of 7 x 5: 17.5 x 12.5 rounds to 18 x 12 (Python's round: half to even).
    path = roots["inputs"] / "small.png"
    path.write_bytes(picture(7, 5))
    small = sdxl.call("postprocessing.upscale", learned(models, factor=2.5, path=str(path)))
    assert image(small).size == (18, 12) and small["data"]["learned_size"] == [28, 20]
    webp = sdxl.call(
        "postprocessing.upscale", learned(models, format="webp"), attachments=[picture()]
    )
    assert Image.open(io.BytesIO(attachment(webp, 0))).format == "WEBP"


def test_x4_upscaler_keeps_transparency(sdxl: PipeHost, models: Any) -> None:
    source = Image.open(io.BytesIO(picture(16, 8, mode="RGBA")))
    answer = sdxl.call(
        "postprocessing.upscale", learned(models), attachments=[picture(16, 8, mode="RGBA")]
    )
    img = image(answer)
    assert (img.size, img.mode) == ((64, 32), "RGBA")
    alpha = source.getchannel("A").resize((64, 32), Image.Resampling.LANCZOS)
    assert img.getchannel("A").tobytes() == alpha.tobytes()


def test_latent_upscaler_answers_a_2x_png_with_progress_per_step(
    sdxl: PipeHost, models: Any
) -> None:
    data = learned(models, "latent_upscaler")
    events, answer = sdxl.answer(
        sdxl.request("postprocessing.upscale", data, attachments=[picture(30, 18)])
    )
    assert answer["type"] == "response", answer
    assert image(answer).size == (60, 36)
    assert answer["data"]["method"] == "sd-x2-latent-upscaler"
    assert "noise_level" not in answer["data"]
    progress = [e["data"]["message"] for e in events if e["event_name"] == "progress"]
    assert progress == ["step 1/3", "step 2/3", "step 3/3"]
    first = attachment(answer, 0)
    assert upscaled(sdxl, data, picture(30, 18)) == first
    assert upscaled(sdxl, {**data, "seed": 2}, picture(30, 18)) != first
    # The prompt steers it with guidance (1.0 here); at guidance 0, its default, diffusers
    # drops the prompt, so one is refused there.
    assert upscaled(sdxl, {**data, "prompt": "a cat"}, picture(30, 18)) != first
    guided = {**data, "guidance_scale": 4.0, "prompt": "a cat", "negative_prompt": "blurry"}
    assert upscaled(sdxl, guided, picture(30, 18)) != first
    unguided = {**data, "prompt": "a cat"}
    del unguided["guidance_scale"]
    message = error_of(sdxl.call("postprocessing.upscale", unguided, attachments=[picture()]))
    assert message.startswith("prompt: sd-x2-latent-upscaler ignores the prompt"), message
    # Smaller than its UNet's deepest level allows: padded up, cropped back.
    assert image(sdxl.call("postprocessing.upscale", data, attachments=[picture(5, 3)])).size == (
        10,
        6,
    )


def test_a_missing_upscaler_is_named_with_the_places_looked_at(sdxl: PipeHost, models: Any) -> None:
    data = learned(models, model="stabilityai/stable-diffusion-x4-upscaler")
    message = error_of(sdxl.call("postprocessing.upscale", data, attachments=[picture()]))
    assert message == "model: not found or not allowed"


def test_a_pipeline_that_is_not_an_upscaler_is_refused(sdxl: PipeHost, models: Any) -> None:
    data = learned(models, model=str(models["base"]))
    message = error_of(sdxl.call("postprocessing.upscale", data, attachments=[picture()]))
    assert message == (
        f"model: {models['base'].resolve()} holds a StableDiffusionXLPipeline, not an upscaler "
        "(StableDiffusionUpscalePipeline or StableDiffusionLatentUpscalePipeline)"
    )


@pytest.mark.parametrize(
    ("which", "data", "expected"),
    [
        ("upscaler", {"noise_level": 351}, "noise_level: 351 is above 350"),
        ("latent_upscaler", {"noise_level": 5}, "noise_level: sd-x2-latent-upscaler takes none"),
        ("upscaler", {"steps": 0}, "steps: expected an integer from 1 to 200, not 0"),
        ("upscaler", {"seed": -1}, "seed: expected an integer from 0 to"),
        ("upscaler", {"guidance_scale": "high"}, "guidance_scale: expected a number from 0 to"),
        ("upscaler", {"prompt": 3}, "prompt: expected a string"),
        ("upscaler", {"model": ""}, "model: expected an upscaler folder or name"),
        (None, {"steps": 3}, "steps: only a learned upscaler takes it (no upscaler model"),
        (
            None,
            {"method": "lanczos", "model": "upscaler"},
            "model: only a learned upscaler takes it (method is 'lanczos')",
        ),
        (None, {"method": "learned"}, "method: 'learned' needs an upscaler model"),
        (None, {"method": "esrgan"}, "method: expected 'lanczos' or 'learned', not 'esrgan'"),
        (None, {"factor": 9}, "factor: expected a number from 1 to 8, not 9"),
        (None, {"format": "tiff"}, "format: unknown image format 'tiff'"),
        (None, {"stpes": 3}, "stpes: not a field of postprocessing.upscale"),
    ],
)
def test_bad_upscale_fields_are_named(
    sdxl: PipeHost, models: Any, which: str | None, data: dict[str, Any], expected: str
) -> None:
    request = learned(models, which, **data) if which else data
    message = error_of(sdxl.call("postprocessing.upscale", request, attachments=[picture()]))
    assert message.startswith(expected), message


def test_an_image_too_large_for_the_learned_upscaler_is_refused(
    sdxl: PipeHost, models: Any
) -> None:
    wide = picture(513, 8)  # x4: 2052 px, above the 2048 a side the worker makes
    message = error_of(sdxl.call("postprocessing.upscale", learned(models), attachments=[wide]))
    assert message.startswith(
        "attachments[0]: 513x8 is too large for sd-x4-upscaler: its output would be 2052x32"
    ), message
    assert "method 'lanczos'" in message
    lanczos = sdxl.call("postprocessing.upscale", {"factor": 4}, attachments=[wide])
    assert image(lanczos).size == (2052, 32) and lanczos["data"]["method"] == "lanczos"
    # Lanczos makes at most 16384 px a side.
    long = picture(2049, 2)
    message = error_of(sdxl.call("postprocessing.upscale", {"factor": 8}, attachments=[long]))
    assert message.startswith("factor: 8 makes 16392x16 of 2049x2, above 16384 px a side")


def test_upscalers_lists_the_models_found_and_the_default(sdxl: PipeHost, models: Any) -> None:
    answer = sdxl.call("postprocessing.upscalers")["data"]
    assert answer["methods"] == ["lanczos", "sd-x4-upscaler", "sd-x2-latent-upscaler"]
    assert answer["models"] == [
        {
            "name": "latent-upscaler",
            "path": str(models["latent_upscaler"]),
            "method": "sd-x2-latent-upscaler",
        },
        {"name": "upscaler", "path": str(models["upscaler"]), "method": "sd-x4-upscaler"},
    ]
    assert answer["default"] == {"name": None, "path": None, "method": "lanczos", "error": None}


def test_model_load_list_and_unload_an_upscaler(sdxl: PipeHost, models: Any) -> None:
    loaded = sdxl.call("model.load", {"upscaler": "upscaler"})["data"]["loaded"]
    assert [e["kind"] for e in loaded] == ["upscaler"] and loaded[0]["bytes"] > 0
    assert loaded[0]["key"] == ["upscaler", str(models["upscaler"].resolve())]
    listed = sdxl.call("model.list")["data"]["loaded"]
    assert loaded[0]["key"] in [e["key"] for e in listed]
    unloaded = sdxl.call("model.unload", {"upscaler": str(models["upscaler"])})["data"]
    assert unloaded["unloaded"] == [loaded[0]["key"]]
    assert error_of(sdxl.call("model.load", {})).startswith("base: required")
    refiner_only = sdxl.call("model.load", {"refiner": str(models["refiner"])})
    assert error_of(refiner_only) == "base: required (a local SDXL folder) with refiner"
    not_one = sdxl.call("model.load", {"upscaler": str(models["base"])})
    assert error_of(not_one).startswith("upscaler: ") and "not an upscaler" in error_of(not_one)


def test_the_default_upscaler_comes_from_ferry_ml_upscaler(
    models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ferry_sdxl.device import GIB, DeviceInfo
    from ferry_sdxl.instructors import PostprocessingInstructor
    from ferry_sdxl.models import ModelManager
    from ferry_worker.messages import Request

    monkeypatch.setenv("FERRY_ML_MODELS", str(models["base"].parent))
    monkeypatch.setenv("FERRY_ML_UPSCALER", "latent-upscaler")
    post = PostprocessingInstructor(ModelManager(DeviceInfo("cpu", "cpu", 0, 8 * GIB, 8 * GIB)))

    def run(data: dict[str, Any]) -> Any:
        return post.upscale(Request("postprocessing.upscale", data, [picture()]), LocalContext())

    reply = run({"steps": 2, "seed": 3})
    assert reply.data["method"] == "sd-x2-latent-upscaler"
    assert reply.data["model"] == str(models["latent_upscaler"].resolve())
    assert Image.open(io.BytesIO(bytes(reply.attachments[0]))).size == (64, 64)
    assert run({"method": "lanczos"}).data["method"] == "lanczos"
    assert run({"model": "upscaler", "steps": 2}).data["method"] == "sd-x4-upscaler"
    listed = post.upscalers(Request("postprocessing.upscalers", None, []), LocalContext())
    assert listed["default"]["method"] == "sd-x2-latent-upscaler"

    monkeypatch.setenv("FERRY_ML_UPSCALER", "nowhere")
    with pytest.raises(FerryError) as raised:
        run({})
    assert raised.value.code == "invalid_request"
    assert raised.value.message.startswith("FERRY_ML_UPSCALER: not found or not allowed")
    assert "send method 'lanczos'" in raised.value.message
    assert run({"method": "lanczos", "factor": 3}).data["width"] == 96
    listed = post.upscalers(Request("postprocessing.upscalers", None, []), LocalContext())
    assert listed["default"]["error"] == "FERRY_ML_UPSCALER: not found or not allowed"


def test_cache_holds_an_upscaler_within_the_budget(models: Any) -> None:
    from ferry_sdxl.device import GIB, DeviceInfo
    from ferry_sdxl.instructors import PostprocessingInstructor
    from ferry_sdxl.models import ModelManager
    from ferry_worker.messages import Request

    manager = ModelManager(DeviceInfo("cpu", "cpu", 0, 8 * GIB, 8 * GIB), budget=1)
    base = manager.base(str(models["base"]))
    up = manager.upscaler(str(models["upscaler"]))
    assert list(manager.cache) == [up.key]  # the base was evicted to fit the budget
    post = PostprocessingInstructor(manager)
    request = Request("postprocessing.upscale", learned(models), [picture()])
    reply = post.upscale(request, LocalContext())
    assert reply.data["timings"]["load_s"] < 1.0 or manager.cache[up.key] is up  # cached
    assert (
        manager.cache[up.key] is up
        and up.pipeline is manager.upscaler(str(models["upscaler"])).pipeline
    )
    assert base.key not in manager.cache
    manager.base(str(models["base"]))
    assert up.key not in manager.cache  # least recently used first out


# -- Limits -------------------------------------------------------------------------------


def test_seeds_wrap_modulo_2_64_per_image(sdxl: PipeHost, models: Any) -> None:
    top = 2**64 - 1
    answer = sdxl.call(
        "inference.generate", nested(models, hyperparameters={"seed": top, "num_images": 2})
    )
    assert answer["type"] == "response", answer
    assert [i["seed"] for i in answer["data"]["images"]] == [top, 0]
    zero = sdxl.call("inference.generate", nested(models, hyperparameters={"seed": 0}))
    assert attachment(answer, 1) == attachment(zero, 0)


def test_a_prompt_above_8192_characters_is_refused_without_being_echoed(
    sdxl: PipeHost, models: Any
) -> None:
    long = "a fox " * 1366  # 8196 characters
    for field in ("prompt", "negative_prompt"):
        req = nested(models, conditioning={field: long})
        message = error_of(sdxl.call("inference.generate", req))
        assert message == f"conditioning.{field}: 8196 characters, longer than the maximum of 8192"
        checked = sdxl.call("inference.validate", req)["data"]["errors"]
        assert checked == [
            {
                "field": f"conditioning.{field}",
                "message": "8196 characters, longer than the maximum of 8192",
            }
        ]
    at_limit = nested(models, conditioning={"prompt": "x" * 8192})
    assert sdxl.call("inference.generate", at_limit)["type"] == "response"
    up = {"model": str(models["upscaler"]), "steps": 1, "prompt": long}
    message = error_of(sdxl.call("postprocessing.upscale", up, attachments=[picture()]))
    assert message == "prompt: 8196 characters, longer than the maximum of 8192"


def test_a_request_estimated_beyond_the_ceiling_or_the_deadline_is_refused_up_front(
    sdxl: PipeHost, models: Any
) -> None:
    assert sdxl.call("inference.generate", nested(models))["type"] == "response"  # measured
    huge = nested(
        models,
        scheduler={"steps": 200},
        hyperparameters={"num_images": 16},
        dimensions={"width": 2048, "height": 2048},
    )
    estimate = sdxl.call("inference.estimate", huge)["data"]["estimated_seconds"]
    assert estimate > 3600, estimate
    message = error_of(sdxl.call("inference.generate", huge))
    assert message.startswith(f"(request): estimated at {estimate:g} s"), message
    assert "the worker's limit (FERRY_ML_MAX_ESTIMATE_S) of 3600 s" in message
    events, answer = sdxl.answer(sdxl.request("inference.generate", huge, deadline_ms=60_000))
    assert "the time left before the request's deadline of " in error_of(answer)
    assert events == []  # refused before any step
    assert sdxl.call("status")["data"]["inference"]["running"] is None


def test_the_estimate_ceiling_comes_from_ferry_ml_max_estimate_s(
    models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ferry_sdxl.device import GIB, DeviceInfo
    from ferry_sdxl.inference import InferenceInstructor
    from ferry_sdxl.models import ModelManager
    from ferry_worker.messages import Request

    manager = ModelManager(DeviceInfo("cpu", "cpu", 0, 8 * GIB, 8 * GIB))
    inference = InferenceInstructor(manager)
    inference.seconds_per_step_mp = 1.0
    big = nested(models, scheduler={"steps": 30}, dimensions={"width": 1024, "height": 1024})

    def run(data: dict[str, Any], ctx: LocalContext | None = None) -> Any:
        request = Request("inference.generate", data, [])
        return inference.generate(request, ctx or LocalContext())

    monkeypatch.setenv("FERRY_ML_MAX_ESTIMATE_S", "10")
    with pytest.raises(FerryError) as raised:
        run(big)  # 1 s per step and megapixel: 31.5 s
    assert raised.value.code == "invalid_request"
    assert raised.value.message == (
        "(request): estimated at 31.457 s (inference.estimate), above the worker's limit "
        "(FERRY_ML_MAX_ESTIMATE_S) of 10 s: ask for fewer steps, images or pixels"
    )
    assert manager.cache == {}  # refused before anything was loaded
    assert run(nested(models)).data["steps"] == 2  # 0.008 s: runs
    monkeypatch.setenv("FERRY_ML_MAX_ESTIMATE_S", "0")  # no ceiling; the deadline still counts
    inference.seconds_per_step_mp = 1e6
    with pytest.raises(FerryError) as raised:
        run(big, LocalContext(deadline_ms=3_600_000))
    assert "above the time left before the request's deadline" in raised.value.message
    monkeypatch.setenv("FERRY_ML_MAX_ESTIMATE_S", "soon")
    with pytest.raises(ValueError, match="FERRY_ML_MAX_ESTIMATE_S"):
        run(big)


def bomb_png(width: int, height: int) -> bytes:
    """A PNG header declaring ``width`` x ``height`` pixels, with no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_image_decoding_is_bounded_and_its_errors_hold_no_object_reprs(
    sdxl: PipeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = error_of(sdxl.call("postprocessing.convert", {"format": "png"}, attachments=[b"?"]))
    assert message.startswith("attachments[0]: not a readable image"), message
    assert " at 0x" not in message and "<" not in message
    # 9000 x 9000: above the 64 Mpx default, below PIL's own error (2 x 89 Mpx).
    for width in (9000, 100_000):
        bomb = bomb_png(width, 9000)
        message = error_of(
            sdxl.call("postprocessing.convert", {"format": "png"}, attachments=[bomb])
        )
        assert message.startswith("attachments[0]: ") and "67108864 pixels" in message, message
    from ferry_sdxl import images

    monkeypatch.setenv("FERRY_ML_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(FerryError, match=r"^x: (16x8, )?more than the 100 pixels an input image"):
        images.decode(png(Image.new("RGB", (16, 8))), "x")
    monkeypatch.setenv("FERRY_ML_MAX_IMAGE_PIXELS", "128")
    assert images.decode(png(Image.new("RGB", (16, 8))), "x").size == (16, 8)
    # PIL's own guard is put back after each decode, not left at the last call's limit.
    assert Image.MAX_IMAGE_PIXELS == images.DEFAULT_MAX_PIXELS


def test_controlnet_image_by_attachment_object_names_that_attachment(
    sdxl: PipeHost, models: Any
) -> None:
    """``"image": {"attachment": 1}`` is the second attachment, as ``1`` is."""
    two = [png(Image.new("RGB", (64, 64))), photo()]
    by_object = sdxl.call(
        "inference.generate", with_controlnet(models, image={"attachment": 1}), attachments=two
    )
    assert by_object["type"] == "response", by_object
    assert by_object["data"]["controlnet"]["source"] == "attachment 1"
    by_index = sdxl.call("inference.generate", with_controlnet(models, image=1), attachments=two)
    assert attachment(by_index, 0) == attachment(by_object, 0)
    missing = sdxl.call(
        "inference.generate", with_controlnet(models, image={"attachment": 2}), attachments=two
    )
    assert error_of(missing).startswith(
        "conditioning.controlnet.image: attachment 2 is not in the request"
    ), error_of(missing)
    extra = sdxl.call(
        "inference.generate",
        with_controlnet(models, image={"attachment": 0, "page": 1}),
        attachments=two,
    )
    assert error_of(extra).startswith("conditioning.controlnet.image"), error_of(extra)
