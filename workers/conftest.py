"""pytest set-up shared by the packages' doctests and tests/.

The SDXL worker (``ml/ferry_sdxl``, ``tests/test_ml*.py``) needs torch and diffusers, which
live in the ML environment (scripts/ml-env), not in .venv: without them it is not collected,
and ``FERRY_REQUIRE_ML=1`` (set by scripts/test) turns that into an error.
"""

from __future__ import annotations

import importlib.util
import os

HAVE_ML = all(importlib.util.find_spec(m) is not None for m in ("torch", "diffusers", "jsonschema"))

if not HAVE_ML and os.environ.get("FERRY_REQUIRE_ML") == "1":
    raise RuntimeError("FERRY_REQUIRE_ML=1 but torch/diffusers are missing: run scripts/ml-env")

collect_ignore = (
    []
    if HAVE_ML
    else [
        "ml/ferry_sdxl",
        "tests/test_ml.py",
        "tests/test_ml_canny.py",
        "tests/test_ml_paths.py",
        "tests/test_ml_legacy.py",
    ]
)


def pytest_report_header() -> str:
    if HAVE_ML:
        return "ML tests: on"
    return "ML tests: SKIPPED (no torch/diffusers here; scripts/ml-env makes their environment)"
