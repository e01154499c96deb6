"""The request history on a real gateway (local pool, echo workers): `gpuform requests` shows finished jobs
with delay, execution and status; `--export` writes a trace `gpuform simulate --trace` replays as it is; and
`gpuform logs --gateway` reads the gateway's own log through the pool's provider."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import run_gpuform
from tests.helpers import Deployment

pytestmark = pytest.mark.integration

ENDPOINTS = """
endpoints:
  echo:
    pool: here
    worker: {template: echo}
    scaling: {min_workers: 1, max_workers: 1, idle_timeout: 60s}
"""


def test_requests_lists_exports_and_simulates_and_logs_show_the_gateway(deployment: Deployment) -> None:
    deployment.apply(ENDPOINTS)
    with deployment.http() as http:
        done = [http.post("/v2/echo/runsync", json={"input": {"sleep": 0.2, "n": i}}).json() for i in range(3)]
        failed = http.post("/v2/echo/runsync", json={"input": {"fail": "on purpose"}}).json()
    assert [d["status"] for d in done] == ["COMPLETED"] * 3 and failed["status"] == "FAILED"
    where = ("-C", str(deployment.workdir))

    listed = run_gpuform(*where, "requests", "echo", "--json", check=True)
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [failed["id"], *reversed([d["id"] for d in done])], "newest first"
    for row in rows[1:]:
        assert row["status"] == "COMPLETED" and row["execution"] >= 0.2 and row["delay"] >= 0 and row["worker_id"]
    assert rows[0]["status"] == "FAILED" and rows[0]["owner"] == "test"
    only_failed = json.loads(run_gpuform(*where, "requests", "echo", "--status", "failed", "--since", "1h",
                                         "--json", check=True).stdout)
    assert [r["id"] for r in only_failed] == [failed["id"]]
    table = run_gpuform(*where, "requests", "echo", "--limit", "2", check=True).stdout
    assert failed["id"] in table and "FAILED" in table and done[0]["id"] not in table
    bad = run_gpuform(*where, "requests", "echo", "--since", "last tuesday")
    assert bad.returncode != 0 and "--since" in bad.stderr and "Traceback" not in bad.stderr

    export = deployment.workdir / "export.jsonl"
    run_gpuform(*where, "requests", "echo", "--export", str(export), check=True)
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert [line["id"] for line in lines] == [r["id"] for r in reversed(rows)], "oldest first"
    assert {"arrival", "arrival_epoch", "delay_time", "execution_time", "status", "worker"} <= set(lines[0])
    simulated = run_gpuform(*where, "simulate", "echo", "--trace", str(export), "--cold-start", "5s", "--json",
                            check=True)
    report = json.loads(simulated.stdout)
    assert report["trace"]["requests"] == 4 and "measured" in report["model"]["service"]

    logs = run_gpuform(*where, "logs", "--gateway", "--tail", "200", check=True)
    assert "gateway main up" in logs.stdout, logs.stdout[-2000:] + logs.stderr
    neither = run_gpuform(*where, "logs")
    assert neither.returncode != 0 and "--gateway" in neither.stderr

    # -f keeps printing: a job that fails after it started shows up while it runs
    follow = subprocess.Popen([sys.executable, "-m", "gpuform", *where, "logs", "--gateway", "-f", "--tail", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "NO_COLOR": "1"})
    try:
        seen: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [seen.put(line) for line in follow.stdout or []], daemon=True).start()
        time.sleep(2.0)  # the tail is printed; what comes next is new
        with deployment.http() as http:
            late = http.post("/v2/echo/runsync", json={"input": {"fail": "while following"}}).json()
        deadline, lines = time.monotonic() + 20, []
        while time.monotonic() < deadline and not any(late["id"] in line for line in lines):
            with contextlib.suppress(queue.Empty):
                lines.append(seen.get(timeout=0.5))
        assert any(late["id"] in line and "while following" in line for line in lines), lines[-20:]
        assert follow.poll() is None, "still following"
    finally:
        follow.terminate()
        follow.wait(10)
