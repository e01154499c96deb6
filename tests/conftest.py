"""Shared fixtures: isolated workspaces, free ports, running the CLI in-process or as a real process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpuform.cli.main import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test destroys what it applies: gpuform processes or containers of this run left at the end
    are an error. The run's local runtime files (pid files, logs of local pools) live in its temporary
    directory, not in the user's data directory."""
    from tests import leaks

    os.environ["GPUFORM_DATA_DIR"] = str(tmp_path_factory.getbasetemp() / "gpuform-data")
    yield
    report = leaks.check(tmp_path_factory.getbasetemp())
    assert not report, "the test run left these behind (now killed/removed):\n" + report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run the CLI in this process; returns exit code and captured output."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_gpuform(*args: str, env: dict[str, str] | None = None, timeout: float = 180,
                check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gpuform`` as a separate process (what a user runs)."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "gpuform", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"gpuform {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A configuration directory; everything a test applies there is destroyed at the end."""
    directory = tmp_path / "cfg"
    directory.mkdir()
    yield directory
    destroy_after_test(directory)


def destroy_after_test(directory: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> None:
    """Destroy what a test applied in ``directory``; a destroy that fails is a test error (it would leak)."""
    from gpuform.state.store import LocalStateStore

    if not LocalStateStore(directory / "state").read().resources:  # the state file and its journal
        return
    result = run_gpuform("-C", str(directory), *args, "destroy", "--auto-approve", env=env, timeout=timeout)
    assert result.returncode == 0, f"destroy after the test failed (it leaks):\n{result.stdout}\n{result.stderr}"
    left = [r.address for r in LocalStateStore(directory / "state").read().resources]
    assert not left, f"destroy after the test left {left} in the state:\n{result.stdout}\n{result.stderr}"


def pool_dir(workdir: Path, pool: str = "here") -> Path:
    """Where a local pool keeps its pid files, logs and gateways (recorded in the state)."""
    state = json.loads((workdir / "state" / "gpuform.state.json").read_text())
    pools = {r["name"]: r for r in state["resources"] if r["kind"] == "pool"}
    return Path(pools[pool]["computed"]["data_dir"])


def write_config(directory: Path, text: str, name: str = "gpuform.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def local_config(port: int, extra: str = "", endpoint: str = "") -> str:
    """A minimal configuration on the local pool with a gateway on ``port``."""
    return textwrap.dedent(f"""
        pools:
          here:
            provider: local
            price_per_gpu_second: {{cpu: 0.001}}
        gateway:
          main:
            pool: here
            listen: 127.0.0.1:{port}
            api_keys: {{test: test-key}}
            timings: {{lease_timeout: 5s, ping_interval: 1s, reconcile_interval: 0.2s, drain_timeout: 5s,
                      take_timeout: 2s, start_backoff: 1s, start_backoff_max: 4s, webhook_retry_delay: 0.3s}}
        """) + textwrap.dedent(endpoint or """
        endpoints:
          echo:
            pool: here
            worker: {template: echo}
            scaling: {min_workers: 0, max_workers: 2, idle_timeout: 5s}
        """) + textwrap.dedent(extra)


@pytest.fixture
def deployment(workdir: Path):  # type: ignore[no-untyped-def]
    """A gateway on the local pool (apply it with ``deployment.apply(endpoints_yaml)``); destroyed afterwards."""
    from tests.helpers import Deployment

    deployment = Deployment(workdir, free_port())
    yield deployment
    destroy_after_test(workdir, env=deployment.env)


@pytest.fixture
def schema() -> Iterator[str]:
    """A PostgreSQL schema of its own on the tests' cluster (tests/pg.py), dropped afterwards (after a deployment
    that uses it is destroyed, when the test asks for the deployment first: fixtures end in reverse order)."""
    from tests.pg import drop_schema, fresh_schema

    name = fresh_schema()
    yield name
    drop_schema(name)
