"""Autoscaling for real with the local provider: scale to zero and back, caps, GPU type fallback, a crash
loop told apart from missing capacity, the spending cap, and a ledger that matches worker lifetimes."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from tests.conftest import REPO, local_config, pool_dir, run_gpuform
from tests.helpers import Deployment, wait_for

pytestmark = pytest.mark.integration


def _endpoint(name: str, body: str) -> str:
    return "endpoints:\n  " + name + ":\n" + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")


def test_idle_to_zero_then_cold_start_and_the_ledger_matches_lifetimes(deployment: Deployment) -> None:
    deployment.apply(_endpoint("echo", """
        pool: here
        worker: {template: echo}
        scaling: {min_workers: 0, max_workers: 2, idle_timeout: 2s}
        """))
    with deployment.http() as http:
        first = http.post("/v2/echo/runsync", json={"input": "one"}).json()
        assert first["status"] == "COMPLETED" and first["delayTime"] > 0
        wait_for(lambda: not deployment.workers("echo"), 30, what="scale to zero after the idle timeout")
        second = http.post("/v2/echo/runsync", json={"input": "two"}).json()
        assert second["status"] == "COMPLETED" and second["output"] == {"echo": "two"}
        assert second["workerId"] != first["workerId"], "the second request needed a cold start"
        wait_for(lambda: not deployment.workers("echo", ("initializing", "idle", "running", "stopping")), 30,
                 what="the second worker to have stopped")
        metrics = http.get("/metrics").text
    assert 'gpuform_cold_starts_total{endpoint="echo"} 2.0' in metrics
    status = deployment.status("echo")
    assert status["metrics"]["cold_start"]["count"] == 2
    with deployment.admin() as admin:
        history = admin.get("/admin/workers", endpoint="echo")["history"]
        usage = admin.get("/admin/usage")["usage"]
    lifetimes = sum(w["stopped_at"] - w["requested_at"] for w in history)
    billed = sum(row["worker_seconds"] for row in usage if row["endpoint"] == "echo")
    assert len(history) == 2 and billed == pytest.approx(lifetimes, abs=0.05)
    cost = sum(row["cost"] for row in usage if row["endpoint"] == "echo")
    assert cost == pytest.approx(billed * 0.001, rel=1e-6)  # cpu price 0.001 per worker-second
    usage_text = run_gpuform("-C", str(deployment.workdir), "usage").stdout
    assert "echo" in usage_text and "cpu" in usage_text


def test_max_workers_caps_scale_up(deployment: Deployment) -> None:
    deployment.apply(_endpoint("echo", """
        pool: here
        worker: {template: echo}
        scaling: {min_workers: 0, max_workers: 2, idle_timeout: 30s, scaler: request_count, scaler_value: 1}
        """))
    with deployment.http() as http:
        ids = [http.post("/v2/echo/run", json={"input": {"sleep": 2}}).json()["id"] for _ in range(6)]
        most = 0
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            most = max(most, len(deployment.workers("echo")))
            if all(http.get(f"/v2/echo/status/{i}").json()["status"] == "COMPLETED" for i in ids):
                break
            time.sleep(0.3)
    assert most == 2


def _fake_nvidia_smi(deployment: Deployment, lines: list[str]) -> str:
    script = deployment.workdir / "fake-nvidia-smi"
    script.write_text("#!/bin/sh\ncat <<'EOF'\n" + "\n".join(lines) + "\nEOF\n")
    script.chmod(0o755)
    return str(script)


def test_gpu_type_priority_falls_back_when_the_first_type_is_full(deployment: Deployment) -> None:
    h100 = (REPO / "tests/fixtures/hosts/nvidia-smi/h100-sxm-x8.csv").read_text().splitlines()[0]
    a100 = (REPO / "tests/fixtures/hosts/nvidia-smi/a100-sxm4-80gb-x4.csv").read_text().splitlines()[1]
    fake = _fake_nvidia_smi(deployment, [h100, a100])
    text = local_config(deployment.port, "", _endpoint("gpu", """
        pool: here
        worker: {template: echo}
        gpu: {types: [H100-80GB, A100-80GB], count: 1}
        scaling: {min_workers: 2, max_workers: 3, idle_timeout: 30s}
        """)).replace("provider: local\n", f"provider: local\n    nvidia_smi: {fake}\n")
    text = text.replace("price_per_gpu_second: {cpu: 0.001}", "price_per_gpu_second: {H100-80GB: 0.002, A100-80GB: 0.001}")
    deployment.apply_text(text)
    workers = wait_for(lambda: len(w := deployment.workers("gpu", ("idle", "running"))) == 2 and w, 30)
    assert sorted(w["gpu_type"] for w in workers) == ["A100-80GB", "H100-80GB"]
    env = {}
    for w in workers:
        pid = json.loads((pool_dir(deployment.workdir) / "workers" / f"{w['id']}.json").read_text())["pid"]
        environ = open(f"/proc/{pid}/environ").read().split("\0")
        env[w["gpu_type"]] = next(e for e in environ if e.startswith("CUDA_VISIBLE_DEVICES="))
    assert env == {"H100-80GB": "CUDA_VISIBLE_DEVICES=0", "A100-80GB": "CUDA_VISIBLE_DEVICES=1"}
    with deployment.http() as http:
        for _ in range(4):
            http.post("/v2/gpu/run", json={"input": {"sleep": 5}})
        health = wait_for(lambda: (h := http.get("/v2/gpu/health").json())["status"] == "NO_CAPACITY" and h, 30,
                          what="a third worker to find no free GPU")
    assert "no free GPU of type H100-80GB or A100-80GB" in health["condition"]["message"]
    plan = run_gpuform("-C", str(deployment.workdir), "plan")
    assert plan.returncode == 0 and "needs 3 GPUs" in plan.stdout and "has 2" in plan.stdout


def test_a_crash_loop_is_unhealthy_with_log_lines_not_no_capacity(deployment: Deployment) -> None:
    (deployment.workdir / "broken.py").write_text("import sys\nprint('cannot load model weights from /nowhere')\n"
                                                  "sys.exit(4)\n")
    deployment.apply(_endpoint("broken", """
        pool: here
        worker: {command: [python, broken.py]}
        ttl: 8s
        scaling: {min_workers: 0, max_workers: 2}
        """))
    with deployment.http() as http:
        job = http.post("/v2/broken/run", json={"input": 1}).json()["id"]
        health = deployment.wait_unhealthy(http, "broken")
        assert "cannot load model weights" in health["condition"]["log_tail"]
        assert "before it became ready" in health["condition"]["message"]
        deployment.assert_backs_off("broken", 2, "back-off must slow restarts")
        failed = wait_for(lambda: (s := http.get(f"/v2/broken/status/{job}").json())["status"] == "TIMED_OUT" and s,
                          30, what="the job's ttl")
    assert "UNHEALTHY" in failed["error"] and "before it became ready" in failed["error"]
    assert "cannot load model weights" not in failed["error"], "workers' log lines are for the admin, not clients"
    shown = run_gpuform("-C", str(deployment.workdir), "status").stdout
    assert "UNHEALTHY" in shown and "cannot load model weights" in shown


def test_spending_cap_stops_scale_up_end_to_end(deployment: Deployment) -> None:
    deployment.apply(_endpoint("echo", """
        pool: here
        worker: {template: echo}
        spend_limit_per_day: 0.002
        scaling: {min_workers: 0, max_workers: 3, idle_timeout: 30s, scaler: request_count, scaler_value: 1}
        """))
    with deployment.http() as http:
        http.post("/v2/echo/run", json={"input": {"sleep": 4}})
        wait_for(lambda: deployment.status("echo")["spent_today"] >= 0.002, 30, what="spend to reach the cap")
        for _ in range(3):
            http.post("/v2/echo/run", json={"input": {"sleep": 1}})
        health = wait_for(lambda: (h := http.get("/v2/echo/health").json())["status"] == "SPEND_CAP" and h, 10)
        assert "spending cap reached" in health["condition"]["message"]
        time.sleep(2)
    assert len(deployment.status("echo")["worker_list"]) == 1
