"""The gateway stands alone: importing its app loads none of the control plane (the import-linter contracts in
pyproject.toml enforce the same at the package level; this checks what actually ends up loaded)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

CONTROL_PLANE = ["gpuform.config.load", "yaml", "gpuform.state.store", "gpuform.state", "gpuform.engine",
                 "gpuform.cli", "gpuform.plan"]


def test_importing_the_gateway_app_loads_no_loader_yaml_state_store_or_engine() -> None:
    probe = ("import json, sys; import gpuform.gateway.app; "
             f"print(json.dumps([m for m in {CONTROL_PLANE!r} if m in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(result.stdout) == [], f"the gateway app pulled in {result.stdout.strip()}"
    assert "gpuform.gateway.app" in subprocess.run(
        [sys.executable, "-c", "import sys, gpuform.gateway.app; print(sorted(sys.modules))"],
        capture_output=True, text=True, timeout=60, check=True).stdout, "the probe imports what it claims to"
