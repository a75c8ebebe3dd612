"""The SDXL worker (``python -m ferry_worker.main --worker pipeline_manager``) driven over stdio.

A tiny SDXL pipeline with random weights is built in the session's set-up
(:mod:`ferry_worker.ml.tiny`), saved with ``save_pretrained`` and loaded by the worker from
that folder, as a real model would be. Needs the ML environment (scripts/ml-env).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ferry_worker import FerryError, LocalContext
from ferry_worker.ml import request as genreq
from ferry_worker.ml import tiny
from ferry_worker.ml.router import Router
from PIL import Image, ImageDraw

from conftest import PipeHost, attachment

PIPELINE_MANAGER = (
    "-m",
    "ferry_worker.main",
    "--worker",
    "pipeline_manager",
    "--log-level",
    "INFO",
)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-sdxl")
    base = tiny.save_pipeline(root / "base", seed=0)
    return {
        "base": base,
        "refiner": tiny.save_pipeline(root / "refiner", seed=1),
        "lora": tiny.save_lora(base, root / "lora", seed=2),
        "controlnet": tiny.save_controlnet(base, root / "controlnet", seed=3),
        # SDXL's four-level control image embedding (8x) on the tiny VAE's 2x latents.
        "controlnet_misfit": tiny.save_controlnet(
            base, root / "controlnet-misfit", seed=4, embedding_channels=(16, 32, 64, 128)
        ),
    }


@pytest.fixture(scope="module")
def sdxl(models: dict[str, Path]) -> Iterator[PipeHost]:
    env = {"FERRY_ML_DEVICE": "cpu", "FERRY_ML_MODELS": str(models["base"].parent)}
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
    from ferry_worker.ml.router import PREFIXES

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
    progress = [e["data"] for e in events if e["event_name"] == "progress"]
    assert [p["message"] for p in progress] == [f"step {i}/3" for i in range(1, 4)]
    assert progress[-1]["progress"] == 1.0


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
    first = sdxl.read()
    assert first["request_id"] == rid and first["data"]["message"] == "step 1/50", first
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
    assert len([e for e in events if e["event_name"] == "progress"]) == 4


def test_flat_form_through_the_old_operation_name(sdxl: PipeHost, models: Any) -> None:
    flat = {"model": str(models["base"]), "prompt": "a cat", "width": 64, "height": 64}
    flat.update({"steps": 2, "seed": 3, "num_images": 2, "scheduler": "DDIM"})
    _, answer = sdxl.answer(sdxl.request("inference", flat))
    assert answer["type"] == "response", answer
    assert len(answer["attachments"]) == 2
    assert [i["seed"] for i in answer["data"]["images"]] == [3, 4]


def test_save_dir_writes_the_files(sdxl: PipeHost, models: Any, tmp_path: Path) -> None:
    _, answer = generate(sdxl, nested(models, output={"save_dir": str(tmp_path)}))
    path = Path(answer["data"]["images"][0]["path"])
    assert path.parent == tmp_path and path.read_bytes() == attachment(answer, 0)


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
    assert "stabilityai/sdxl" in answer["error"]["message"]
    assert "model_index.json" in answer["error"]["message"]


def test_validate_and_estimate(sdxl: PipeHost, models: Any) -> None:
    ok = sdxl.call("inference.validate", nested(models))["data"]
    assert ok["valid"] is True and ok["errors"] == []
    bad = sdxl.call("inference.validate", nested(models, dimensions={"height": 1}))["data"]
    assert bad["valid"] is False and bad["errors"][0]["field"] == "dimensions.height"
    estimate = sdxl.call("inference.estimate", nested(models))["data"]
    assert estimate["steps"] == 2 and estimate["batch_size"] >= 1
    assert estimate["estimated_seconds"] is not None  # earlier generations were measured


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
    from ferry_worker.ml.worker import build

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
    progress = [e["data"]["message"] for e in events if e["event_name"] == "progress"]
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
    from ferry_worker.ml.canny import canny

    source = Image.open(io.BytesIO(photo())).resize((96, 64), Image.Resampling.BICUBIC)
    edge_map = png(canny(source))
    computed = sdxl.call("inference.generate", with_controlnet(models), attachments=[photo()])
    ready = sdxl.call(
        "inference.generate", with_controlnet(models, preprocess=False), attachments=[edge_map]
    )
    assert ready["data"]["controlnet"]["preprocessed"] is False
    assert attachment(ready, 0) == attachment(computed, 0)


def test_depth_controlnet_with_a_supplied_16_bit_map_from_a_path(
    sdxl: PipeHost, models: Any, tmp_path: Path
) -> None:
    path = tmp_path / "depth.png"
    depth_map().save(path)
    req = with_controlnet(models, type="depth", image=str(path))
    answer = sdxl.call("inference.generate", req)
    assert answer["type"] == "response", answer
    assert image(answer).size == (96, 64)
    used = answer["data"]["controlnet"]
    assert used["type"] == "depth" and used["preprocessed"] is False
    assert used["source"] == str(path) and "thresholds" not in used
    flat = Image.new("I;16", (64, 64))
    flat_path = tmp_path / "flat.png"
    flat.save(flat_path)
    other = sdxl.call(
        "inference.generate", with_controlnet(models, type="depth", image=str(flat_path))
    )
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
    assert message.startswith("conditioning.controlnet.model:"), message
    assert "diffusers/controlnet-canny-sdxl-1.0" in message and "config.json" in message
    assert str(models["base"].parent / "diffusers") in message  # FERRY_ML_MODELS was searched


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
        ({"image": "/nonexistent/control.png"}, [], "cannot read '/nonexistent/control.png'"),
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
    assert len([e for e in events if e["event_name"] == "progress"]) == 4
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
    first = sdxl.read()
    assert first["request_id"] == rid and first["data"]["message"] == "step 1/50", first
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
    assert error_of(bad).startswith("controlnet: model 'nowhere' not found")


def test_cache_keeps_a_controlnet_s_base_and_they_leave_together(models: Any) -> None:
    from ferry_worker.messages import Request
    from ferry_worker.ml.device import GIB, DeviceInfo
    from ferry_worker.ml.inference import InferenceInstructor
    from ferry_worker.ml.models import ModelManager

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
