"""The Azure LLM inference traces (CC-BY 4.0) that tests replay. They are not in the repository: they live in
the shared data beside the checkout (``<repo>/../shared/data/azure-llm-2023``), or where GPUFORM_TRACES_DIR
points. A developer without them skips; CI, which always has them, fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO


def azure_trace(name: str) -> Path:
    """Path of ``conv.csv`` or ``code.csv``."""
    base = Path(os.environ.get("GPUFORM_TRACES_DIR") or REPO.parent / "shared" / "data" / "azure-llm-2023")
    path = base / name
    if not path.is_file():
        if os.environ.get("CI"):
            raise AssertionError(f"the Azure trace {path} is missing: CI must have the shared data beside the "
                                 "checkout (or set GPUFORM_TRACES_DIR)")
        pytest.skip(f"Azure trace {path} not found (set GPUFORM_TRACES_DIR to the azure-llm-2023 directory)")
    return path
