"""Secrets stay secret and keys stay in their lane, on a real gateway started by apply."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gpuform.util import procs
from tests.conftest import free_port, local_config, pool_dir, run_gpuform, write_config
from tests.helpers import KEY, Deployment, wait_for
from tests.security.test_edge import gateway_pid

pytestmark = [pytest.mark.integration, pytest.mark.security]

KEYS = """    api_keys:
      test: test-key
      other: other-key
      team: {key: team-key, shared: true}
      prom: {key: prom-key, scope: metrics}
      slow: {key: slow-key, rate_limit: 2, max_queued: 3}
"""
ENDPOINTS = """
endpoints:
  echo:
    pool: here
    worker: {template: echo, env: {TOKEN: "${env.SECRET_TOKEN}"}}
    scaling: {min_workers: 1, max_workers: 1, idle_timeout: 60s}
  private:
    pool: here
    worker: {template: echo}
    api_keys: [other]
"""
SECRET = "s3cr3t-value-that-must-not-leak"
OPERATOR = "operator-shell-secret-not-for-workers"


def _client(d: Deployment, key: str) -> httpx.Client:
    return d.http(key)


@pytest.fixture
def tenants(deployment: Deployment) -> Deployment:
    text = local_config(deployment.port, endpoint=ENDPOINTS).replace("    api_keys: {test: test-key}\n", KEYS)
    deployment.apply_text(text, env={"SECRET_TOKEN": SECRET, "OPERATOR_SECRET": OPERATOR})
    wait_for(lambda: deployment.status("echo")["ready_workers"] == 1, 30, what="a warm worker")
    return deployment


def test_jobs_belong_to_their_key_unless_shared(tenants: Deployment) -> None:
    with _client(tenants, KEY) as a, _client(tenants, "other-key") as b, _client(tenants, "team-key") as team:
        job = a.post("/v2/echo/run", json={"input": 1}, headers={"Idempotency-Key": "k"}).json()["id"]
        for method, path in [("GET", f"/v2/echo/status/{job}"), ("GET", f"/v2/echo/stream/{job}"),
                             ("POST", f"/v2/echo/cancel/{job}"), ("POST", f"/v2/echo/retry/{job}")]:
            assert b.request(method, path).status_code == 404, path
        assert team.get(f"/v2/echo/status/{job}").status_code == 200, "a shared key sees every job"
        mine = b.post("/v2/echo/run", json={"input": 2}, headers={"Idempotency-Key": "k"}).json()["id"]
        assert mine != job, "an Idempotency-Key is scoped per key"
        assert a.post("/v2/echo/run", json={"input": 3}, headers={"Idempotency-Key": "k"}).json()["id"] == job
        wait_for(lambda: a.get(f"/v2/echo/status/{job}").json()["status"] == "COMPLETED", 30)


def test_metrics_are_scoped_and_keys_have_limits(tenants: Deployment) -> None:
    with _client(tenants, KEY) as a, _client(tenants, "other-key") as b, _client(tenants, "prom-key") as prom, \
            _client(tenants, "slow-key") as slow:
        a.post("/v2/echo/runsync", json={"input": 1})
        b.post("/v2/private/run", json={"input": 1})
        assert 'endpoint="private"' not in a.get("/metrics").text and 'endpoint="echo"' in a.get("/metrics").text
        everything = prom.get("/metrics").text
        assert 'endpoint="private"' in everything and 'endpoint="echo"' in everything
        assert prom.post("/v2/echo/run", json={"input": 1}).status_code == 403, "a metrics key runs nothing"
        codes = [slow.get("/v2/echo/health").status_code for _ in range(10)]
        assert 429 in codes and codes[0] == 200
        limited = next(r for r in (slow.get("/v2/echo/health") for _ in range(5)) if r.status_code == 429)
        assert int(limited.headers["Retry-After"]) >= 1
        time.sleep(2)
        usage = run_gpuform("-C", str(tenants.workdir), "usage", "--by-key", env=tenants.env)
        assert usage.returncode == 0 and "test" in usage.stdout, usage.stdout + usage.stderr


def test_webhooks_to_the_gateways_own_network_are_refused(tenants: Deployment) -> None:
    with _client(tenants, KEY) as a:
        for url in ["http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/x", "http://169.254.169.254/x",
                    "http://[::1]/x", "file:///etc/passwd"]:
            resp = a.post("/v2/echo/run", json={"input": 1, "webhook": url})
            assert resp.status_code == 400, (url, resp.text)
    health = httpx.get(f"{tenants.url}/healthz").json()
    lineage = (tenants.workdir / "state" / "gpuform.state.json").read_text()
    assert "lineage" not in health and health["deployment"] not in lineage


def test_secrets_at_rest_and_in_processes(tenants: Deployment) -> None:
    gdir = pool_dir(tenants.workdir) / "gateways" / "main"
    db = gdir / "gateway.db"
    assert oct(db.stat().st_mode & 0o777) == "0o600" and oct(gdir.stat().st_mode & 0o777) == "0o700"
    assert oct((gdir / "config.json").stat().st_mode & 0o777) == "0o600"
    stored = b"".join(p.read_bytes() for p in gdir.glob("gateway.db*"))
    assert SECRET.encode() not in stored, "endpoint secrets are sealed in the database"
    assert SECRET.encode() not in (tenants.workdir / "state" / "gpuform.state.json").read_bytes()
    gateway = gateway_pid(tenants.workdir)
    records = sorted((pool_dir(tenants.workdir) / "workers").glob("*.json"))  # this deployment's workers only
    worker = next(pid for pid in (int(json.loads(r.read_text())["pid"]) for r in records)
                  if "gpuform.workers.echo" in " ".join(procs.cmdline(pid)))
    for pid, must in [(gateway, None), (worker, SECRET)]:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert OPERATOR.encode() not in environ, "the operator's shell environment is not inherited"
        if must:
            assert must.encode() in environ, "the worker gets what its endpoint declares"


def test_a_gateway_of_another_deployment_is_never_replaced_silently(tenants: Deployment, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(tenants.workdir / "gpuform.yaml", other / "gpuform.yaml")
    result = run_gpuform("-C", str(other), "apply", "--auto-approve", env=tenants.env, timeout=120)
    assert result.returncode != 0 and "another gpuform deployment" in result.stdout + result.stderr
    assert httpx.get(f"{tenants.url}/healthz").status_code == 200, "the first deployment still runs"
    run_gpuform("-C", str(other), "destroy", "--auto-approve", env=tenants.env, timeout=120)


def test_a_worker_whose_token_is_refused_exits(deployment: Deployment) -> None:
    deployment.apply(ENDPOINTS.split("  private:", maxsplit=1)[0].replace('env: {TOKEN: "${env.SECRET_TOKEN}"}',
                                                                           "env: {}"))
    base = f"{deployment.url}/v2/echo"
    env = {"PATH": os.environ["PATH"], "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=any",
           "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=any",
           "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?gpu=any", "RUNPOD_POD_ID": "echo-ghost",
           "RUNPOD_AI_API_KEY": "gpf_w_not-a-token-of-this-gateway"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "gpuform.workers.echo"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 3 and "refused this worker's token" in proc.stderr, proc.stderr[-500:]
    assert time.monotonic() - started < 30


def test_a_state_with_a_bad_version_or_serial_is_an_error_not_a_crash(tmp_path: Path) -> None:
    write_config(tmp_path, local_config(free_port()))
    state = tmp_path / "state"
    state.mkdir()
    for body in ['{"version": "x", "serial": 1, "lineage": "l"}', '{"version": 2, "serial": -4, "lineage": "l"}']:
        (state / "gpuform.state.json").write_text(body)
        result = run_gpuform("-C", str(tmp_path), "plan", "--no-refresh")
        assert result.returncode == 1 and "Restore it from its .backup copy" in result.stderr, result.stderr
