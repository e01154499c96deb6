"""The learned keep-alive and the rate_forecast scaler on a real endpoint (local pool, echo worker, short
timings): once the endpoint has learned its idle gaps, its last worker outlives the fixed idle timeout by the
learned window (the next request after a usual gap finds it warm), then stops."""

from __future__ import annotations

import textwrap
import time

import pytest

from tests.helpers import Deployment, wait_for

pytestmark = pytest.mark.integration
GAP = 2.0  # seconds between requests: longer than idle_timeout, inside the learned window


def test_a_learned_endpoint_keeps_its_worker_through_a_usual_gap_then_stops_it(deployment: Deployment) -> None:
    deployment.apply("endpoints:\n  echo:\n" + textwrap.indent(textwrap.dedent("""
        pool: here
        worker: {template: echo}
        scaling:
          min_workers: 0
          max_workers: 2
          idle_timeout: 0.5s
          scaler: rate_forecast
          scaler_value: 4
          cold_start: 1s
          forecast: {window: 1s, windows: 3}
          keep_alive: learned
          learned: {bin: 1s, min_samples: 3, low_percentile: 0, high_percentile: 100, margin: 0.5}
        """).strip() + "\n", "    "))
    with deployment.http() as http:
        def call(i: int) -> str:
            done = http.post("/v2/echo/runsync", json={"input": i}).json()
            assert done["status"] == "COMPLETED", done
            return str(done["workerId"])

        for i in range(4):  # three gaps learned (the fixed timeout stops the worker while learning)
            call(i)
            time.sleep(GAP)
        warm = call(4)
        time.sleep(GAP)
        assert [w["id"] for w in deployment.workers("echo")] == [warm], "kept past the 0.5 s idle timeout"
        assert call(5) == warm, "the request after a usual gap found the kept worker"
        wait_for(lambda: not deployment.workers("echo", ("initializing", "idle", "running", "stopping")), 20,
                 what="the kept worker to stop after the learned window")
    with deployment.admin() as admin:
        history = admin.get("/admin/workers", endpoint="echo")["history"]
    kept = next(w for w in history if w["id"] == warm)
    assert kept["stopped_at"] - kept["requested_at"] > 2 * GAP
