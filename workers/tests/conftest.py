"""A minimal ferry host in Python, speaking the protocol over a worker's stdin/stdout.

It exists to test the worker side from pytest without the Rust host; the Rust host drives
the same worker in crates/ferry-server/tests/python/python_worker.rs.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
WAIT_S = 30.0  # a watchdog for reads, far above any expected time; never a timing assertion


class PipeHost:
    """Spawns ``python ARGS...`` as a ferry worker over stdio (NDJSON) and talks to it.

    ``python`` defaults to this test's interpreter.
    """

    def __init__(
        self, args: Sequence[str], env: dict[str, str] | None = None, python: str | None = None
    ) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        full_env = {**os.environ, "FERRY_TRANSPORT": "stdio", "FERRY_CODEC": "json"}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [python or sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=full_env,
            cwd=FIXTURES,
        )
        self._buf = b""
        self.wait_s = WAIT_S
        self._ids = itertools.count(1)
        self.lines: list[bytes] = []

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"version": 1, **message}).encode() + b"\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        """The next line on the worker's stdout, which must be a protocol message."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.wait_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(
                    f"no line from the worker in {self.wait_s} s; stderr:\n{self.log()}"
                )
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise EOFError(f"worker closed stdout; stderr:\n{self.log()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        self.lines.append(line)
        message: dict[str, Any] = json.loads(line)
        return message

    def request(
        self,
        operation: str,
        data: Any = None,
        *,
        attachments: Sequence[bytes] = (),
        deadline_ms: int | None = None,
    ) -> str:
        rid = f"r-{next(self._ids)}"
        message: dict[str, Any] = {"message_id": rid, "type": "request", "operation": operation}
        if data is not None:
            message["data"] = data
        if deadline_ms is not None:
            message["deadline_ms"] = deadline_ms
        if attachments:
            message["attachments"] = [
                {"size": len(a), "data_base64": base64.b64encode(a).decode()} for a in attachments
            ]
        self.send(message)
        return rid

    def answer(self, rid: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Events for ``rid``, then its response or error."""
        events = []
        while True:
            message = self.read()
            if message.get("request_id") != rid:
                continue
            if message["type"] == "event":
                events.append(message)
            else:
                return events, message

    def call(self, operation: str, data: Any = None, **kw: Any) -> dict[str, Any]:
        return self.answer(self.request(operation, data, **kw))[1]

    def wait(self) -> int:
        return self.proc.wait(timeout=WAIT_S)

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self.stderr.close()


@pytest.fixture
def spawn() -> Iterator[Any]:
    """``spawn(*args, env=..., python=...)`` starts a worker; all are killed at the end of the
    test."""
    hosts: list[PipeHost] = []

    def start(*args: str, env: dict[str, str] | None = None, python: str | None = None) -> PipeHost:
        host = PipeHost(args, env, python)
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.close()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny random-weight SDXL models (ML tests only), built once a session into one folder
    (``models["base"].parent``, the models root the ML tests give as ``FERRY_ML_MODELS``)."""
    from ferry_sdxl import tiny

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
        "upscaler": tiny.save_upscaler(root / "upscaler", seed=5),
        "latent_upscaler": tiny.save_latent_upscaler(root / "latent-upscaler", seed=6),
    }


def attachment(message: dict[str, Any], i: int) -> bytes:
    return base64.b64decode(message["attachments"][i]["data_base64"])
