"""Changing a running gateway: keys, timings and pools by hot reload (no failed request under load), the rest
by a restart the plan announces, and a new gpuform build planned and applied as the gateway's update."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.conftest import local_config, run_gpuform
from tests.helpers import KEY, Deployment, wait_for

pytestmark = pytest.mark.integration

ENDPOINT = """
endpoints:
  echo:
    pool: here
    worker: {template: echo}
    scaling: {min_workers: 1, max_workers: 1, idle_timeout: 60s}
"""


def _config(port: int, keys: str = "{test: test-key}", lease: str = "5s", extra: str = "") -> str:
    text = local_config(port, extra, ENDPOINT).replace("api_keys: {test: test-key}", f"api_keys: {keys}")
    return text.replace("lease_timeout: 5s", f"lease_timeout: {lease}")


@contextmanager
def steady_load(url: str, clients: int = 4) -> Iterator[list[tuple[float, bool, str]]]:
    """``clients`` threads sending runsync back to back; yields the (latency, ok, why) of every request."""
    results: list[tuple[float, bool, str]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                          trust_env=False) as http:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    resp = http.post("/v2/echo/runsync", json={"input": {"x": 1}})
                    ok = resp.status_code == 200 and resp.json()["status"] == "COMPLETED"
                    why = "" if ok else f"{resp.status_code} {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, why = False, repr(exc)
                results.append((time.monotonic() - began, ok, why))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield results
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=35)


def _started_at(d: Deployment) -> float:
    with d.admin() as admin:
        return float(admin.info()["started_at"])


def test_keys_and_timings_change_by_hot_reload_with_no_failed_request_under_load(deployment: Deployment) -> None:
    deployment.apply_text(_config(deployment.port))
    started = _started_at(deployment)
    with steady_load(deployment.url) as results:
        wait_for(lambda: len(results) > 20, 30, what="the load to run")
        deployment.apply_text(_config(deployment.port, "{test: test-key, second: second-key}"))
        deployment.apply_text(_config(deployment.port, "{test: test-key, second: second-key}", lease="7s"))
        time.sleep(0.5)
    failed = [r for r in results if not r[1]]
    assert len(results) > 50 and not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:3]}"
    assert _started_at(deployment) == started, "the gateway was restarted, not reloaded"
    with deployment.http("second-key") as http:
        assert http.post("/v2/echo/runsync", json={"input": {}}).json()["status"] == "COMPLETED"
    with deployment.admin() as admin:
        assert admin.info()["attributes"]["timings"]["lease_timeout"] == 7.0

    (deployment.workdir / "gpuform.yaml").write_text(_config(deployment.port, lease="7s"))
    shown = run_gpuform("-C", str(deployment.workdir), "plan", check=True).stdout
    assert "hot reload, no restart (api_keys)" in shown, shown
    deployment.apply_text(_config(deployment.port, lease="7s"))
    with deployment.http("second-key") as http:
        assert http.post("/v2/echo/runsync", json={"input": {}}).status_code == 401, "a removed key still works"
    assert _started_at(deployment) == started


def test_a_field_that_needs_a_restart_and_a_new_gpuform_build_restart_the_gateway(deployment: Deployment) -> None:
    deployment.apply_text(_config(deployment.port))
    started = _started_at(deployment)
    limits = "    limits: {max_other_body: 100000}\n"
    text = _config(deployment.port).replace("    timings:", limits + "    timings:")
    (deployment.workdir / "gpuform.yaml").write_text(text)
    shown = run_gpuform("-C", str(deployment.workdir), "plan", check=True).stdout
    assert "restarts the gateway" in shown and "for: limits" in shown, shown

    (deployment.workdir / "gpuform.yaml").write_text(_config(deployment.port))
    upgraded = {"GPUFORM_BUILD_ID": "9.9.9+gfaked"}  # what a new gpuform records for the gateway it runs
    shown = run_gpuform("-C", str(deployment.workdir), "plan", "-detailed-exitcode", env=upgraded)
    assert shown.returncode == 2, shown.stdout + shown.stderr
    assert "gateway.main" in shown.stdout and "9.9.9+gfaked" in shown.stdout and "for: version" in shown.stdout
    deployment.apply_text(_config(deployment.port), env=upgraded)
    assert _started_at(deployment) > started, "a new build did not restart the gateway"
