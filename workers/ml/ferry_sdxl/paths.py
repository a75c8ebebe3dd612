"""Where a request may point on disk: the worker's roots, and the one check every path passes.

A request names folders and files by path: models (base, refiner, VAE, LoRAs, ControlNets,
upscalers), input images (a control image, the image to upscale or convert) and the folder
images are saved in. Each kind has its roots, given to the worker in its environment (the
host configuration's ``[workers.<type>] env``):

- ``FERRY_ML_MODELS``: ``:``-separated folders holding models;
- ``FERRY_ML_INPUTS``: ``:``-separated folders from which input images may be read by path
  (unset: none may be, attachments only);
- ``FERRY_ML_OUTPUTS``: the one folder results may be written under (``output.save_dir``);
  unset, nothing is written to disk.

A name is resolved against each root of its kind in turn (an absolute one as it is), with
``os.path.realpath`` (after ``..`` and symlinks), and must lie inside a root of its kind. A
model is a folder holding its marker file (``model_index.json``, ``config.json``); a LoRA a
``.safetensors`` file or a folder holding one. A file that is read must be a regular file (never a FIFO,
a device, a ``/proc`` or ``/sys`` entry: checked before it is opened, and again on the open
file) of at most ``FERRY_ML_MAX_INPUT_BYTES`` (64 MiB by default), and at most that many bytes
(plus one, to tell) are read, whatever its size says.

Whatever fails, the answer is the same ``invalid_request``, ``<field>: not found or not
allowed``, whether the path is missing, a folder, a device, outside the roots, too large or
not an image: the answers tell nothing about the disk outside the roots, and never echo a
resolved path. The reason goes to the worker's log (``INFO``).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ferry_worker import InvalidRequest

log = logging.getLogger("ferry_sdxl")

MODELS_ENV = "FERRY_ML_MODELS"
INPUTS_ENV = "FERRY_ML_INPUTS"
OUTPUTS_ENV = "FERRY_ML_OUTPUTS"
MAX_INPUT_BYTES_ENV = "FERRY_ML_MAX_INPUT_BYTES"
DEFAULT_MAX_INPUT_BYTES = 64 * 1024 * 1024

# Pseudo file systems whose entries are never read, whatever the roots say: their sizes lie
# (0 for files without end) and some block. Devices anywhere are refused as not regular.
PSEUDO = (Path("/proc"), Path("/sys"))

SAVING_DISABLED = f"saving to disk is not enabled: set {OUTPUTS_ENV}"

_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the check must not block open
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_WRITE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_TRUNC
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class NotAllowed(InvalidRequest):
    """The uniform refusal of a path: ``<field>: not found or not allowed``."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field}: not found or not allowed")
        self.field = field


def refuse(field: str, name: object, why: str) -> NotAllowed:
    """The uniform refusal of ``name`` for ``field``; ``why`` goes to the log only."""
    log.info("%s %.200r refused: %s", field, name, why)
    return NotAllowed(field)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def is_dir(path: Path) -> bool:
    """Whether ``path`` is a folder (``False`` on any error, permissions included)."""
    st = _stat(path)
    return st is not None and stat.S_ISDIR(st.st_mode)


def is_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (``False`` on any error)."""
    st = _stat(path)
    return st is not None and stat.S_ISREG(st.st_mode)


def _holds(folder: Path, suffixes: Sequence[str]) -> bool:
    """Whether ``folder`` holds a regular file ending in one of ``suffixes``."""
    try:
        return any(p.suffix in suffixes and is_file(p) for p in folder.iterdir())
    except OSError:
        return False


def _folders(raw: str) -> tuple[Path, ...]:
    return tuple(_real(Path(p)) for p in raw.split(os.pathsep) if p)


def _max_bytes(env: Mapping[str, str]) -> int:
    raw = env.get(MAX_INPUT_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_INPUT_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{MAX_INPUT_BYTES_ENV}: expected a positive number of bytes, not {raw!r}")
    return value


def _read_regular(path: Path, limit: int) -> bytes | str:
    """The bytes of the regular file ``path`` (at most ``limit``), or why not."""
    st = _stat(path)  # before opening: a FIFO or a device is never opened
    if st is None:
        return "missing or not accessible"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size > limit:
        return f"larger than {limit} bytes"
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        return f"cannot open ({exc.strerror})"
    try:
        st = os.fstat(fd)  # what was opened, should it have been swapped since
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        chunks: list[bytes] = []
        left = limit + 1  # one more than allowed: the size on disk is not trusted
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        return f"larger than {limit} bytes"
    return data


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Roots:
    """The folders requests may name, by kind (see the module's documentation)."""

    models: tuple[Path, ...] = ()
    inputs: tuple[Path, ...] = ()
    outputs: Path | None = None
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Roots:
        """The roots the environment gives (``os.environ`` by default); relative roots are
        taken from the working folder. Raises ``ValueError`` for a bad byte limit."""
        env = os.environ if environ is None else environ
        outputs = env.get(OUTPUTS_ENV, "")
        return cls(
            models=_folders(env.get(MODELS_ENV, "")),
            inputs=_folders(env.get(INPUTS_ENV, "")),
            outputs=_real(Path(outputs)) if outputs else None,
            max_input_bytes=_max_bytes(env),
        )

    # -- resolution ------------------------------------------------------------------------

    @staticmethod
    def inside(name: str, roots: Sequence[Path]) -> list[Path]:
        """Where ``name`` may be under ``roots``: resolved against each (an absolute name as
        it is), keeping those that lie inside the root they were resolved in (an absolute
        one: inside any)."""
        try:
            given = Path(name)
            if not name or "\0" in name:
                return []
            if given.is_absolute():
                real = _real(given)
                return [real] if any(_within(real, r) for r in roots) else []
            found = []
            for root in roots:
                real = _real(root / given)
                if _within(real, root) and real not in found:
                    found.append(real)
            return found
        except (OSError, ValueError):
            return []

    def model_folder(
        self, name: str, field: str, markers: Sequence[str] = ("model_index.json",)
    ) -> tuple[Path, str]:
        """The model folder ``name`` names under the models roots and the first of
        ``markers`` (files in it, such as ``model_index.json``) it holds; markers are tried
        in order, each in every root."""
        candidates = self.inside(name, self.models)
        for marker in markers:
            for folder in candidates:
                if is_dir(folder) and is_file(folder / marker):
                    return folder, marker
        why = "outside the models roots" if not candidates else f"no folder with {markers}"
        raise refuse(field, name, why)

    def model_entry(
        self, name: str, field: str, suffixes: Sequence[str] = (".safetensors",)
    ) -> Path:
        """A regular file ending in one of ``suffixes``, or a folder holding one, under the
        models roots (a LoRA)."""
        candidates = self.inside(name, self.models)
        for path in candidates:
            st = _stat(path)
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode) and _holds(path, suffixes):
                return path
            if stat.S_ISREG(st.st_mode) and path.suffix in suffixes:
                return path
        why = "outside the models roots" if not candidates else "no such folder or file"
        raise refuse(field, name, why)

    def read_input(self, name: str, field: str) -> tuple[bytes, Path]:
        """The bytes of the regular file ``name`` names under the inputs roots, and its path."""
        candidates = self.inside(name, self.inputs)
        why = "outside the inputs roots"
        for path in candidates:
            if any(_within(path, p) for p in PSEUDO):
                why = "a /proc or /sys entry"
                continue
            data = _read_regular(path, self.max_input_bytes)
            if isinstance(data, bytes):
                return data, path
            why = data
        raise refuse(field, name, why)

    # -- outputs ---------------------------------------------------------------------------

    def output_folder(self, name: str, field: str = "output.save_dir") -> Path:
        """The folder ``name`` names under the outputs root, made if missing. Refused when
        no outputs root is configured, or anything else than a folder inside it results."""
        if self.outputs is None:
            raise InvalidRequest(f"{field}: {SAVING_DISABLED}")
        found = self.inside(name, (self.outputs,))
        if not found:
            raise refuse(field, name, "outside the outputs root")
        folder = found[0]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise refuse(field, name, f"cannot make the folder ({exc.strerror})") from None
        if _real(folder) != folder or not is_dir(folder):  # changed under us
            raise refuse(field, name, "not a folder inside the outputs root")
        return folder

    def write_output(self, folder: Path, filename: str, data: bytes, field: str) -> Path:
        """Writes ``data`` to ``filename`` (made safe: one name, no path) in ``folder`` (from
        :meth:`output_folder`), never through a symlink; answers the file's path."""
        safe = _UNSAFE_NAME.sub("_", filename).lstrip(".") or "image"
        path = folder / safe
        try:
            fd = os.open(path, _WRITE_FLAGS, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM):
                raise refuse(field, path.name, f"cannot write ({exc.strerror})") from None
            raise
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return path
