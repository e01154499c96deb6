"""Workspaces on one pool: ``dev`` and ``prod`` apply the same configuration at the same time (ports from
a var-file per workspace) and share no unit, runtime directory, gateway port or worker; a workspace that
declares a port another workspace's gateway already holds fails with a located error and leaves that
gateway alone. On a local pool and on h1."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuform.util import procs
from tests.conftest import free_port
from tests.integration.teamwork import PROVIDERS, Clone, clone, gateway_url, leftovers, pool_and_gateway

pytestmark = [pytest.mark.integration]
WORKSPACES = ("dev", "prod", "stage")


def config(provider: str, shared_dir: Path) -> str:
    """``local-data-dir``: a local pool whose configured ``data_dir`` every workspace shares."""
    blocks = pool_and_gateway(provider.removesuffix("-data-dir"), "${var.port}")
    if provider == "local-data-dir":
        blocks = blocks.replace("provider: local\n", f"provider: local\n    data_dir: {shared_dir}\n")
    return ("variables: {port: \"0\"}\n" + blocks
            + "endpoints:\n  echo:\n    pool: p\n    worker: {template: echo, env: {STAGE: \"${workspace}\"}}\n"
            + "    scaling: {min_workers: 1, max_workers: 1, idle_timeout: 60s}\n")


@pytest.fixture
def here(tmp_path: Path) -> Iterator[Clone]:
    """One clone; every workspace it made is destroyed at the end."""
    made = clone(tmp_path, "ops")
    yield made
    for name in WORKSPACES:
        vars_file = made.directory / "vars" / f"{name}.yaml"
        if (made.directory / "state" / "workspaces" / name / "gpuform.state.json").exists():
            made.ok("--var-file", str(vars_file), "destroy", "--auto-approve", timeout=600, extra={
                "GPUFORM_WORKSPACE": name})


def deployed(member: Clone, name: str, provider: str, port: int) -> dict[str, Any]:
    """What workspace ``name`` runs: lineage, runtime directory, gateway unit and port, worker ids."""
    state = json.loads((member.directory / "state" / "workspaces" / name / "gpuform.state.json").read_text())
    resources = {r["address"]: r for r in state["resources"]}
    key = (member.directory / "state" / "workspaces" / name / "secrets" / "gateway.main.admin_key").read_text()
    with httpx.Client(base_url=gateway_url(provider.removesuffix("-data-dir"), port), headers={"Authorization": f"Bearer {key}"},
                      timeout=30, trust_env=False) as http:
        workers = http.get("/admin/endpoints/echo/status").json()["worker_list"]
        deployment = http.get("/healthz").json()["deployment"]
    gateway = resources["gateway.main"]["computed"]
    if provider.startswith("local"):  # where the gateway's supervisor keeps its pid file (and the queue beside it)
        argv = procs.cmdline(int(gateway["pid"]))
        runtime, unit = str(Path(argv[argv.index("--pidfile") + 1]).parent), gateway["pid"]
    else:
        runtime, unit = f"/var/lib/gpuform/lineage-{state['lineage'][:8]}", gateway["unit"]
    return {"lineage": state["lineage"], "runtime": runtime, "unit": unit, "port": port,
            "workers": {w["id"] for w in workers}, "deployment": deployment}


@pytest.mark.parametrize("provider", ["local-data-dir", *PROVIDERS])
def test_two_workspaces_on_one_pool_share_nothing(provider: str, here: Clone, tmp_path: Path) -> None:
    here.write(config(provider, tmp_path / "shared"))
    ports = {"dev": free_port(), "prod": free_port(), "stage": 0}
    ports["stage"] = ports["dev"]  # a mistake: stage declares dev's port
    (here.directory / "vars").mkdir()
    for name, port in ports.items():
        (here.directory / "vars" / f"{name}.yaml").write_text(f"port: \"{port}\"\n")
    for name in ("dev", "prod"):
        here.ok("workspace", "new", name)
    with ThreadPoolExecutor(2) as pool:  # at the same time: each workspace has a lock of its own
        applies = pool.map(lambda name: here.run("--var-file", f"{here.directory}/vars/{name}.yaml", "apply",
                                                 "--auto-approve", timeout=600, extra={"GPUFORM_WORKSPACE": name}),
                           ("dev", "prod"))
        for result in applies:
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    seen = {name: deployed(here, name, provider, ports[name]) for name in ("dev", "prod")}
    dev, prod = seen["dev"], seen["prod"]
    for what in ("lineage", "runtime", "unit", "port", "deployment"):
        assert dev[what] != prod[what], f"dev and prod share their {what}: {dev[what]}"
    assert dev["workers"] and prod["workers"] and not dev["workers"] & prod["workers"]

    here.ok("workspace", "new", "stage")
    clash = here.run("--var-file", f"{here.directory}/vars/stage.yaml", "apply", "--auto-approve", timeout=600)
    assert clash.returncode == 1, clash.stdout + clash.stderr
    assert "another gpuform deployment" in clash.stderr and str(ports["dev"]) in clash.stderr, clash.stderr
    assert "gpuform.yaml:" in clash.stderr, "the error points at the gateway's listen in the configuration"
    assert deployed(here, "dev", provider, ports["dev"])["deployment"] == dev["deployment"], "dev's gateway kept"

    for name in WORKSPACES:
        here.ok("--var-file", f"{here.directory}/vars/{name}.yaml", "destroy", "--auto-approve", timeout=600,
                extra={"GPUFORM_WORKSPACE": name})
    for name in ("dev", "prod"):
        assert not leftovers(provider.removesuffix("-data-dir"), seen[name]["lineage"], Path(os.environ["GPUFORM_DATA_DIR"]))
