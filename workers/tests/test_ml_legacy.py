"""The old system's requests at the SDXL worker: its request shapes normalized to the nested
form (the cases shared with the host's tests, ``fixtures/sdxl_legacy_requests.json``), and its
operation names as aliases, over stdio with the tiny pipeline. Needs the ML environment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ferry_sdxl import request as genreq
from ferry_sdxl.router import ALIASES
from ferry_worker import FerryError

from conftest import PipeHost

FIXTURE = Path(__file__).parent / "fixtures" / "sdxl_legacy_requests.json"
CASES: list[dict[str, Any]] = json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_shared_cases_normalize_as_the_host_does(case: dict[str, Any]) -> None:
    request = case["request"]
    assert genreq.is_flat(request)
    field = case.get("error_field")
    if field is None:
        assert genreq.to_nested(request) == case["normalized"]
        assert genreq.validate(request) == case["normalized"]
        genreq.parse(request)  # the checks across fields hold too
    else:
        with pytest.raises(FerryError) as err:
            genreq.to_nested(request)
        assert err.value.code == "invalid_request"
        assert err.value.message.startswith(f"{field}: "), err.value.message


def test_csharp_keys_become_snake_case() -> None:
    assert genreq.snake("GuidanceScale") == "guidance_scale"
    assert genreq.snake("LoRAs") == "loras"
    assert genreq.snake("NumImages") == "num_images"
    assert genreq.snake("ConditioningScale") == "conditioning_scale"
    assert genreq.snake("VAE") == "vae"
    assert genreq.snake("prompt") == "prompt"


def test_old_load_data_becomes_model_loads() -> None:
    assert genreq.load_data({"model_name": "base"}) == {"base": "base"}
    assert genreq.load_data({"model_path": "base", "vae": "v"}) == {"base": "base", "vae": "v"}
    assert genreq.load_data({"Model": {"Base": "b", "Refiner": "r"}}) == {
        "base": "b",
        "refiner": "r",
    }
    with pytest.raises(FerryError) as err:
        genreq.load_data({"model_name": "a", "base": "b"})
    assert err.value.message == "model_name: base is already given (by base)"
    assert genreq.load_data(None) is None


@pytest.fixture(scope="module")
def sdxl(models: dict[str, Path]) -> Iterator[PipeHost]:
    env = {"FERRY_ML_DEVICE": "cpu", "FERRY_ML_MODELS": str(models["base"].parent)}
    args = ("-m", "ferry_sdxl.main", "--worker", "pipeline_manager", "--log-level", "INFO")
    host = PipeHost(args, env)
    host.wait_s = 300.0  # a hang guard only: loading torch and a model is slow on a busy CPU
    ready = host.read()
    assert ready["event_name"] == "ready", ready
    yield host
    host.close()


def test_the_old_operation_names_are_served(sdxl: PipeHost) -> None:
    ready_ops = set(sdxl.call("capability_query")["data"]["schedulers"])
    assert "DPM++ 2M" in ready_ops
    status = sdxl.call("status_request")["data"]
    assert set(status) >= {"inference", "model", "device"}
    health = sdxl.call("health_check")["data"]
    assert health["status"] == "healthy" and "inference" in health["instructors"]
    assert set(ALIASES) == {
        "load_model",
        "model_load",
        "health_check",
        "capability_query",
        "inference_request",
        "model_load_request",
        "status_request",
        "generate_sdxl_enhanced",
    }


def test_old_requests_generate_through_the_old_names(sdxl: PipeHost, models: Any) -> None:
    base = str(models["base"])
    csharp = {
        "Model": {"Base": base},
        "Scheduler": {"Type": "DPM++", "Steps": 2},
        "Hyperparameters": {"GuidanceScale": 1.0, "Seed": 5},
        "Conditioning": {"Prompt": "a cat", "LoRAs": []},
        "Dimensions": {"Width": 72, "Height": 64},
    }
    _, answer = sdxl.answer(sdxl.request("generate_sdxl_enhanced", csharp))
    assert answer["type"] == "response", answer.get("error")
    assert answer["data"]["scheduler"] == "DPM++ 2M"
    assert (answer["data"]["images"][0]["width"], answer["data"]["images"][0]["height"]) == (72, 64)
    direct = {
        "prompt": "a cat",
        "model_name": base,
        "hyperparameters": {"num_inference_steps": 2, "guidance_scale": 1.0, "seed": 5},
        "dimensions": {"width": 64, "height": 64},
    }
    _, answer = sdxl.answer(sdxl.request("inference_request", direct))
    assert answer["type"] == "response", answer
    assert answer["data"]["steps"] == 2 and answer["data"]["images"][0]["seed"] == 5
    twice = {**direct, "steps": 3}
    answer = sdxl.call("inference_request", twice)
    assert answer["error"]["code"] == "invalid_request"
    assert answer["error"]["message"].startswith("steps: scheduler.steps is already given")


def test_old_load_names_load_the_model(sdxl: PipeHost, models: Any) -> None:
    base = str(models["base"])
    for name, data in [
        ("load_model", {"model_name": base}),
        ("model_load", {"model_path": base}),
        ("model_load_request", {"Model": {"Base": base}}),
    ]:
        answer = sdxl.call(name, data)
        assert answer["type"] == "response", (name, answer)
    answer = sdxl.call("load_model", {"model_name": base, "model_path": base})
    assert answer["error"]["code"] == "invalid_request"
    assert answer["error"]["message"].startswith("model_path: base is already given")
