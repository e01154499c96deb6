"""The gateway's log as JSON lines with the clients' job ids, rotated by size, still read by `gpuform logs
--gateway`; the bare-metal host agent's log pipe rotating a worker's log and keeping its last lines (about 15 s).
Workers' logs rotating on every provider: tests/contract/test_provider_contract.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, pool_dir, run_gpuform
from tests.helpers import Deployment, wait_for

pytestmark = pytest.mark.integration


def test_the_gateway_log_is_json_lines_with_job_ids_rotated_by_size(deployment: Deployment) -> None:
    deployment.apply("", gateway_extra="    log_format: json\n    logs: {max_size: 2048, max_files: 2}\n")
    with deployment.http() as http:
        failed = [http.post("/v2/echo/runsync", json={"input": {"fail": f"bad input {i}"}}).json() for i in range(12)]
    assert all(f["status"] == "FAILED" for f in failed)
    gdir = pool_dir(deployment.workdir) / "gateways" / "main"
    wait_for(lambda: failed[-1]["id"] in (gdir / "gateway.log").read_text(), 10, what="the last job's line")
    files = sorted(gdir.glob("gateway.log*"))
    assert "gateway.log.1" in [f.name for f in files] and len(files) <= 3, "rotated, at most two kept"
    assert all(f.stat().st_size <= 2048 for f in files)
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]  # every line is JSON
    by_job = {line["job_id"]: line for line in lines if "job_id" in line}
    last = by_job[failed[-1]["id"]]
    assert last["endpoint"] == "echo" and last["worker_id"] == failed[-1]["workerId"] and last["level"] == "INFO"
    assert "ended FAILED: bad input 11" in last["message"]

    shown = run_gpuform("-C", str(deployment.workdir), "logs", "--gateway", "--tail", "3")
    assert shown.returncode == 0, shown.stderr
    assert failed[-1]["id"] in shown.stdout and "Traceback" not in shown.stderr


def _agent(bin_dir: Path, command: str, request: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run([sys.executable, str(bin_dir / "hostagent.py"), command], input=json.dumps(request),
                            capture_output=True, text=True, timeout=30, check=True)
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


WRITER = """
import signal, sys, time
def bye(*_):
    print("stopped cleanly: last line", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
for i in range(60):
    print(f"worker line {i} ".ljust(99, "."), flush=True)
while True:
    time.sleep(0.1)
"""


def test_the_host_agent_rotates_a_workers_log_and_keeps_its_last_lines(tmp_path: Path) -> None:
    """What the baremetal provider runs on each host (bin/hostagent.py and bin/logpipe.py, the host's Python)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(REPO / "gpuform" / "providers" / "common" / "hostagent.py", bin_dir)
    shutil.copy(REPO / "gpuform" / "util" / "logpipe.py", bin_dir)
    records, log = tmp_path / "workers", tmp_path / "logs" / "w1.log"
    request = {"id": "w1", "argv": [sys.executable, "-c", WRITER], "records": str(records), "log": str(log),
               "rotate": {"max_bytes": 2000, "keep": 2}, "meta": {"kind": "worker"}}
    _agent(bin_dir, "start", request)
    try:
        wait_for(lambda: log.exists() and "worker line 59" in log.read_text(), 10, what="the worker's lines")
        assert sorted(p.name for p in log.parent.iterdir()) == ["w1.log", "w1.log.1", "w1.log.2"]
        assert all(p.stat().st_size <= 2000 for p in log.parent.iterdir())
        _agent(bin_dir, "stop", {"records": str(records), "id": "w1", "grace": 10})
        wait_for(lambda: "stopped cleanly: last line" in log.read_text(), 10, what="the line written while stopping")
        tail = _agent(bin_dir, "tail", {"path": str(log), "lines": 25})["text"].splitlines()
        assert tail[-1] == "stopped cleanly: last line" and tail[-2].startswith("worker line 59 ")
        assert len(tail) == 21 and tail[0].startswith("worker line 40 "), "the tail continues into w1.log.1"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _pipes(log):
            time.sleep(0.1)
        assert not _pipes(log), "the log pipe ends with its worker"
    finally:  # a failed assertion must not leave the worker and its pipe running
        _agent(bin_dir, "stop", {"records": str(records), "id": "w1", "grace": 1})
        for pid in _pipes(log):
            subprocess.run(["kill", pid], check=False)


def _pipes(log: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"logpipe.py {log}"], capture_output=True, text=True, check=False)
    return found.stdout.split()
