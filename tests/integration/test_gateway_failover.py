"""Two real gateway processes on one PostgreSQL schema, on the local pool: the applied one leads and starts the
workers; a second one, started from the same configuration on another port, follows. Killed with -9 (its
supervisor held stopped, so it does not come back meanwhile), the leader is replaced by the follower within
5 s (the figure is printed), which adopts the running workers and starts none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import free_port, local_config, pool_dir
from tests.helpers import Deployment, wait_for
from tests.pg import postgres_url

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ENDPOINT = """
    endpoints:
      echo:
        pool: here
        worker: {template: echo}
        scaling: {min_workers: 2, max_workers: 4, idle_timeout: 60s}
    """


def _apply(d: Deployment, schema: str) -> None:
    store = f'    store: {{type: postgres, url: "${{env.GATEWAY_DB_URL}}", schema_name: {schema}}}\n'
    text = local_config(d.port, "", ENDPOINT).replace("    api_keys: {test: test-key}\n",
                                                      "    api_keys: {test: test-key}\n" + store)
    d.apply_text(text, env={"GATEWAY_DB_URL": postgres_url()})


def _replica(d: Deployment, port: int) -> dict[str, Any] | None:
    """The ``replica`` part of a gateway's /admin/status (None while it does not answer)."""
    key = (d.workdir / "state" / "secrets" / "gateway.main.admin_key").read_text()
    try:
        resp = httpx.get(f"http://127.0.0.1:{port}/admin/status", headers={"Authorization": f"Bearer {key}"},
                         timeout=2, trust_env=False)
    except httpx.HTTPError:
        return None
    found: dict[str, Any] | None = resp.json().get("replica") if resp.status_code == 200 else None
    return found


def _worker_rows(schema: str) -> list[tuple[str, str]]:
    with psycopg.connect(postgres_url()) as conn:
        return [(str(r[0]), str(r[1])) for r in conn.execute(f'SELECT id, state FROM "{schema}".workers ORDER BY id')]


def test_killing_the_leader_hands_over_within_5s_and_the_follower_adopts_its_workers(
        schema: str, deployment: Deployment) -> None:
    _apply(deployment, schema)
    wait_for(lambda: len(deployment.workers("echo", ("idle", "running"))) == 2, 60, interval=0.5,
             what="the leader's two workers to be ready")
    first = _replica(deployment, deployment.port)
    assert first is not None and first["leader"], first
    gdir = pool_dir(deployment.workdir) / "gateways/main"
    port = free_port()
    with open(gdir / "follower.log", "wb") as log:
        follower = subprocess.Popen([sys.executable, "-m", "gpuform.gateway", "--config",
                                     str(gdir / "config.json"), "--listen", f"127.0.0.1:{port}"],
                                    stdout=subprocess.DEVNULL, stderr=log)
    pids = json.loads((gdir / "supervisor.pid").read_text())
    try:
        second = wait_for(lambda: _replica(deployment, port), 30, interval=0.2, what="the second replica to answer")
        assert not second["leader"] and second["current_leader"]["replica_id"] == first["replica_id"], second
        workers = _worker_rows(schema)
        os.kill(pids["pid"], signal.SIGSTOP)  # its supervisor does not restart the leader meanwhile
        killed = time.monotonic()
        os.kill(pids["child"], signal.SIGKILL)
        wait_for(lambda: (_replica(deployment, port) or {}).get("leader"), 5, interval=0.05,
                 what="the follower to lead within 5 s of the kill")
        took = time.monotonic() - killed
        print(f"failover: the follower leads {took:.2f}s after kill -9 of the leader")
        now = _replica(deployment, port)
        assert now is not None and now["epoch"] == first["epoch"] + 1
        time.sleep(3)  # several reconcile ticks of the new leader
        assert _worker_rows(schema) == workers, "adopted the two workers, started none"
        key = (deployment.workdir / "state" / "secrets" / "gateway.main.admin_key").read_text()
        listed = httpx.get(f"http://127.0.0.1:{port}/admin/endpoints/echo/status", trust_env=False,
                           headers={"Authorization": f"Bearer {key}"}, timeout=5).json()["worker_list"]
        assert sorted(w["id"] for w in listed if w["state"] in ("idle", "running")) == [w for w, _ in workers]
    finally:
        follower.terminate()
        follower.wait(30)
        os.kill(pids["pid"], signal.SIGCONT)  # the supervisor restarts the first replica, which leads again
        wait_for(lambda: (_replica(deployment, deployment.port) or {}).get("leader"), 30, interval=0.2,
                 what="the restarted first replica to lead (destroy stops the workers through it)")
