"""Gateway API rules: keys on every route but /healthz, allow-lists, worker tokens, payload and queue limits,
idempotency, runsync waits, request policies, metrics."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import local_config, pool_dir, run_gpuform
from tests.helpers import KEY, Deployment, wait_for

pytestmark = pytest.mark.integration

ENDPOINTS = """
endpoints:
  open:
    pool: here
    worker: {template: echo}
    scaling: {min_workers: 1, max_workers: 1, idle_timeout: 60s}
  private:
    pool: here
    worker: {template: echo}
    api_keys: [other]
    scaling: {min_workers: 0, max_workers: 0}
  capped:
    pool: here
    worker: {template: echo}
    max_queue: 2
    scaling: {min_workers: 0, max_workers: 0}
"""


@pytest.fixture
def gateway(deployment: Deployment) -> Deployment:
    os.environ["OTHER_KEY"] = "other-secret-key"
    text = local_config(deployment.port, "", ENDPOINTS).replace(
        "api_keys: {test: test-key}", 'api_keys: {test: test-key, other: "${env.OTHER_KEY}"}\n    max_payload_run: 2KB')
    deployment.apply_text(text)
    return deployment


def test_every_route_but_healthz_needs_a_valid_key(gateway: Deployment) -> None:
    routes = [("POST", "/v2/open/run"), ("POST", "/v2/open/runsync"), ("GET", "/v2/open/status/x"),
              ("GET", "/v2/open/stream/x"), ("POST", "/v2/open/cancel/x"), ("POST", "/v2/open/retry/x"),
              ("POST", "/v2/open/purge-queue"), ("GET", "/v2/open/health"), ("GET", "/metrics"),
              ("GET", "/v2/open/openai/v1/models"), ("POST", "/v2/open/openai/v1/chat/completions"),
              ("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/admin/status"),
              ("GET", "/admin/info"), ("GET", "/v2/open/job-take/w1"), ("POST", "/v2/open/job-done/w1/j"),
              ("GET", "/v2/open/ping/w1"), ("GET", "/v2/open/job-stop/w1")]
    with gateway.http(key=None) as anon, gateway.http(key="wrong-key") as wrong:
        assert anon.get("/healthz").status_code == 200
        for method, path in routes:
            for client in (anon, wrong):
                assert client.request(method, path, json={}).status_code == 401, (method, path)
    with gateway.http(key="other-secret-key") as other, gateway.http() as test:
        assert test.post("/v2/private/run", json={"input": 1}).status_code == 403
        assert other.post("/v2/private/run", json={"input": 1}).status_code == 200
        assert test.get("/metrics").status_code == 200
        assert "gpuform_jobs_submitted_total" in test.get("/metrics").text


def test_worker_tokens_work_only_on_their_own_worker_routes(gateway: Deployment) -> None:
    worker = wait_for(lambda: gateway.workers("open", ("idle", "running")), 30)[0]["id"]
    pid = int(json.loads((pool_dir(gateway.workdir) / "workers" / f"{worker}.json").read_text())["pid"])
    env = dict(line.split("=", 1) for line in open(f"/proc/{pid}/environ").read().split("\0") if "=" in line)
    token = env["RUNPOD_AI_API_KEY"]
    with gateway.http(key=token) as as_worker, gateway.http(key=None) as raw:
        assert as_worker.post("/v2/open/run", json={"input": 1}).status_code == 401
        assert as_worker.get("/admin/status").status_code == 401
        assert raw.get(f"/v2/open/ping/{worker}", headers={"Authorization": token}).status_code == 200
        assert raw.get("/v2/open/ping/someone-else", headers={"Authorization": token}).status_code == 403
    with gateway.http() as client:
        assert client.get(f"/v2/open/ping/{worker}").status_code == 401


def test_payload_limit_queue_cap_and_idempotency(gateway: Deployment) -> None:
    with gateway.http() as http:
        big = http.post("/v2/open/run", json={"input": "x" * 5000})
        assert big.status_code == 413 and "exceeds this route's limit of 2000 bytes" in big.json()["error"]
        assert http.post("/v2/open/run", content=b"{not json").status_code == 400
        assert "input" in http.post("/v2/open/run", json={"prompt": 1}).json()["error"]
        ids = [http.post("/v2/capped/run", json={"input": i}).json()["id"] for i in range(2)]
        full = http.post("/v2/capped/run", json={"input": 3})
        assert full.status_code == 429 and int(full.headers["Retry-After"]) >= 1
        first = http.post("/v2/open/run", json={"input": "a"}, headers={"Idempotency-Key": "k1"}).json()
        again = http.post("/v2/open/run", json={"input": "a"}, headers={"Idempotency-Key": "k1"}).json()
        assert first["id"] == again["id"]
        assert http.post("/v2/capped/purge-queue").json() == {"removed": 2, "status": "completed"}
        assert {http.get(f"/v2/capped/status/{i}").json()["status"] for i in ids} == {"CANCELLED"}


def test_runsync_wait_policy_and_ttl(gateway: Deployment) -> None:
    with gateway.http() as http:
        slow = http.post("/v2/open/runsync?wait=1000", json={"input": {"sleep": 3}}).json()
        assert slow["status"] in ("IN_QUEUE", "IN_PROGRESS") and slow["id"].startswith("sync-")
        done = wait_for(lambda: http.get(f"/v2/open/status/{slow['id']}").json()["status"] == "COMPLETED", 20)
        assert done
        bad = http.post("/v2/open/run", json={"input": 1, "policy": {"executionTimeout": 10}})
        assert bad.status_code == 400 and "executionTimeout" in bad.json()["error"]
        timed = http.post("/v2/open/runsync", json={"input": {"sleep": 30}, "policy": {"executionTimeout": 5000}}).json()
        final = wait_for(lambda: http.get(f"/v2/open/status/{timed['id']}").json(), 30,
                         what="status").get("status")
        wait_for(lambda: http.get(f"/v2/open/status/{timed['id']}").json()["status"] == "TIMED_OUT", 20)
        assert final in ("IN_PROGRESS", "TIMED_OUT")
        short = http.post("/v2/private/run", json={"input": 1, "policy": {"ttl": 10_000}},
                          headers={"Authorization": "Bearer other-secret-key"}).json()
        assert http.get(f"/v2/private/status/{short['id']}",
                        headers={"Authorization": "Bearer other-secret-key"}).json()["status"] == "IN_QUEUE"
        expired = wait_for(lambda: (s := http.get(f"/v2/private/status/{short['id']}", headers={
            "Authorization": "Bearer other-secret-key"}).json())["status"] == "TIMED_OUT" and s, 20,
                           what="the queued job to time out when its ttl expired")
        assert "ttl expired" in expired["error"]


def test_keys_never_reach_logs_state_or_plans(gateway: Deployment) -> None:
    with gateway.http() as http:
        http.post("/v2/open/runsync", json={"input": 1})
    plan = run_gpuform("-C", str(gateway.workdir), "plan", "--json")
    texts = [plan.stdout, plan.stderr, (gateway.workdir / "state" / "gpuform.state.json").read_text()]
    for log in (gateway.workdir / "state").rglob("*.log"):
        texts.append(log.read_text(errors="replace"))
    for text in texts:
        assert KEY not in text and "other-secret-key" not in text
