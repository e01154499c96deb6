"""Fidelity of ``gpuform simulate`` (issue 14 item 4): ten minutes of ``code.csv`` (a burst, idle minutes, a
second burst), compressed ten times, replayed against a real gateway on the local pool whose echo workers
sleep each request's service time and start after a set delay (the cold start), then simulated from the
same configuration. The simulator's worker-seconds must be within 15% of the real run's and its p95 delay
within 25%. ``-s`` prints both figures and the ratios."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuform.simulate.model import ServiceModel
from gpuform.simulate.report import percentile
from gpuform.simulate.trace import read_trace
from tests.conftest import run_gpuform
from tests.helpers import KEY, Deployment, wait_for
from tests.traces import azure_trace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMPRESSION = 10.0
SLICE = (39 * 60.0, 49 * 60.0)  # seconds into code.csv: a burst, an idle minute, a burst, quiet minutes
COLD_START = 30.0 / COMPRESSION  # the echo workers' start-up delay
ENDPOINT = f"""
endpoints:
  echo:
    pool: here
    worker:
      template: echo
      concurrency: 4
      env: {{GPUFORM_ECHO_STARTUP_DELAY: "{COLD_START:g}"}}
    scaling: {{min_workers: 0, max_workers: 4, idle_timeout: {30 / COMPRESSION:g}s, scaler: queue_delay,
              scaler_value: {4 / COMPRESSION:g}, cold_start: {COLD_START:g}s}}
"""


def compressed_slice(path: Path) -> list[tuple[float, float]]:
    """(offset from the slice's start, service time) per request, both divided by COMPRESSION; service
    times from the trace's tokens at the simulator's default rates."""
    trace = read_trace(azure_trace("code.csv"))
    service = ServiceModel().times(trace)
    rows = [((r.at - trace.t0 - SLICE[0]) / COMPRESSION, s / COMPRESSION)
            for r, s in zip(trace.requests, service, strict=True) if SLICE[0] <= r.at - trace.t0 < SLICE[1]]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["timestamp", "service_time"])
        writer.writerows((f"{1_700_000_000 + at:.4f}", f"{s:.4f}") for at, s in rows)
    return rows


async def _replay(url: str, rows: list[tuple[float, float]]) -> None:
    """Post each request at its compressed time (``/run``, not waiting for the result)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30, trust_env=False) as http:
        begin = time.monotonic()

        async def post(at: float, service: float) -> None:
            await asyncio.sleep(max(0.0, begin + at - time.monotonic()))
            response = await http.post("/v2/echo/run", json={"input": {"sleep": service}})
            response.raise_for_status()

        await asyncio.gather(*(post(at, s) for at, s in rows))


def real_figures(deployment: Deployment, count: int) -> tuple[float, float, list[float]]:
    """Worker-seconds (each worker from its request to its stop, cut at the last completion, as the simulator
    bills), p95 delay (nearest rank, from ``gpuform requests --json``) and the measured cold starts."""
    listed = run_gpuform("-C", str(deployment.workdir), "requests", "echo", "--json", "--limit", str(count + 10),
                         check=True)
    history = [r for r in json.loads(listed.stdout) if r["status"] == "COMPLETED"]
    assert len(history) == count, f"{len(history)} of {count} requests completed"
    end = max(r["completed_at"] for r in history)
    with deployment.admin() as admin:
        answer = admin.get("/admin/workers", endpoint="echo")
    workers: dict[str, dict[str, Any]] = {w["id"]: w for w in answer["history"]}
    workers.update({w["id"]: w for w in answer["workers"]})
    seconds = sum(max(0.0, min(w["stopped_at"] or end, end) - w["requested_at"]) for w in workers.values())
    colds = [w["ready_at"] - w["requested_at"] for w in workers.values() if w["ready_at"]]
    return seconds, percentile(sorted(r["delay"] for r in history), 95), colds


def simulated(deployment: Deployment, trace: Path, cold_start: str) -> tuple[float, float]:
    result = run_gpuform("-C", str(deployment.workdir), "simulate", "echo", "--trace", str(trace),
                         "--cold-start", cold_start, "--json", check=True)
    policy = json.loads(result.stdout)["policies"][0]
    return float(policy["worker_seconds"]), float(policy["delay"]["p95"])


def test_the_simulator_matches_a_real_gateway_on_a_compressed_trace_slice(deployment: Deployment) -> None:
    trace = deployment.workdir / "slice.csv"
    rows = compressed_slice(trace)
    deployment.apply(ENDPOINT)
    began = time.monotonic()
    asyncio.run(_replay(deployment.url, rows))
    with deployment.http() as http:
        wait_for(lambda: not (jobs := http.get("/v2/echo/health").json()["jobs"])["inQueue"]
                 and not jobs["inProgress"], 60, 0.5, what="every request to finish")
    replayed = time.monotonic() - began
    real_ws, real_p95, colds = real_figures(deployment, len(rows))
    measured = f"uniform:{min(colds):.3f}s,{max(colds):.3f}s"
    sim_ws, sim_p95 = simulated(deployment, trace, measured)
    set_ws, set_p95 = simulated(deployment, trace, f"{COLD_START:g}s")
    ws_ratio, p95_ratio = sim_ws / real_ws, sim_p95 / real_p95
    report = (f"\n{len(rows)} requests replayed in {replayed:.1f}s; cold starts measured {measured} "
              f"(set {COLD_START:g}s, {len(colds)} workers)\n"
              f"worker-seconds: real {real_ws:.2f}, simulated {sim_ws:.2f} (ratio {ws_ratio:.3f}); "
              f"with the set cold start {set_ws:.2f} ({set_ws / real_ws:.3f})\n"
              f"p95 delay:      real {real_p95:.3f}s, simulated {sim_p95:.3f}s (ratio {p95_ratio:.3f}); "
              f"with the set cold start {set_p95:.3f}s ({set_p95 / real_p95:.3f})")
    print(report)
    assert 0.85 <= ws_ratio <= 1.15, "worker-seconds differ by more than 15%" + report
    assert 0.75 <= p95_ratio <= 1.25, "p95 delay differs by more than 25%" + report
