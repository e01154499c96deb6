"""A gateway whose store is PostgreSQL, applied on the local pool: killed with -9 under load, restarted by
its supervisor, it loses no accepted job; its database URL is in no state or plan, only in its 0600
configuration."""

from __future__ import annotations

import json
import os
import signal
import stat
from typing import Any

import psycopg
import pytest

from gpuform.util import procs
from tests.conftest import local_config, pool_dir, run_gpuform
from tests.helpers import Deployment, wait_for
from tests.pg import postgres_url

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ENDPOINT = """
    endpoints:
      echo:
        pool: here
        worker: {template: echo}
        scaling: {min_workers: 1, max_workers: 2, idle_timeout: 60s}
    """


def _apply(d: Deployment, schema: str) -> dict[str, str]:
    env = {"GATEWAY_DB_URL": postgres_url()}
    store = f'    store: {{type: postgres, url: "${{env.GATEWAY_DB_URL}}", schema_name: {schema}}}\n'
    text = local_config(d.port, "", ENDPOINT).replace("    api_keys: {test: test-key}\n",
                                                      "    api_keys: {test: test-key}\n" + store)
    d.apply_text(text, env=env)
    return env


def test_a_gateway_on_postgres_killed_with_sigkill_still_answers_every_accepted_job(
        schema: str, deployment: Deployment) -> None:
    env = _apply(deployment, schema)
    with deployment.http() as http:
        ids = [http.post("/v2/echo/run", json={"input": {"sleep": 0.3, "n": i}}).json()["id"] for i in range(20)]
        lineage = json.loads((deployment.workdir / "state/gpuform.state.json").read_text())["lineage"]
        (supervisor,) = procs.find_by_labels({"gpuform.lineage": lineage, "gpuform.address": "gateway.main"})
        child = json.loads((pool_dir(deployment.workdir) / "gateways/main/supervisor.pid").read_text())["child"]
        open_at_kill = _open_jobs(schema)
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: _healthy(http), 30, what="the supervisor to restart the gateway")
        assert procs.alive(supervisor)
        for job_id in ids:
            assert http.get(f"/v2/echo/status/{job_id}").status_code == 200, job_id
        wait_for(lambda: all(http.get(f"/v2/echo/status/{j}").json()["status"] == "COMPLETED" for j in ids), 60,
                 interval=0.5, what="every accepted job to complete after the restart")
    assert open_at_kill > 0, "the kill came while jobs were open"
    assert _completed(schema) >= 20, "the jobs live in the gateway's postgres schema"
    _url_is_secret(deployment, env)


def _url_is_secret(d: Deployment, env: dict[str, str]) -> None:
    """The URL's password is in no state or plan; the gateway's configuration (mode 0600) carries the URL."""
    password = str(psycopg.conninfo.conninfo_to_dict(env["GATEWAY_DB_URL"])["password"])
    planned = run_gpuform("-C", str(d.workdir), "plan", "-detailed-exitcode", env=env)
    assert planned.returncode == 0 and "No changes" in planned.stdout, planned.stdout + planned.stderr
    as_json = run_gpuform("-C", str(d.workdir), "plan", "-json", env=env, check=True).stdout
    state = (d.workdir / "state/gpuform.state.json").read_text()
    assert password not in planned.stdout + as_json + state
    config = pool_dir(d.workdir) / "gateways/main/config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["store_url"] == env["GATEWAY_DB_URL"]


def _open_jobs(schema: str) -> int:
    return _count(schema, "status IN ('IN_QUEUE', 'IN_PROGRESS')")


def _completed(schema: str) -> int:
    return _count(schema, "status = 'COMPLETED'")


def _count(schema: str, where: str) -> int:
    with psycopg.connect(postgres_url()) as conn:
        row = conn.execute(f'SELECT COUNT(*) FROM "{schema}".jobs WHERE {where}').fetchone()
    return int(row[0]) if row else 0


def _healthy(http: Any) -> bool:
    try:
        return bool(http.get("/healthz").status_code == 200)
    except Exception:
        return False
