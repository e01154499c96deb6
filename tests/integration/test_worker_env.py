"""A custom worker's own dependencies on a local pool: a requirements.txt beside the handler builds a
virtualenv (content-addressed), the next apply reuses it, a changed requirements.txt is a repair that builds
another and rolls the workers onto it; a worker.python that is gone is a clear error."""

from __future__ import annotations

import textwrap
import time

import pytest

from tests.conftest import local_config, run_gpuform, write_config
from tests.helpers import Deployment, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HANDLER = """
import sys
import six
from gpuform.worker import start

def handler(job):
    return {"six": six.__version__, "prefix": sys.prefix}

start(handler)
"""

ENDPOINT = """
endpoints:
  app:
    pool: here
    worker: {command: [python, handler.py]}
    scaling: {min_workers: 1, max_workers: 1, idle_timeout: 60s}
"""


def _timed_apply(deployment: Deployment, text: str) -> tuple[str, float]:
    """Apply; its output with the progress lines (stderr), and how long it took."""
    write_config(deployment.workdir, local_config(deployment.port, endpoint=text))
    started = time.monotonic()
    result = run_gpuform("-C", str(deployment.workdir), "apply", "--auto-approve")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr, time.monotonic() - started


def test_requirements_build_an_environment_reused_across_applies(deployment: Deployment) -> None:
    (deployment.workdir / "handler.py").write_text(HANDLER)
    (deployment.workdir / "requirements.txt").write_text("six==1.17.0  # the handler's only dependency\n")
    first, built = _timed_apply(deployment, ENDPOINT)
    assert "creating the virtualenv" in first and "ready (" in first, first
    with deployment.http() as http:
        out = http.post("/v2/app/runsync", json={"input": {}}).json()["output"]
    assert out["six"] == "1.17.0" and out["prefix"].endswith("/venvs/endpoint-app"), out

    again, reused = _timed_apply(deployment, ENDPOINT)
    print(f"\nworker environment: first apply {built:.1f} s (builds it), second apply {reused:.1f} s (reuses it)")
    assert "No changes" in again and "virtualenv" not in again, again

    (deployment.workdir / "requirements.txt").write_text("six==1.16.0\n")
    changed, _ = _timed_apply(deployment, ENDPOINT)
    assert "the worker environment of endpoint app is missing or out of date" in changed, changed
    with deployment.http() as http:
        wait_for(lambda: http.post("/v2/app/runsync", json={"input": {}}).json()["output"]["six"] == "1.16.0", 60,
                 what="the workers to roll onto the new environment")


def test_a_worker_python_that_is_gone_is_a_clear_error(deployment: Deployment) -> None:
    (deployment.workdir / "handler.py").write_text(HANDLER)
    write_config(deployment.workdir, local_config(deployment.port, endpoint=textwrap.dedent("""
        endpoints:
          app:
            pool: here
            worker: {command: [python, handler.py], python: /nonexistent/venv}
            scaling: {min_workers: 0, max_workers: 1}
        """)))
    result = run_gpuform("-C", str(deployment.workdir), "apply", "--auto-approve")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "worker.python: no Python at /nonexistent/venv on this machine" in result.stdout + result.stderr
