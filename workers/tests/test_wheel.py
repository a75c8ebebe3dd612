"""The SDK as users get it: the wheel ``maturin build`` makes, installed into a clean venv.

The other tests import the package from the source tree (an editable install), where a module
left out of the wheel, or an ML module left in it, would go unnoticed. Here the wheel is
built, checked to hold the SDK and nothing else (no SDXL code, no dependencies), installed
with ``pip --no-index`` (no network) into a fresh virtual environment, imported there in
isolated mode (``python -I``: no PYTHONPATH, no source tree), and its echo worker is served
to a host: this file's Python host always, and the real ``ferry`` binary when ``FERRY_BIN``
names one (``ferry call`` over every transport the module reports).

Every wait here is for an event (a process exiting, a protocol line arriving), with a
generous watchdog against hangs; nothing waits for time to pass.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import PipeHost, attachment

pytestmark = pytest.mark.wheel

WORKERS = Path(__file__).resolve().parents[1]
REPO = WORKERS.parent
# Watchdogs for subprocesses that should end by themselves, never timing assertions. The
# build allows for recompiling the native module after a Rust edit on a slow machine.
BUILD_WATCHDOG_S = 1800
STEP_WATCHDOG_S = 300
# What the SDK must not pull in: the SDXL application and the ML libraries it uses.
ML_MODULES = ("ferry_sdxl", "ferry_worker.ml", "torch", "diffusers", "numpy", "PIL", "jsonschema")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path  # the clean venv's interpreter


def dev_interpreter() -> Path:
    """The interpreter scripts/python-env builds the native module for.

    cargo reruns pyo3's build script, and so recompiles pyo3 and the module (about a minute
    on a small machine), whenever the interpreter path or ``VIRTUAL_ENV`` differ from the
    previous build's. Building the wheel for the same interpreter, in the same environment,
    reuses that release build instead (``FERRY_PYTHON`` if set, as scripts/test exports it
    for the Rust tests; else the repository's .venv; else this interpreter).
    """
    for candidate in (os.environ.get("FERRY_PYTHON"), REPO / ".venv" / "bin" / "python"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return Path(sys.executable)


def maturin_command(python: Path) -> list[str]:
    """maturin, from requirements-dev.txt: next to ``python``, else installed for this
    interpreter (the ML environment shares its packages, not its ``bin/``), else on PATH."""
    beside = python.parent / "maturin"
    if beside.is_file():
        return [str(beside)]
    try:
        for file in importlib.metadata.distribution("maturin").files or ():
            if file.name == "maturin" and file.parent.name == "bin":
                return [str(file.locate())]
    except importlib.metadata.PackageNotFoundError:
        pass
    found = shutil.which("maturin")
    if found is None:
        pytest.fail("maturin is missing: run scripts/python-env (workers/requirements-dev.txt)")
    return [found]


def run(command: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """Runs ``command`` to its end; fails the test with its output if it fails."""
    kw.setdefault("timeout", STEP_WATCHDOG_S)
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kw)
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited with {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    top = tmp_path_factory.mktemp("wheel")
    python = dev_interpreter()
    env = {**os.environ}
    venv = python.parent.parent
    if (venv / "pyvenv.cfg").is_file():
        env["VIRTUAL_ENV"] = str(venv)  # as scripts/python-env sets it (see dev_interpreter)
    else:
        env.pop("VIRTUAL_ENV", None)
    out = top / "dist"
    run(
        [
            *maturin_command(python),
            "build",
            "--release",
            "--manifest-path",
            str(WORKERS / "Cargo.toml"),
            # Where scripts/python-env builds the module: what it compiled is reused.
            "--target-dir",
            str(WORKERS.parent / "target"),
            "--interpreter",
            str(python),
            "--out",
            str(out),
        ],
        env=env,
        timeout=BUILD_WATCHDOG_S,
    )
    wheels = sorted(out.glob("ferry_worker-*.whl"))
    assert len(wheels) == 1, f"expected one wheel, found {wheels}"
    clean = top / "venv"
    # The wheel is built for `python`'s version; the venv gets that same base interpreter,
    # and no pip of its own (ensurepip takes longer than the rest of this test): this
    # interpreter's pip installs into it (`pip --python`), so it ends up holding the SDK only.
    run([str(python), "-m", "venv", "--without-pip", str(clean)])
    clean_python = clean / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(clean_python)]
    run([*pip, "install", "--no-index", "--no-deps", "--quiet", str(wheels[0])])
    yield Installed(wheels[0], clean_python)


def test_the_wheel_holds_the_sdk_only(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line
            for line in wheel.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    tops = {name.split("/", 1)[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"ferry_worker"}
    assert not [n for n in names if n.startswith(("ferry_worker/ml/", "ferry_sdxl/"))]
    assert "ferry_worker/_native.pyi" in names and "ferry_worker/py.typed" in names
    assert any(n.startswith("ferry_worker/_native.") and n.endswith(".so") for n in names)
    assert requires == [], "the SDK must install with no dependencies"


def test_the_installed_sdk_imports_alone(installed: Installed, tmp_path: Path) -> None:
    probe = f"""
import importlib.metadata, importlib.util, json, sys
import ferry_worker, ferry_worker.echo, ferry_worker.__main__
print(json.dumps({{
    "file": ferry_worker.__file__,
    "codes": list(ferry_worker._native.ERROR_CODES),
    "found": [m for m in {ML_MODULES!r} if importlib.util.find_spec(m) is not None],
    "loaded": [m for m in {ML_MODULES!r} if m in sys.modules],
    "installed": sorted(d.metadata["Name"] for d in importlib.metadata.distributions()),
}}))
"""
    # -I: no PYTHONPATH, no user site, no current folder: only the clean venv's packages.
    done = run([str(installed.python), "-I", "-c", probe], cwd=tmp_path)
    seen = json.loads(done.stdout)
    assert Path(seen["file"]).is_relative_to(installed.python.parent.parent)
    assert seen["codes"][-1] == "internal"
    assert seen["found"] == [] and seen["loaded"] == []
    assert seen["installed"] == ["ferry-worker"]


def test_the_installed_echo_worker_serves_a_host(installed: Installed, spawn: Any) -> None:
    w: PipeHost = spawn("-I", "-m", "ferry_worker.echo", python=str(installed.python))
    ready = w.read()
    assert ready["event_name"] == "ready" and ready["data"]["worker_type"] == "echo"
    answer = w.call("echo", {"from": "the wheel"}, attachments=[b"\x00wheel"])
    assert answer["data"] == {"from": "the wheel"} and attachment(answer, 0) == b"\x00wheel"
    error = w.call("fail", {"code": "overloaded", "message": "busy"})["error"]
    assert (error["code"], error["message"], error["retryable"]) == ("overloaded", "busy", True)
    assert w.call("shutdown")["data"] == {"status": "shutting_down"}
    assert w.wait() == 0


def test_the_installed_echo_worker_under_the_ferry_binary(
    installed: Installed, tmp_path: Path
) -> None:
    ferry = os.environ.get("FERRY_BIN")
    if not ferry:
        pytest.skip("FERRY_BIN is not set (the path of a built `ferry` binary)")
    listed = run(
        [
            str(installed.python),
            "-I",
            "-c",
            "import ferry_worker, json; print(json.dumps(ferry_worker.TRANSPORTS))",
        ],
        cwd=tmp_path,
    )
    command = f"{installed.python} -I -m ferry_worker.echo"
    for transport in json.loads(listed.stdout):
        done = run(
            [ferry, "call", "--transport", transport, "--cmd", command, "echo", '{"n": [1, 2]}'],
            cwd=tmp_path,
        )
        assert json.loads(done.stdout) == {"n": [1, 2]}, transport
