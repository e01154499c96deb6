"""Apply waits for each endpoint's min_workers to be ready, and says why when they are not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import free_port, local_config, run_gpuform, write_config
from tests.helpers import Deployment

pytestmark = pytest.mark.integration

CRASHING = """
endpoints:
  crash:
    pool: here
    worker: {command: [python, -c, "print('boom: no CUDA here', flush=True); raise SystemExit(3)"]}
    scaling: {min_workers: 1, max_workers: 1}
"""


def test_apply_returns_with_min_workers_ready(deployment: Deployment) -> None:
    deployment.apply("""
        endpoints:
          echo:
            pool: here
            worker: {template: echo}
            scaling: {min_workers: 1, max_workers: 2, idle_timeout: 5s}
        """)
    assert deployment.status("echo")["ready_workers"] == 1, "ready when apply returned, not later"


def test_a_crash_looping_worker_fails_apply_with_its_condition_and_log(workdir: Path) -> None:
    write_config(workdir, local_config(free_port(), endpoint=CRASHING))
    result = run_gpuform("-C", str(workdir), "apply", "--auto-approve", "--wait-timeout", "60", timeout=120)
    assert result.returncode != 0
    assert re.search(r"endpoint\.crash: \S*gpuform\.yaml:\d+:\d+: 0 of 1 min_workers ready", result.stderr), result.stderr
    assert "UNHEALTHY" in result.stderr and "boom: no CUDA here" in result.stderr
    assert "--no-wait" in result.stderr
    skipped = run_gpuform("-C", str(workdir), "apply", "--auto-approve", "--no-wait", timeout=120)
    assert skipped.returncode == 0, skipped.stderr
