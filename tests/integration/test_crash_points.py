"""kill -9 at every moment of an apply: before and after every provider call and every state write.

For each fault point the test kills a fresh apply there, checks the state file still loads, re-runs apply,
and checks that it converges (plan empty) without duplicating anything it had already made.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gpuform.state.store import LocalStateStore
from gpuform.util import procs
from tests.conftest import free_port, local_config, run_gpuform, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXTRA = """
volumes:
  weights: {pool: here, path: VOLPATH, source: ./model}
policies:
  office: {schedule: [{cron: "0 8 * * 1-5", duration: 10h, min_workers: 0}]}
"""
ENDPOINT = """
endpoints:
  echo:
    pool: here
    worker: {template: echo}
    model: {name: m, volume: weights}
    policy: office
    scaling: {min_workers: 0, max_workers: 1}
"""


def _points(trace: Path) -> list[str]:
    return [line.split(" ")[1] for line in trace.read_text().splitlines()]


def _gateways(lineage: str) -> list[int]:
    return list(procs.find_by_labels({"gpuform.lineage": lineage, "gpuform.address": "gateway.main"}))


def test_apply_killed_at_every_point_converges_without_duplicates(tmp_path: Path) -> None:
    workdir = tmp_path / "cfg"
    (workdir / "model").mkdir(parents=True)
    (workdir / "model" / "weights.bin").write_bytes(os.urandom(50_000))
    volpath = tmp_path / "staged"
    write_config(workdir, local_config(free_port(), EXTRA.replace("VOLPATH", str(volpath)), ENDPOINT))
    d = str(workdir)

    trace = tmp_path / "trace"
    run_gpuform("-C", d, "apply", "--auto-approve", env={"GPUFORM_FAULT_TRACE": str(trace)}, check=True)
    points = _points(trace)
    assert {"before-provider-call", "after-provider-call", "before-state-write", "after-state-write"} <= set(points)
    run_gpuform("-C", d, "destroy", "--auto-approve", check=True)

    for k in range(1, len(points) + 1):
        killed = run_gpuform("-C", d, "apply", "--auto-approve", env={"GPUFORM_FAULT_KILL_AT": str(k)})
        assert killed.returncode == -9, f"point {k} ({points[k - 1]}) did not kill apply: {killed.stderr}"
        state = LocalStateStore(workdir / "state").read()  # must load whatever moment it died
        again = run_gpuform("-C", d, "apply", "--auto-approve")
        assert again.returncode == 0, f"re-apply after point {k} ({points[k - 1]}) failed:\n{again.stderr}"
        plan = run_gpuform("-C", d, "plan", "--detailed-exitcode")
        assert plan.returncode == 0, f"plan not empty after point {k} ({points[k - 1]}):\n{plan.stdout}"
        lineage = LocalStateStore(workdir / "state").read().lineage
        assert state.lineage == lineage or not state.exists
        assert len(_gateways(lineage)) == 1, f"duplicate gateways after point {k} ({points[k - 1]})"
        assert (volpath / "weights.bin").read_bytes() == (workdir / "model" / "weights.bin").read_bytes()
        assert not list(volpath.glob("*.gpuform-partial"))
        destroyed = run_gpuform("-C", d, "destroy", "--auto-approve")
        assert destroyed.returncode == 0, destroyed.stderr
        assert not _gateways(lineage)
        saved = json.loads((workdir / "state" / "gpuform.state.json").read_text())
        assert saved["resources"] == [] and saved["pending"] == []
