"""`plan` on a real gateway (local pool, echo workers) shows each endpoint's expected monthly cost from its
recorded traffic, with the planned policy; the estimate never makes a plan non-empty. `simulate
--from-gateway` replays the same history."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import run_gpuform, write_config
from tests.helpers import Deployment

pytestmark = pytest.mark.integration

ENDPOINTS = """
endpoints:
  echo:
    pool: here
    worker: {template: echo}
    scaling: {min_workers: 0, max_workers: 1, idle_timeout: 5s}
"""


def _expected(plan: dict) -> dict:  # type: ignore[type-arg]
    change = next(c for c in plan["resource_changes"] if c["address"] == "endpoint.echo")
    return change["cost"]["expected_per_month"]  # type: ignore[no-any-return]


def test_plan_shows_the_expected_cost_of_recorded_traffic_and_simulate_reads_it(deployment: Deployment) -> None:
    deployment.apply(ENDPOINTS)
    with deployment.http() as http:
        for i in range(3):
            assert http.post("/v2/echo/runsync", json={"input": {"sleep": 0.2, "n": i}}).json()["status"] == \
                "COMPLETED"
    time.sleep(10.0)  # longer than a cold start plus the 5 s idle timeout: the window tells the policies apart
    where = ("-C", str(deployment.workdir))

    same = run_gpuform(*where, "plan", "-detailed-exitcode")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "endpoint.echo: $" in same.stdout and "from 3 requests over" in same.stdout
    first = _expected(json.loads(run_gpuform(*where, "plan", "-json", check=True).stdout))
    assert first["requests"] == 3 and first["amount"] > 0 and first["basis"].startswith("from 3 requests over")
    assert "expected_per_month" not in run_gpuform(*where, "plan", "-json", "-refresh=false",
                                                                     check=True).stdout

    write_config(deployment.workdir, (deployment.workdir / "gpuform.yaml").read_text()
                 .replace("idle_timeout: 5s", "idle_timeout: 10m"))
    changed = json.loads(run_gpuform(*where, "plan", "-json", check=True).stdout)
    assert _expected(changed)["amount"] > first["amount"], (first, _expected(changed))
    md = run_gpuform(*where, "plan", "-markdown", check=True).stdout
    assert "expected $/month" in md and "from 3 requests over" in md

    simulated = run_gpuform(*where, "simulate", "echo", "--from-gateway", "--since", "1h", "--json", check=True)
    report = json.loads(simulated.stdout)
    assert report["trace"]["requests"] == 3 and "measured" in report["model"]["service"]
