"""``import:`` blocks (Terraform's import blocks): plan shows ``importing``, apply adopts without recreating."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuform.state.store import LocalStateStore
from tests.conftest import free_port, local_config, run_gpuform, write_config

pytestmark = pytest.mark.integration


def test_an_import_block_adopts_a_running_endpoint_and_reports_a_missing_one(workdir: Path) -> None:
    d = str(workdir)
    write_config(workdir, local_config(free_port()))
    run_gpuform("-C", d, "apply", "-auto-approve", check=True)
    run_gpuform("-C", d, "state", "rm", "endpoint.echo", check=True)  # still registered, no longer managed
    write_config(workdir, "import:\n  endpoint.echo: echo\n", "imports.yaml")

    planned = run_gpuform("-C", d, "plan", "-json")
    assert planned.returncode == 0, planned.stderr
    changes = {c["address"]: c for c in json.loads(planned.stdout)["resource_changes"]}
    assert changes["endpoint.echo"]["change"]["importing"] == {"id": "echo"}
    assert changes["endpoint.echo"]["change"]["actions"] == ["no-op"], "adopted as it runs, not created again"
    assert "importing" not in changes["gateway.main"]["change"]
    text = run_gpuform("-C", d, "plan", "-detailed-exitcode")
    assert text.returncode == 2 and "# endpoint.echo will be imported" in text.stdout
    assert "Plan: 1 to import, 0 to add, 0 to change, 0 to destroy." in text.stdout

    applied = run_gpuform("-C", d, "apply", "-auto-approve", check=True)
    assert "Resources: 1 imported, 0 added, 0 changed, 0 destroyed." in applied.stdout
    assert "endpoint.echo" in LocalStateStore(workdir / "state").read().resources
    again = run_gpuform("-C", d, "plan", "-detailed-exitcode")
    assert again.returncode == 0 and "No changes" in again.stdout, "a done import block is a no-op"

    write_config(workdir, local_config(free_port()).replace("echo:", "other:"), "gpuform.yaml")
    write_config(workdir, "import:\n  endpoint.other: other\n", "imports.yaml")
    run_gpuform("-C", d, "state", "rm", "endpoint.echo", check=True)
    missing = run_gpuform("-C", d, "plan")
    assert missing.returncode == 1
    assert "imports.yaml:2" in missing.stderr and "cannot import endpoint.other: no such object" in missing.stderr
