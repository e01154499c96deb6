"""Every example applies as a user would run it (variables pointed at the test hosts) and answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, destroy_after_test, free_port, run_gpuform
from tests.contract.hosts import load_hosts

pytestmark = [pytest.mark.slow]


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(REPO / "examples" / name, target, ignore=shutil.ignore_patterns("state"))
    return target


def _apply_and_call(directory: Path, endpoint: str, variables: list[str], key: str) -> None:
    env = {"GPUFORM_API_KEY": key}
    args = [a for v in variables for a in ("--var", v)]
    try:
        applied = run_gpuform("-C", str(directory), *args, "apply", "--auto-approve", env=env, timeout=900)
        assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
        url = json.loads(run_gpuform("-C", str(directory), "output", "-json", "endpoints", check=True).stdout)[
            endpoint]["url"]
        answer = httpx.post(f"{url}/runsync", json={"input": {"from": directory.name}},
                            headers={"Authorization": f"Bearer {key}"}, timeout=180).json()
        assert answer["status"] == "COMPLETED" and answer["output"] == {"echo": {"from": directory.name}}
        plan = run_gpuform("-C", str(directory), *args, "plan", "--detailed-exitcode", env=env)
        assert plan.returncode == 0, plan.stdout[-2000:]
    finally:
        destroy_after_test(directory, *args, env=env)


def test_quickstart(tmp_path: Path) -> None:
    directory = _copy("quickstart", tmp_path)
    _apply_and_call(directory, "echo", [f"port={free_port()}"], "quickstart-key")


@pytest.mark.parametrize("name", ["docker-ssh", "baremetal"])
def test_host_examples_on_the_test_hosts(name: str, tmp_path: Path) -> None:
    info = load_hosts()
    directory = _copy(name, tmp_path)
    variables = ["host1=10.77.0.11", "host2=10.77.0.12", f"ssh_key={info['ssh']['identity_file']}",
                 f"known_hosts={info['ssh']['known_hosts']}", f"port={free_port()}"]
    if name == "docker-ssh":
        variables.append(f"base_image={info['base_image']}")
    _apply_and_call(directory, "echo" if name == "docker-ssh" else "upper", variables, "example-key")
