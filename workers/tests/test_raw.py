"""Raw handlers: JSON bytes in, attachments lent as views for the call, answers written in
place (``ctx.reply_buffer``).

In-process through ``Worker.handle``; over a framed Unix socket with a host written here from
docs/protocol.md (so each request's attachments land in the worker's receive buffer and the
test chooses their bytes); and under the real ``ferry`` host over shm and socket when
``FERRY_BIN`` names one (``ferry bench --cmd``, which checks every echoed byte).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ferry_worker import (
    Context,
    FerryError,
    LocalContext,
    RawRequest,
    Reply,
    ReplyBuffer,
    Worker,
)

from conftest import FIXTURES, WAIT_S

# -- in process -------------------------------------------------------------------------


def make_worker(seen: dict[str, Any]) -> Worker:
    worker = Worker("raw")

    @worker.raw_operation()
    def look(request: RawRequest, ctx: Context) -> Reply:
        seen["data"] = request.data
        seen["views"] = request.attachments
        seen["obj"] = request.attachments[0].obj
        seen["readonly"] = request.attachments[0].readonly
        return Reply({"sizes": [len(a) for a in request.attachments]}, request.attachments)

    @worker.raw_operation("fill.*")
    def fill(request: RawRequest, ctx: Context) -> Reply:
        n = json.loads(request.data)["n"]
        buf = ctx.reply_buffer(n)
        view = memoryview(buf)
        view[:] = bytes(i % 7 for i in range(n))
        seen["buffer"] = buf
        return Reply(None, [buf])

    @worker.operation()
    def plain(request: Any, ctx: Context) -> Any:
        return request.data

    return worker


def test_raw_handler_gets_json_bytes_and_read_only_views() -> None:
    seen: dict[str, Any] = {}
    worker = make_worker(seen)
    reply = worker.handle("look", {"prompt": "a fox", "n": [1, 2]}, [b"abc", b"\x00\xff"])
    assert json.loads(seen["data"]) == {"prompt": "a fox", "n": [1, 2]}
    assert seen["readonly"] is True
    assert reply.data == {"sizes": [3, 2]}
    assert reply.attachments == [b"abc", b"\x00\xff"]
    assert worker.raw_operations == ["fill.*", "look"]
    assert worker.is_raw("fill.once") and not worker.is_raw("plain")
    assert worker.handle("plain", {"x": 1}).data == {"x": 1}


def test_views_are_revoked_when_the_handler_returns() -> None:
    seen: dict[str, Any] = {}
    worker = make_worker(seen)
    worker.handle("look", None, [b"abc"])
    assert seen["data"] == b"null"
    view = seen["views"][0]
    with pytest.raises(ValueError, match="released"):
        view[0]
    with pytest.raises(ValueError):
        bytes(view)
    # The object behind the view refuses new exports too.
    with pytest.raises(BufferError, match="revoked"):
        memoryview(seen["obj"])
    assert "revoked" in repr(seen["obj"])


def test_a_lent_view_cannot_be_written() -> None:
    worker = Worker("raw")

    @worker.raw_operation()
    def scribble(request: RawRequest, ctx: Context) -> None:
        request.attachments[0][0] = 1

    with pytest.raises(FerryError) as raised:
        worker.handle("scribble", None, [b"abc"])
    assert raised.value.code == "invalid_request"  # the TypeError, mapped as ever
    assert "read-only" in raised.value.message


def test_reply_buffer_is_filled_in_place_and_sent() -> None:
    seen: dict[str, Any] = {}
    worker = make_worker(seen)
    reply = worker.handle("fill.once", {"n": 1000})
    assert reply.attachments == [bytes(i % 7 for i in range(1000))]
    assert len(seen["buffer"]) == 1000


def test_reply_buffer_is_a_writable_byte_buffer() -> None:
    buf = LocalContext().reply_buffer(4)
    assert isinstance(buf, ReplyBuffer) and len(buf) == 4
    memoryview(buf)[:] = b"abcd"
    assert bytes(buf) == b"abcd"


def test_raw_request_made_in_process_copies_and_revokes() -> None:
    request = RawRequest("op", b'{"a":1}', [bytearray(b"xy")])
    view = request.attachments[0]
    assert bytes(view) == b"xy" and request.data == b'{"a":1}'
    request.revoke()
    with pytest.raises(ValueError):
        view[0]
    assert "RawRequest('op'" in repr(request)


# -- over a framed socket, with a host written from docs/protocol.md ----------------------


class SocketHost:
    """Spawns a worker over ``FERRY_TRANSPORT=socket`` (JSON codec) and talks to it."""

    def __init__(self, script: Path) -> None:
        self.dir = tempfile.TemporaryDirectory()
        path = os.path.join(self.dir.name, "s")
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.settimeout(WAIT_S)
        token = secrets.token_hex(8)
        env = {
            **os.environ,
            "FERRY_TRANSPORT": "socket",
            "FERRY_CODEC": "json",
            "FERRY_SOCKET": path,
            "FERRY_TOKEN": token,
        }
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, str(script)], env=env, cwd=FIXTURES, stderr=self.stderr
        )
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(WAIT_S)
        assert self._recv() == b"FRY1" + token.encode()
        self._send(b"FRY1\x00")
        ready, _ = self.read()
        assert ready["event_name"] == "ready"
        self.ids = 0

    def _send(self, body: bytes) -> None:
        self.conn.sendall(struct.pack("<I", len(body)) + body)

    def _exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.conn.recv(n)
            if not chunk:
                raise EOFError(self.log())
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _recv(self) -> bytes:
        return self._exact(struct.unpack("<I", self._exact(4))[0])

    def read(self) -> tuple[dict[str, Any], list[bytes]]:
        body = self._recv()
        (size,) = struct.unpack("<I", body[:4])
        envelope: dict[str, Any] = json.loads(body[4 : 4 + size])
        attachments, at = [], 4 + size
        for a in envelope.get("attachments") or []:
            attachments.append(body[at : at + a["size"]])
            at += a["size"]
        return envelope, attachments

    def call(
        self, operation: str, data: Any = None, attachments: tuple[bytes, ...] = ()
    ) -> tuple[dict[str, Any], list[bytes]]:
        self.ids += 1
        envelope = {
            "version": 1,
            "message_id": f"h-{self.ids}",
            "type": "request",
            "operation": operation,
            "data": data,
            "attachments": [{"size": len(a)} for a in attachments],
        }
        header = json.dumps(envelope).encode()
        self._send(struct.pack("<I", len(header)) + header + b"".join(attachments))
        answer, blobs = self.read()
        assert answer["request_id"] == f"h-{self.ids}", answer
        return answer, blobs

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def close(self) -> int:
        self.conn.close()
        self.listener.close()
        code = self.proc.wait(WAIT_S)
        self.stderr.close()
        self.dir.cleanup()
        return code


@pytest.fixture
def raw_worker() -> Iterator[SocketHost]:
    host = SocketHost(FIXTURES / "raw_worker.py")
    yield host
    assert host.close() == 0, host.log()


def test_raw_echo_over_a_framed_link(raw_worker: SocketHost) -> None:
    blob = bytes(range(256)) * 4096
    answer, blobs = raw_worker.call("echo", {"x": [1, "é"]}, (blob, b"", b"\n"))
    assert answer["type"] == "response" and answer["data"] == {"x": [1, "é"]}
    assert blobs == [blob, b"", b"\n"]


def test_an_exact_name_wins_over_a_raw_untimed_prefix_over_the_wire(raw_worker: SocketHost) -> None:
    # As `Worker.is_raw` decides in process: the exact registration, then the longest prefix.
    plain, _ = raw_worker.call("shape.plain")
    assert plain["data"] == "Request" and plain["metrics"]["processing_time_ms"] >= 0, plain
    deeper, _ = raw_worker.call("shape.deep.x")
    assert deeper["data"] == "Request" and deeper["metrics"]["processing_time_ms"] >= 0, deeper
    raw, _ = raw_worker.call("shape.other")
    assert raw["data"] == "RawRequest" and "metrics" not in raw, raw


def test_kept_views_raise_and_kept_exports_keep_their_bytes(raw_worker: SocketHost) -> None:
    first, second = b"A" * 300_000, bytes(range(256)) * 1000
    answer, _ = raw_worker.call("keep", None, (first, second))
    assert answer["data"]["kept"] == [len(first), len(second)], answer
    # Requests of the same sizes with other bytes: a receive buffer reused in place would
    # now hold these under the kept slice and array.
    for fill in (b"\xee", b"\x11"):
        other = (fill * len(first), fill * len(second))
        _, blobs = raw_worker.call("echo", None, other)
        assert blobs == list(other)
    report, _ = raw_worker.call("check")
    expected = {"view": "raises", "slice_intact": True}
    if report["data"].get("array_intact") is not None:
        expected["array_intact"] = True
    assert report["data"] == expected, raw_worker.log()


def test_reply_buffer_over_a_framed_link(raw_worker: SocketHost) -> None:
    n = 1 << 20
    answer, blobs = raw_worker.call("fill", {"n": n})
    assert answer["data"] == {"n": n}
    assert blobs[0] == bytes(i % 251 for i in range(n))


# -- under the real host ------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_raw_echo_under_the_ferry_binary(transport: str) -> None:
    ferry = os.environ.get("FERRY_BIN")
    if not ferry:
        pytest.skip("FERRY_BIN is not set (the path of a built `ferry` binary)")
    command = f"{sys.executable} -m ferry_worker.echo --raw"
    done = subprocess.run(
        [ferry, "bench", "--cmd", command, "--transport", transport, "--payload", "64,1m"]
        + ["--iterations", "50", "--pipelined", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
