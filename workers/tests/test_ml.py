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

import pytest
from ferry_worker import FerryError, LocalContext
from ferry_worker.ml import request as genreq
from ferry_worker.ml import tiny
from ferry_worker.ml.router import Router
from PIL import Image

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
    }


@pytest.fixture(scope="module")
def sdxl(models: dict[str, Path]) -> Iterator[PipeHost]:
    host = PipeHost(PIPELINE_MANAGER, {"FERRY_ML_DEVICE": "cpu"})
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


def test_controlnet_is_refused_not_faked(sdxl: PipeHost, models: Any) -> None:
    types = sdxl.call("conditioning.controlnet_types")["data"]
    assert types["available"] is False
    req = nested(models, conditioning={"controlnet": {"type": "canny"}})
    answer = sdxl.call("inference.generate", req)
    assert answer["error"]["code"] == "invalid_request"
    assert answer["error"]["message"].startswith("conditioning.controlnet")


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
