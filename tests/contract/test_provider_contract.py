"""One contract, every provider (local, baremetal over SSH, docker over SSH), on real hosts:

create -> plan empty -> a request starts a worker through the provider -> update (workers follow) ->
drift made behind gpuform's back is reported exactly -> apply repairs -> import -> destroy leaves nothing.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import httpx
import pytest

from gpuform.gateway.client import AdminClient
from gpuform.spec import EndpointSpec
from tests.conftest import destroy_after_test, free_port, run_gpuform, write_config
from tests.contract.hosts import PROVIDERS, Setup, load_hosts
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow]


@pytest.fixture(params=PROVIDERS)
def setup(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    provider = request.param
    if provider != "local":
        load_hosts()
    workdir = tmp_path / "cfg"
    (workdir / "model").mkdir(parents=True)
    (workdir / "model" / "weights.bin").write_bytes(os.urandom(100_000))
    (workdir / "model" / "config.json").write_text('{"tiny": true}')
    volume = f"/srv/gpuform-contract-{uuid.uuid4().hex[:8]}" if provider != "local" else str(tmp_path / "staged")
    s = Setup(provider, workdir, free_port(), volume)
    yield s
    destroy_after_test(workdir)


def _apply(s: Setup, **config: object) -> str:
    write_config(s.workdir, s.config(**config))  # type: ignore[arg-type]
    result = run_gpuform("-C", str(s.workdir), "apply", "--auto-approve", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _plan(s: Setup, *args: str) -> tuple[int, str]:
    result = run_gpuform("-C", str(s.workdir), "plan", "--detailed-exitcode", *args, timeout=300)
    assert result.returncode in (0, 2), result.stdout[-2000:] + result.stderr
    return result.returncode, result.stdout


def _admin(s: Setup) -> AdminClient:
    key = (s.workdir / "state" / "secrets" / "gateway.main.admin_key").read_text()
    return AdminClient(s.url, key)


def _workers(s: Setup) -> list[dict]:  # type: ignore[type-arg]
    with _admin(s) as admin:
        status = admin.get("/admin/endpoints/echo/status")
    return [w for w in status["worker_list"] if w["state"] in ("idle", "running")]


def test_provider_contract(setup: Setup) -> None:
    s = setup
    _apply(s)
    assert _plan(s) == (0, _plan(s)[1]) and "No changes" in _plan(s)[1]
    assert _plan(s, "--no-refresh")[0] == 0
    for host in s.hosts():
        assert s.staged(host, "weights.bin") and s.staged(host, "config.json"), host

    # the gateway starts a worker through the provider, and it answers
    with httpx.Client(base_url=s.url, headers={"Authorization": "Bearer test-key"}, timeout=120) as http:
        answer = http.post("/v2/echo/runsync", json={"input": {"hello": s.provider}}).json()
        assert answer["status"] == "COMPLETED" and answer["output"] == {"echo": {"hello": s.provider}}
    wait_for(lambda: len(_workers(s)) == 1, 60, what="min_workers=1")

    # a worker's log rotates by size (logs.max_size: 4096) and `gpuform logs` still reads it
    with httpx.Client(base_url=s.url, headers={"Authorization": "Bearer test-key"}, timeout=120) as http:
        answer = http.post("/v2/echo/runsync", json={"input": {"log": 120}}).json()
        assert answer["status"] == "COMPLETED", answer
    wait_for(lambda: s.rotated_worker_log(answer["workerId"]), 20, what="the worker's log to pass 4 KB and rotate")
    shown = run_gpuform("-C", str(s.workdir), "logs", "echo", "--worker", answer["workerId"], "--tail", "5")
    assert shown.returncode == 0 and "echo log line 119 ..." in shown.stdout, shown.stdout + shown.stderr

    # so does the gateway's: each failed job is a line of its log; `gpuform logs --gateway` still reads it
    with httpx.Client(base_url=s.url, headers={"Authorization": "Bearer test-key"}, timeout=120) as http:
        for i in range(40):
            failed = http.post("/v2/echo/runsync", json={"input": {"fail": f"gateway log filler {i:02d} " + "x" * 80}})
            assert failed.json()["status"] == "FAILED", failed.text
    wait_for(s.rotated_gateway_log, 20, what="the gateway's log to pass 4 KB and rotate")
    shown = run_gpuform("-C", str(s.workdir), "logs", "--gateway", "--tail", "5")
    assert shown.returncode == 0 and "gateway log filler 39" in shown.stdout, shown.stdout + shown.stderr

    # update: workers follow min_workers (start and stop through the provider)
    _apply(s, min_workers=2)
    wait_for(lambda: len(_workers(s)) == 2, 120, what="a second worker")
    assert _plan(s)[0] == 0

    # drift behind gpuform's back, reported exactly
    lineage = json.loads((s.workdir / "state" / "gpuform.state.json").read_text())["lineage"]
    s.remove_staged_file("weights.bin")
    with _admin(s) as admin:
        spec = admin.get_endpoint("echo")
        assert spec is not None
        spec["spec"]["worker"]["env"]["MODE"] = "slow"
        admin.put_endpoint("echo", EndpointSpec.model_validate(spec["spec"]), {})
    code, text = _plan(s)
    assert code == 2
    assert "# volume.weights has changed" in text and "differs on" in text
    assert "# endpoint.echo has changed" in text and '~ MODE = "fast" -> "slow"' in text
    assert "Plan: 0 to add, 2 to change, 0 to destroy." in text

    s.stop_gateway(lineage)
    code, text = _plan(s)
    assert "# gateway.main has been deleted" in text and "Plan: 1 to add, 2 to change, 0 to destroy." in text

    _apply(s, min_workers=2)
    assert _plan(s)[0] == 0
    for host in s.hosts():
        assert s.staged(host, "weights.bin"), host
    with _admin(s) as admin:
        spec = admin.get_endpoint("echo")
        assert spec is not None and spec["spec"]["worker"]["env"]["MODE"] == "fast"

    # import reproduces state
    assert run_gpuform("-C", str(s.workdir), "state", "rm", "endpoint.echo").returncode == 0
    imported = run_gpuform("-C", str(s.workdir), "import", "endpoint.echo", "echo")
    assert imported.returncode == 0, imported.stderr
    assert _plan(s)[0] == 0

    # destroy leaves nothing
    destroyed = run_gpuform("-C", str(s.workdir), "destroy", "--auto-approve", timeout=600)
    assert destroyed.returncode == 0, destroyed.stderr
    assert s.leftovers(lineage) == []
