"""The old design's entry point: ``python -m ferry_sdxl.main --worker NAME --log-level LEVEL``.

``NAME`` is ``pipeline_manager`` or ``sdxl`` (the SDXL worker, :mod:`ferry_sdxl.worker`), or
``echo`` (the SDK's :mod:`ferry_worker.echo`). The channel to the host is opened before the
worker's module (and torch) is imported, so that whatever those imports print goes to the
host's log, never into the protocol.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ferry_worker import connect
from ferry_worker.__main__ import load

WORKERS = {
    "pipeline_manager": "ferry_sdxl.worker:worker",
    "sdxl": "ferry_sdxl.worker:worker",
    "echo": "ferry_worker.echo:worker",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferry_sdxl.main")
    parser.add_argument("--worker", required=True, choices=sorted(WORKERS))
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    )
    args = parser.parse_args(argv)
    connection = connect()
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    worker = load(WORKERS[args.worker])
    worker.run(connection)
    return 0


if __name__ == "__main__":
    sys.exit(main())
