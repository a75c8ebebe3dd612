"""``python -m ferry_worker MODULE[:ATTR]``: connect to the host, then import and run a worker.

The channel is opened before ``MODULE`` is imported, so whatever its imports print (a CUDA
banner, a deprecation warning written to stdout) goes to the host's log, never into the
protocol. ``MODULE`` is a module name (``my_pkg.worker``) or a path to a ``.py`` file;
``ATTR`` names the :class:`~ferry_worker.Worker` in it (default ``worker``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .connection import connect
from .worker import Worker

USAGE = "usage: python -m ferry_worker MODULE[:ATTR]   (MODULE: a module name or a .py file)"


def load(target: str) -> Worker:
    """Imports ``MODULE[:ATTR]`` and returns its :class:`Worker`."""
    module_name, _, attr = target.partition(":")
    module: ModuleType
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    worker = getattr(module, attr or "worker", None)
    if not isinstance(worker, Worker):
        raise TypeError(f"{target}: expected a ferry_worker.Worker, found {type(worker).__name__}")
    return worker


def main(argv: list[str] | None = None) -> int:
    """The command's entry point; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    connection = connect()
    worker = load(args[0])
    worker.run(connection)
    return 0


if __name__ == "__main__":
    sys.exit(main())
