"""The gateway's data outlives the gateway: `gpuform gateway backup|restore` bring back the ledger, queued jobs
and endpoints after the database is lost, and a replaced gateway takes over its predecessor's ledger."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import local_config, pool_dir, run_gpuform
from tests.helpers import Deployment, wait_for

pytestmark = pytest.mark.integration

ENDPOINTS = """
endpoints:
  echo:
    pool: here
    worker: {template: echo}
    scaling: {min_workers: 0, max_workers: 1, idle_timeout: 5s}
  held:
    pool: here
    worker: {template: echo}
    scaling: {min_workers: 0, max_workers: 0}
"""


def _usage(d: Deployment) -> dict[str, float]:
    with d.admin() as admin:
        rows: list[dict[str, Any]] = admin.get("/admin/usage")["usage"]
    return {r["endpoint"]: float(r["worker_seconds"]) for r in rows}


def _billed(d: Deployment) -> dict[str, float]:
    """Usage once the echo worker has been billed for a while."""
    with d.http() as http:
        assert http.post("/v2/echo/runsync", json={"input": {}}).json()["status"] == "COMPLETED"
    return wait_for(lambda: (u := _usage(d)).get("echo", 0) > 0.5 and u, 30, what="the ledger to accrue")


def _gateway_dir(d: Deployment) -> Path:
    return pool_dir(d.workdir) / "gateways" / "main"


def _lose_the_database(d: Deployment) -> None:
    """The gateway's disk is lost: its database goes and the process dies; its supervisor starts it again on an
    empty database."""
    gdir = _gateway_dir(d)
    child = json.loads((gdir / "supervisor.pid").read_text())["child"]
    for suffix in ("", "-wal", "-shm"):
        (gdir / f"gateway.db{suffix}").unlink(missing_ok=True)
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: json.loads((gdir / "supervisor.pid").read_text())["child"] != child, 30,
             what="the supervisor to restart the gateway")
    wait_for(lambda: d.admin().healthy(), 30, what="the gateway to answer again")


def test_backup_then_restore_brings_back_the_ledger_queued_jobs_and_endpoints(deployment: Deployment,
                                                                              tmp_path: Path) -> None:
    deployment.apply_text(local_config(deployment.port, "", ENDPOINTS))
    with deployment.http() as http:
        queued = [http.post("/v2/held/run", json={"input": {"n": i}}).json()["id"] for i in range(3)]
    billed = _billed(deployment)
    backup = tmp_path / "gateway.backup"
    run_gpuform("-C", str(deployment.workdir), "gateway", "backup", str(backup), check=True)
    assert backup.stat().st_mode & 0o077 == 0, "a backup holds job inputs: it must be private"
    with sqlite3.connect(backup) as db:
        assert db.execute("SELECT COUNT(*) FROM jobs WHERE status='IN_QUEUE'").fetchone()[0] == 3

    _lose_the_database(deployment)
    assert _usage(deployment) == {}
    with deployment.http() as http:
        assert http.get(f"/v2/held/status/{queued[0]}").status_code == 404

    out = run_gpuform("-C", str(deployment.workdir), "gateway", "restore", str(backup), check=True).stdout
    assert "restored" in out
    usage = _usage(deployment)
    assert usage["echo"] >= billed["echo"], (usage, billed)
    with deployment.http() as http:
        assert [http.get(f"/v2/held/status/{j}").json()["status"] for j in queued] == ["IN_QUEUE"] * 3
    assert (_gateway_dir(deployment) / "gateway.db.before-restore").exists()


def test_a_backup_of_another_deployment_or_not_a_database_is_refused(deployment: Deployment,
                                                                   tmp_path: Path) -> None:
    deployment.apply_text(local_config(deployment.port, "", ENDPOINTS))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    result = run_gpuform("-C", str(deployment.workdir), "gateway", "restore", str(junk))
    assert result.returncode == 1 and "not a gateway backup" in result.stderr, result.stderr
    backup = tmp_path / "mine.db"
    run_gpuform("-C", str(deployment.workdir), "gateway", "backup", str(backup), check=True)
    with sqlite3.connect(backup) as db:
        db.execute("UPDATE meta SET value='another-lineage' WHERE key='lineage'")
    result = run_gpuform("-C", str(deployment.workdir), "gateway", "restore", str(backup))
    assert result.returncode == 1 and "another gpuform deployment" in result.stderr, result.stderr
    assert not (_gateway_dir(deployment) / "gateway.db.restore").exists()

    unit = run_gpuform("-C", str(deployment.workdir), "gateway", "unit", check=True).stdout
    assert f"-C {deployment.workdir.resolve()} apply -auto-approve -target gateway.main" in unit
    assert "WantedBy=default.target" in unit.splitlines()


def test_a_replaced_gateway_takes_over_its_predecessors_ledger(deployment: Deployment) -> None:
    deployment.apply_text(local_config(deployment.port, "", ENDPOINTS))
    billed = _billed(deployment)
    with deployment.admin() as admin:
        started = admin.info()["started_at"]
    result = run_gpuform("-C", str(deployment.workdir), "apply", "-auto-approve", "-replace", "gateway.main",
                         check=True)
    assert "ledger row" in result.stdout + result.stderr
    with deployment.admin() as admin:
        assert admin.info()["started_at"] != started, "the gateway was not replaced"
    usage = _usage(deployment)
    assert usage["echo"] >= billed["echo"], (usage, billed)
