"""The official runpod package against the gateway: its client (runpod.Endpoint) and its worker SDK
(runpod.serverless.start) running unchanged as a gpuform worker."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
import runpod

from tests.conftest import pool_dir
from tests.helpers import KEY, Deployment, wait_for

pytestmark = pytest.mark.integration

ECHO = """
endpoints:
  echo:
    pool: here
    worker: {template: echo}
    scaling: {min_workers: 1, max_workers: 2, idle_timeout: 30s}
"""

RUNPOD_HANDLER = '''
import asyncio, sys, time
import runpod

async def handler(job):
    data = job["input"]
    kind = data.get("kind")
    if kind == "error":
        return {"error": "bad input: " + str(data.get("why"))}
    if kind == "raise":
        raise ValueError("handler blew up")
    if kind == "progress":
        runpod.serverless.progress_update(job, {"percent": 50})
        await asyncio.sleep(1.5)
        return {"done": True}
    if kind == "sleep":
        try:
            await asyncio.sleep(float(data["seconds"]))
        except asyncio.CancelledError:
            print(f"CANCELLED {job['id']}", flush=True)
            raise
        return {"slept": data["seconds"]}
    return {"echo": data}

async def streaming(job):
    for i in range(int(job["input"].get("n", 3))):
        await asyncio.sleep(0.2)
        yield {"token": i}

mode = sys.argv[1]
if mode == "stream":
    runpod.serverless.start({"handler": streaming, "return_aggregate_stream": True})
else:
    runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: 3})
'''


def _runpod_endpoints(workdir: Path) -> str:
    (workdir / "rp_handler.py").write_text(RUNPOD_HANDLER)
    return textwrap.dedent(f"""
        endpoints:
          rp:
            pool: here
            worker: {{command: [{sys.executable}, rp_handler.py, plain]}}
            scaling: {{min_workers: 1, max_workers: 1, idle_timeout: 60s}}
          rpstream:
            pool: here
            worker: {{command: [{sys.executable}, rp_handler.py, stream]}}
            scaling: {{min_workers: 1, max_workers: 1, idle_timeout: 60s}}
        """)


@pytest.fixture
def rp_client(deployment: Deployment):  # type: ignore[no-untyped-def]
    runpod.api_key = KEY
    runpod.endpoint_url_base = f"{deployment.url}/v2"
    return deployment


def test_runpod_client_run_status_output_runsync_stream_health(rp_client: Deployment) -> None:
    rp_client.apply(ECHO)
    endpoint = runpod.Endpoint("echo")
    job = endpoint.run({"input": {"hello": "world"}})
    assert job.output(timeout=30) == {"echo": {"hello": "world"}}
    assert job.status() == "COMPLETED"
    assert endpoint.run_sync({"input": {"n": 1}}, timeout=30) == {"echo": {"n": 1}}
    streamed = endpoint.run({"input": {"stream": 3, "interval": 0.3}})
    assert list(streamed.stream()) == [{"chunk": 0}, {"chunk": 1}, {"chunk": 2}]
    health = endpoint.health()
    assert health["jobs"]["completed"] >= 3 and health["workers"]["idle"] + health["workers"]["running"] >= 1
    with rp_client.http() as http:
        body = http.get(f"/v2/echo/status/{job.job_id}").json()
        assert body["status"] == "COMPLETED" and body["delayTime"] >= 0 and body["executionTime"] >= 0
        assert body["id"] == job.job_id and body["workerId"].startswith("echo-")


def test_runpod_client_cancel_purge_and_retry(rp_client: Deployment) -> None:
    rp_client.apply(ECHO)
    endpoint = runpod.Endpoint("echo")
    busy = endpoint.run({"input": {"sleep": 3}})
    queued = [endpoint.run({"input": {"sleep": 3, "n": i}}) for i in range(3)]
    wait_for(lambda: busy.status() == "IN_PROGRESS", 20, what="the first job to start")
    assert busy.cancel()["status"] == "CANCELLED"
    purged = endpoint.purge_queue()
    assert purged["status"] == "completed" and purged["removed"] >= 1
    assert {q.status() for q in queued} <= {"CANCELLED", "IN_PROGRESS", "COMPLETED"}
    failed = endpoint.run({"input": {"fail": "once"}})
    wait_for(lambda: failed.status() == "FAILED", 20)
    with rp_client.http() as http:
        status = http.get(f"/v2/echo/status/{failed.job_id}").json()
        assert status["error"]["error_type"] == "EchoFailure" and status["error"]["error_message"] == "once"
        retried = http.post(f"/v2/echo/retry/{failed.job_id}").json()
        assert retried == {"id": failed.job_id, "status": "IN_QUEUE"}
        assert http.post(f"/v2/echo/retry/{busy.job_id}").status_code == 400


def test_runpod_worker_sdk_runs_unchanged(rp_client: Deployment) -> None:
    rp_client.apply(_runpod_endpoints(rp_client.workdir))
    rp = runpod.Endpoint("rp")
    assert rp.run_sync({"input": {"x": 1}}, timeout=60) == {"echo": {"x": 1}}

    with rp_client.http() as http:
        err = http.post("/v2/rp/runsync", json={"input": {"kind": "error", "why": "no prompt"}}).json()
        assert err["status"] == "FAILED" and err["error"] == "bad input: no prompt"
        raised = http.post("/v2/rp/runsync", json={"input": {"kind": "raise"}}).json()
        assert raised["status"] == "FAILED"
        detail = json.loads(raised["error"])
        assert detail["error_type"] == "<class 'ValueError'>" and detail["error_message"] == "handler blew up"

        progress = rp.run({"input": {"kind": "progress"}})
        seen = wait_for(lambda: http.get(f"/v2/rp/status/{progress.job_id}").json().get("output"), 20)
        assert seen == {"percent": 50}
        assert progress.output(timeout=20) == {"done": True}

        started = time.monotonic()
        jobs = [rp.run({"input": {"kind": "sleep", "seconds": 2}}) for _ in range(3)]
        assert [j.output(timeout=30) for j in jobs] == [{"slept": 2}] * 3
        assert time.monotonic() - started < 5.5, "concurrency_modifier=3 should run the three jobs at once"

        long = rp.run({"input": {"kind": "sleep", "seconds": 30}})
        wait_for(lambda: long.status() == "IN_PROGRESS", 20)
        assert http.post(f"/v2/rp/cancel/{long.job_id}").json()["status"] == "CANCELLED"
        worker = rp_client.workers("rp")[0]["id"]
        log_text = (pool_dir(rp_client.workdir) / "workers" / f"{worker}.log")
        wait_for(lambda: f"CANCELLED {long.job_id}" in log_text.read_text(), 15,
                 what="the cancel to reach the running handler")

    stream = runpod.Endpoint("rpstream").run({"input": {"n": 4}})
    assert list(stream.stream()) == [{"token": i} for i in range(4)]
    assert stream.output(timeout=10) == [{"token": i} for i in range(4)]  # return_aggregate_stream


OVERLAP_HANDLER = '''
import asyncio
import runpod

active = peak = 0

async def handler(job):
    global active, peak
    active += 1
    peak = max(peak, active)
    try:
        await asyncio.sleep(float(job["input"]["sleep"]))
    finally:
        active -= 1
    return {"peak": peak}

runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: 4})
'''


def test_endpoint_concurrency_caps_a_runpod_worker_that_asks_for_more(rp_client: Deployment) -> None:
    """concurrency_modifier=4 (the fix for the SDK's 1 s sleep at its limit) on an endpoint that says
    concurrency 1: the gateway holds the worker's extra takes, so jobs run one at a time; the same worker on
    an endpoint without a concurrency runs several at once (as on RunPod)."""
    (rp_client.workdir / "overlap.py").write_text(OVERLAP_HANDLER)
    rp_client.apply(textwrap.dedent(f"""
        endpoints:
          capped:
            pool: here
            worker: {{command: [{sys.executable}, overlap.py], concurrency: 1}}
            scaling: {{min_workers: 1, max_workers: 1, idle_timeout: 60s}}
          free:
            pool: here
            worker: {{command: [{sys.executable}, overlap.py]}}
            scaling: {{min_workers: 1, max_workers: 1, idle_timeout: 60s}}
        """))
    peaks = {}
    for name in ("capped", "free"):
        endpoint = runpod.Endpoint(name)
        jobs = [endpoint.run({"input": {"sleep": 0.4}}) for _ in range(6)]
        peaks[name] = max(j.output(timeout=60)["peak"] for j in jobs)
    assert peaks["capped"] == 1 and peaks["free"] >= 2, peaks
