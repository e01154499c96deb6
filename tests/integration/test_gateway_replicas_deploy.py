"""Two gateway replicas on one PostgreSQL store, applied on the local pool: two supervised processes on
port and port+1, both healthy as this deployment and answering the RunPod routes; the state lists them;
a replica that died is planned as a repair and brought back by apply; destroy stops both. The HAProxy of
examples/ha in front of them answers every request while one is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gpuform.util import procs
from gpuform.util.hashing import deployment_id
from tests.conftest import free_port, local_config, pool_dir, run_gpuform, write_config
from tests.haproxy import HAPROXY_CFG, up
from tests.helpers import KEY, Deployment, wait_for
from tests.pg import postgres_url

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def pair(deployment: Deployment) -> Deployment:
    """The deployment on a port whose successor is free too (replica r1 binds port+1)."""
    while not _free(deployment.port + 1):
        deployment.port = free_port()
    return deployment


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _apply(d: Deployment, schema: str) -> dict[str, str]:
    env = {"GATEWAY_DB_URL": postgres_url()}
    store = (f'    store: {{type: postgres, url: "${{env.GATEWAY_DB_URL}}", schema_name: {schema}}}\n'
             "    replicas: 2\n")
    text = local_config(d.port).replace("    api_keys: {test: test-key}\n", "    api_keys: {test: test-key}\n" + store)
    d.apply_text(text, env=env)
    return env


def _state(d: Deployment) -> dict[str, Any]:
    data = json.loads((d.workdir / "state/gpuform.state.json").read_text())
    return {"lineage": data["lineage"], **{r["address"]: r for r in data["resources"]}}


def _health(url: str) -> dict[str, Any] | None:
    try:
        resp = httpx.get(f"{url}/healthz", timeout=2, trust_env=False)
    except httpx.HTTPError:
        return None
    return dict(resp.json()) if resp.status_code == 200 else None


def _supervisor(lineage: str, address: str) -> int:
    (pid,) = procs.find_by_labels({"gpuform.lineage": lineage, "gpuform.address": address})
    return pid


def test_two_replicas_on_distinct_ports_serve_and_a_dead_one_is_repaired(pair: Deployment, schema: str) -> None:
    env = _apply(pair, schema)
    state = _state(pair)
    rows = state["gateway.main"]["computed"]["replica_set"]
    urls = [f"http://127.0.0.1:{pair.port}", f"http://127.0.0.1:{pair.port + 1}"]
    assert [(r["id"], r["url"]) for r in rows] == [("r0", urls[0]), ("r1", urls[1])]
    for url in urls:
        assert (_health(url) or {}).get("deployment") == deployment_id(state["lineage"]), url
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, trust_env=False) as http:
            assert http.get("/v2/echo/health").status_code == 200, url
            assert http.get("/v2/echo/status/no-such-job").status_code == 404, url
    shown = run_gpuform("-C", str(pair.workdir), "state", "show", "gateway.main", env=env, check=True).stdout
    assert urls[1] in shown and "r1" in shown, shown

    # kill replica r1 (its supervisor and the gateway under it): refresh sees it, the plan repairs it
    supervisor = _supervisor(state["lineage"], "gateway.main.r1")
    child = json.loads((pool_dir(pair.workdir) / "gateways/main.r1/supervisor.pid").read_text())["child"]
    os.kill(supervisor, signal.SIGKILL)
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: _health(urls[1]) is None, 30, what="replica r1 to be down")
    planned = run_gpuform("-C", str(pair.workdir), "plan", env=env)
    assert "repair: replica r1" in planned.stdout and "gateway.main" in planned.stdout, planned.stdout + planned.stderr
    assert _health(urls[0]) is not None, "the other replica serves meanwhile"
    applied = run_gpuform("-C", str(pair.workdir), "apply", "--auto-approve", env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert _health(urls[1]) is not None
    again = run_gpuform("-C", str(pair.workdir), "plan", "-detailed-exitcode", env=env)
    assert again.returncode == 0 and "No changes" in again.stdout, again.stdout + again.stderr

    destroyed = run_gpuform("-C", str(pair.workdir), "destroy", "--auto-approve", env=env)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert _health(urls[0]) is None and _health(urls[1]) is None
    assert not list(procs.find_by_labels({"gpuform.lineage": state["lineage"]}))


def test_a_job_submitted_on_one_replica_completes_through_the_other(pair: Deployment, schema: str) -> None:
    """Replica r0 takes the job and dies at once: r1 hands it to a worker (or takes the result of the worker
    that holds it, failing over from r0) and answers its status. A worker is ready first: a start in flight
    when the leader dies is given START_GRACE before the new leader replaces it (docs/ha.md)."""
    _apply(pair, schema)
    lineage = _state(pair)["lineage"]
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(headers=headers, trust_env=False, timeout=60) as http:
        warm = http.post(f"http://127.0.0.1:{pair.port}/v2/echo/runsync", json={"input": {"warm": 1}}).json()
        assert warm["status"] == "COMPLETED", warm
        job = http.post(f"http://127.0.0.1:{pair.port}/v2/echo/run", json={"input": {"n": 7}}).json()["id"]
        supervisor = _supervisor(lineage, "gateway.main")
        child = json.loads((pool_dir(pair.workdir) / "gateways/main/supervisor.pid").read_text())["child"]
        os.kill(supervisor, signal.SIGKILL)
        os.kill(child, signal.SIGKILL)
        done = wait_for(lambda: (r := http.get(f"http://127.0.0.1:{pair.port + 1}/v2/echo/status/{job}")).status_code
                        == 200 and r.json().get("status") == "COMPLETED" and r.json(), 20, interval=0.3,
                        what="the job to complete through the surviving replica")
    assert done["output"] == {"echo": {"n": 7}}


def test_the_example_haproxy_configuration_is_valid() -> None:
    env = {**os.environ, "GPUFORM_R0": "10.77.0.11:8080", "GPUFORM_R1": "10.77.0.12:8080"}
    checked = subprocess.run(["haproxy", "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, env=env,
                             timeout=30, check=False)
    assert checked.returncode == 0 and "Configuration file is valid" in checked.stdout, checked.stdout + checked.stderr
    assert "WARNING" not in checked.stderr and "ALERT" not in checked.stderr, checked.stderr


@pytest.fixture
def haproxy(pair: Deployment) -> Iterator[tuple[str, str]]:
    """The example's HAProxy on loopback in front of the pair's two replicas: its URL and its CSV status."""
    port, stats = free_port(), free_port()
    env = {**os.environ, "GPUFORM_LB_BIND": f"127.0.0.1:{port}", "GPUFORM_R0": f"127.0.0.1:{pair.port}",
           "GPUFORM_R1": f"127.0.0.1:{pair.port + 1}", "GPUFORM_LB_STATS": f"127.0.0.1:{stats}"}
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=subprocess.DEVNULL,
                            stderr=(pair.workdir / "haproxy.log").open("w"))
    try:
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats}/stats;csv"
    finally:
        proc.terminate()
        proc.wait(10)


def test_haproxy_in_front_of_two_replicas_answers_while_one_is_killed(pair: Deployment, schema: str,
                                                                      haproxy: tuple[str, str]) -> None:
    _apply(pair, schema)
    lineage = _state(pair)["lineage"]
    url, stats = haproxy
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, trust_env=False,
                      timeout=10) as http:
        wait_for(lambda: up(stats) == {"r0", "r1"}, 15, what="haproxy to see both replicas healthy")
        before = [http.get("/v2/echo/health").status_code for _ in range(10)]
        supervisor = _supervisor(lineage, "gateway.main")
        child = json.loads((pool_dir(pair.workdir) / "gateways/main/supervisor.pid").read_text())["child"]
        os.kill(supervisor, signal.SIGKILL)
        os.kill(child, signal.SIGKILL)
        time.sleep(0.2)  # a keep-alive connection to HAProxy in use at the kill may be closed: in flight at the kill
        after = [http.get("/v2/echo/health").status_code for _ in range(40)]  # r0 is still "up" in HAProxy at first
        assert _health(f"http://127.0.0.1:{pair.port}") is None, "replica r0 is dead"
    assert before == [200] * 10 and after == [200] * 40, (before, after)


class Load:
    """Steady requests through the load balancer on a thread; counts answers and failures."""

    def __init__(self, url: str) -> None:
        self.url, self.ok, self.failed, self.errors = url, 0, 0, []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, trust_env=False,
                          timeout=10) as http:
            while not self.stop.is_set():
                try:
                    status = http.get("/v2/echo/health").status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__  # type: ignore[assignment]
                if status == 200:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(status)
                time.sleep(0.01)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _children(d: Deployment) -> list[int]:
    return [json.loads((pool_dir(d.workdir) / f"gateways/{key}/supervisor.pid").read_text())["child"]
            for key in ("main", "main.r1")]


def test_a_restart_rolls_replica_by_replica_and_a_reload_restarts_none_with_no_failed_request(
        pair: Deployment, schema: str, haproxy: tuple[str, str]) -> None:
    env = _apply(pair, schema)
    url, stats = haproxy
    wait_for(lambda: up(stats) == {"r0", "r1"}, 15, what="haproxy to see both replicas healthy")
    text = (pair.workdir / "gpuform.yaml").read_text()
    started = _children(pair)
    with Load(url) as load:
        write_config(pair.workdir, text.replace("    replicas: 2\n", "    replicas: 2\n    log_level: debug\n"))
        applied = run_gpuform("-C", str(pair.workdir), "apply", "--auto-approve", env=env)
        time.sleep(0.5)
    print(f"\nrolling restart of 2 replicas under load: {load.ok} answered, {load.failed} failed")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "restarts the 2 replicas one at a time" in applied.stdout, applied.stdout
    restarted = _children(pair)
    assert all(a != b for a, b in zip(started, restarted, strict=True)), "both replicas restarted"
    assert load.failed == 0 and load.ok > 50, (load.ok, load.errors[:10])
    lb_log = (pair.workdir / "haproxy.log").read_text()
    for replica in ("r0", "r1"):  # each stopping replica drained: its /healthz said 503 before its port closed
        assert f"replicas/{replica} is stopping, reason: Layer7 check conditionally passed, code: 503" in lb_log, lb_log[-3000:]

    text = (pair.workdir / "gpuform.yaml").read_text()
    with Load(url) as load:
        write_config(pair.workdir, text.replace("api_keys: {test: test-key}", "api_keys: {test: test-key, ci: ci-key}"))
        applied = run_gpuform("-C", str(pair.workdir), "apply", "--auto-approve", env=env)
    print(f"hot reload of 2 replicas under load: {load.ok} answered, {load.failed} failed")
    assert applied.returncode == 0 and "hot reload, no restart (api_keys)" in applied.stdout, applied.stdout
    assert _children(pair) == restarted, "a reload restarts no replica"
    assert load.failed == 0, load.errors[:10]
    for port in (pair.port, pair.port + 1):
        answer = httpx.get(f"http://127.0.0.1:{port}/v2/echo/health", headers={"Authorization": "Bearer ci-key"},
                           trust_env=False)
        assert answer.status_code == 200, (port, answer.text)
