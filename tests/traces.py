"""The Azure LLM inference traces (CC-BY 4.0) that tests replay: from GPUFORM_TRACES_DIR, else the shared data
beside the checkout (``<repo>/../shared/data/azure-llm-2023``), else the gzip-compressed copies committed in
``tests/fixtures/azure-llm-2023`` (decompressed once per test run), so a fresh clone always has them."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path

from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "azure-llm-2023"


def azure_trace(name: str) -> Path:
    """Path of ``conv.csv`` or ``code.csv``."""
    for base in (os.environ.get("GPUFORM_TRACES_DIR"), REPO.parent / "shared" / "data" / "azure-llm-2023"):
        if base and (Path(base) / name).is_file():
            return Path(base) / name
    target = Path(tempfile.gettempdir()) / f"gpuform-traces-{os.getuid()}" / name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{name}.{os.getpid()}.tmp")
        with gzip.open(FIXTURES / f"{name}.gz", "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.replace(target)
    return target
