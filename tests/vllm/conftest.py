"""The vLLM CPU virtualenv and the tiny model, generated once per session (no hub downloads)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

VENV = Path(os.environ.get("GPUFORM_VLLM_VENV", "/opt/gpuform/vllm-venv"))


def venv_python() -> Path:
    """The vLLM virtualenv's python; skips (fails in CI) when the virtualenv is missing."""
    if not (VENV / "bin" / "python").exists():
        if os.environ.get("CI"):
            raise AssertionError(f"the vLLM virtualenv {VENV} is missing: .ci/setup/vllm.sh must run in CI")
        pytest.skip(f"no vLLM virtualenv at {VENV} (run .ci/setup/vllm.sh)")
    return VENV / "bin" / "python"


def run_tool(*args: str | Path) -> None:
    """A script under tools/ run with the vLLM virtualenv's python (it has torch and transformers)."""
    run_tools([args])


def run_tools(calls: list[tuple[str | Path, ...]]) -> None:
    """Several tools/ scripts (each ``(script, *args)``) run one after the other in one interpreter of the vLLM
    virtualenv, so torch and transformers are imported once."""
    driver = ("import json, runpy, sys\n"
              "for call in json.loads(sys.argv[1]):\n"
              "    sys.argv = call\n"
              "    runpy.run_path(call[0], run_name='__main__')\n")
    calls_json = json.dumps([[str(a) for a in call] for call in calls])
    subprocess.run([str(venv_python()), "-c", driver, calls_json], check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "model"
    run_tool(REPO / "tools/vllm/tiny_model.py", out)
    return out
