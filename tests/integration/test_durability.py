"""Nothing accepted is lost: real kills of workers and of the gateway, timeouts, drains, webhooks."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from gpuform.gateway.webhooks import SIGNATURE_HEADER, verify
from gpuform.util import procs
from tests.conftest import free_port, local_config, pool_dir
from tests.helpers import Deployment, wait_for

pytestmark = pytest.mark.integration

CRASHY = '''
import asyncio, os, sys, time
from gpuform.worker import start

async def handler(job):
    data = job["input"]
    if data.get("die"):
        os._exit(3)
    try:
        await asyncio.sleep(float(data.get("sleep", 0)))
    except asyncio.CancelledError:
        print(f"CANCELLED {job['id']}", flush=True)
        raise
    return {"ok": data}

start(handler)
'''


def _worker_pid(d: Deployment, worker: str) -> int:
    return int(json.loads((pool_dir(d.workdir) / "workers" / f"{worker}.json").read_text())["pid"])


def _crashy(d: Deployment, min_workers: int = 1, max_workers: int = 2, extra: str = "") -> None:
    (d.workdir / "crashy.py").write_text(CRASHY)
    text = local_config(d.port, "", f"""
        endpoints:
          crashy:
            pool: here
            worker: {{command: [python, crashy.py]}}
            scaling: {{min_workers: {min_workers}, max_workers: {max_workers}, idle_timeout: 60s}}
        """).replace("take_timeout: 2s,", f"take_timeout: 2s, {extra}")
    d.apply_text(text)


def test_a_worker_killed_mid_job_has_its_job_requeued_and_finished(deployment: Deployment) -> None:
    _crashy(deployment)
    with deployment.http() as http:
        job = http.post("/v2/crashy/run", json={"input": {"sleep": 4}}).json()["id"]
        status = wait_for(lambda: (s := http.get(f"/v2/crashy/status/{job}").json())["status"] == "IN_PROGRESS" and s,
                          30)
        os.kill(_worker_pid(deployment, status["workerId"]), signal.SIGKILL)
        final = wait_for(lambda: (s := http.get(f"/v2/crashy/status/{job}").json())["status"] == "COMPLETED" and s, 60,
                         what="the requeued job to complete")
        assert final["workerId"] != status["workerId"] and final["output"] == {"ok": {"sleep": 4}}
        assert http.get("/v2/crashy/health").json()["jobs"]["retried"] >= 1


def test_retries_are_bounded_and_the_failure_says_why(deployment: Deployment) -> None:
    _crashy(deployment, extra="max_job_attempts: 2,")
    with deployment.http() as http:
        job = http.post("/v2/crashy/run", json={"input": {"die": True}}).json()["id"]
        final = wait_for(lambda: (s := http.get(f"/v2/crashy/status/{job}").json())["status"] == "FAILED" and s, 90,
                         what="the job to fail after its attempts")
    assert final["error"]["error_type"] == "WorkerLost"
    assert "gave up after 2 attempts" in final["error"]["error_message"]
    assert "exited with code 3" in final["error"]["error_message"]


def test_gateway_killed_with_sigkill_still_answers_every_accepted_job(deployment: Deployment) -> None:
    _crashy(deployment, min_workers=1, max_workers=1)
    with deployment.http() as http:
        ids = [http.post("/v2/crashy/run", json={"input": {"sleep": 0.5, "n": i}}).json()["id"] for i in range(20)]
        lineage = json.loads((deployment.workdir / "state/gpuform.state.json").read_text())["lineage"]
        (supervisor,) = procs.find_by_labels({"gpuform.lineage": lineage, "gpuform.address": "gateway.main"})
        child = json.loads((pool_dir(deployment.workdir) / "gateways/main/supervisor.pid").read_text())["child"]
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: _healthy(http), 30, what="the supervisor to restart the gateway")
        assert procs.alive(supervisor)
        for job_id in ids:
            assert http.get(f"/v2/crashy/status/{job_id}").status_code == 200, job_id
        wait_for(lambda: all(http.get(f"/v2/crashy/status/{j}").json()["status"] == "COMPLETED" for j in ids), 90,
                 interval=1.0, what="every accepted job to complete after the restart")


def _healthy(http: Any) -> bool:
    try:
        return bool(http.get("/healthz").status_code == 200)
    except Exception:
        return False


def test_execution_timeout_and_cancel_reach_the_running_handler(deployment: Deployment) -> None:
    _crashy(deployment, min_workers=1, max_workers=1)
    log_dir = pool_dir(deployment.workdir) / "workers"
    with deployment.http() as http:
        job = http.post("/v2/crashy/run", json={"input": {"sleep": 60}, "policy": {"executionTimeout": 5000}}).json()
        wait_for(lambda: http.get(f"/v2/crashy/status/{job['id']}").json()["status"] == "TIMED_OUT", 30)
        wait_for(lambda: any(f"CANCELLED {job['id']}" in p.read_text() for p in log_dir.glob("*.log")), 20,
                 what="the timeout to cancel the handler")
        other = http.post("/v2/crashy/run", json={"input": {"sleep": 60}}).json()
        wait_for(lambda: http.get(f"/v2/crashy/status/{other['id']}").json()["status"] == "IN_PROGRESS", 60)
        http.post(f"/v2/crashy/cancel/{other['id']}")
        wait_for(lambda: any(f"CANCELLED {other['id']}" in p.read_text() for p in log_dir.glob("*.log")), 20,
                 what="the cancel to reach the handler")


def test_rolling_update_and_destroy_drain_in_flight_jobs(deployment: Deployment) -> None:
    _crashy(deployment, min_workers=1, max_workers=1)
    with deployment.http() as http:
        busy = http.post("/v2/crashy/run", json={"input": {"sleep": 4}}).json()["id"]
        old = wait_for(lambda: (s := http.get(f"/v2/crashy/status/{busy}").json())["status"] == "IN_PROGRESS" and s,
                       30)["workerId"]
        (deployment.workdir / "gpuform.yaml").write_text(
            (deployment.workdir / "gpuform.yaml").read_text().replace("idle_timeout: 60s", "idle_timeout: 61s"))
        from tests.conftest import run_gpuform

        assert run_gpuform("-C", str(deployment.workdir), "apply", "--auto-approve").returncode == 0
        assert http.get(f"/v2/crashy/status/{busy}").json()["status"] in ("IN_PROGRESS", "COMPLETED")
        done = wait_for(lambda: (s := http.get(f"/v2/crashy/status/{busy}").json())["status"] == "COMPLETED" and s, 30)
        assert done["workerId"] == old, "the busy worker finishes its job before it is replaced"
        fresh = wait_for(lambda: [w for w in deployment.workers("crashy", ("idle", "running")) if w["id"] != old], 30,
                         what="a worker of the new revision")
        assert not [w for w in deployment.workers("crashy") if w["id"] == old]
        assert fresh


class _Receiver(BaseHTTPRequestHandler):
    calls: list[tuple[bytes, dict[str, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append((body, dict(self.headers)))
        self.send_response(500 if len(type(self).calls) <= 2 else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def test_webhook_is_retried_and_signed(deployment: Deployment) -> None:
    port = free_port()
    server = HTTPServer(("127.0.0.1", port), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.calls = []
    try:
        text = local_config(deployment.port).replace("api_keys: {test: test-key}",
                                                     'api_keys: {test: test-key}\n    webhook_secret: "${env.WH}"\n'
                                                     '    webhooks: {allow: ["127.0.0.1"]}')  # a receiver on loopback
        deployment.apply_text(text, env={"WH": "whsec-123"})
        with deployment.http() as http:
            job = http.post("/v2/echo/run", json={"input": {"x": 1}, "webhook": f"http://127.0.0.1:{port}/hook"}).json()
        wait_for(lambda: len(_Receiver.calls) >= 3, 30, what="the third webhook delivery")
        time.sleep(1)
        assert len(_Receiver.calls) == 3
        body, headers = _Receiver.calls[-1]
        payload = json.loads(body)
        assert payload["id"] == job["id"] and payload["status"] == "COMPLETED" and payload["output"] == {"echo": {"x": 1}}
        assert verify("whsec-123", body, headers[SIGNATURE_HEADER])
        assert not verify("wrong", body, headers[SIGNATURE_HEADER])
    finally:
        server.shutdown()

