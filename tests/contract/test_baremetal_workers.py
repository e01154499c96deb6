"""A custom worker's own dependencies on a bare-metal pool (h1, h2): the handler and a requirements.txt beside it
live on the hosts (gpuform does not copy them); apply builds the endpoint's virtualenv on each host with the
file's requirements, a changed file is a planned repair that rebuilds it and rolls the workers, a file that
differs between hosts or a handler missing on one is a plan warning, and apply refuses a missing handler
naming the host and the path."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import destroy_after_test, free_port, run_gpuform, write_config
from tests.contract.hosts import load_hosts, ssh
from tests.helpers import wait_for

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

H1, H2 = "10.77.0.11", "10.77.0.12"
HANDLER = """
import six
from gpuform.worker import start

def handler(job):
    return {"six": six.__version__, "file": six.__file__}

start(handler)
"""


def _config(port: int, appdir: str) -> str:
    info = load_hosts()
    hosts = "".join(f"      - {{address: {h['address']}, identity_file: {info['ssh']['identity_file']}, "
                    f"name: {h['name']}}}\n" for h in info["hosts"])
    return (f"pools:\n  p:\n    provider: baremetal\n    known_hosts: {info['ssh']['known_hosts']}\n"
            f"    price_per_gpu_second: {{cpu: 0.001}}\n    hosts:\n{hosts}") + textwrap.dedent(f"""
        gateway:
          main:
            pool: p
            listen: 0.0.0.0:{port}
            advertise_url: http://{H1}:{port}
            api_keys: {{test: test-key}}
            timings: {{lease_timeout: 5s, ping_interval: 1s, reconcile_interval: 0.3s, drain_timeout: 3s,
                      take_timeout: 2s, start_backoff: 1s, start_backoff_max: 4s}}
        endpoints:
          app:
            pool: p
            worker: {{command: [python, handler.py], workdir: {appdir}}}
            scaling: {{min_workers: 1, max_workers: 1, idle_timeout: 60s}}
        """)


def _put(host: str, path: str, text: str) -> None:
    info = load_hosts()
    subprocess.run(["ssh", "-F", info["ssh"]["config"], f"root@{host}", f"cat > {shlex.quote(path)}"], input=text, text=True,
                   check=True, timeout=60)


@pytest.fixture
def appdir(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The worker's directory on both hosts; the configuration directory is destroyed, then it is removed."""
    load_hosts()
    directory = f"/srv/gpuform-workerfiles-{uuid.uuid4().hex[:8]}"
    for host in (H1, H2):
        ssh(host, "mkdir", "-p", directory)
    (tmp_path / "cfg").mkdir()
    yield directory
    try:
        destroy_after_test(tmp_path / "cfg", timeout=300)
    finally:
        for host in (H1, H2):
            ssh(host, "rm", "-rf", "--", directory, check=False)


def _apply(workdir: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run_gpuform("-C", str(workdir), "apply", "--auto-approve", timeout=600)
    return result, time.monotonic() - started


def _plan(workdir: Path) -> tuple[int, str]:
    result = run_gpuform("-C", str(workdir), "plan", "--detailed-exitcode", timeout=300)
    assert result.returncode in (0, 2), result.stdout[-2000:] + result.stderr[-2000:]
    return result.returncode, result.stdout + result.stderr


def _builds(output: str) -> list[float]:
    """How long each host's environment took to build, from apply's progress lines."""
    return [float(s) for s in re.findall(r"endpoint app on h\d: .*/venvs/endpoint-app ready \(([\d.]+) s\)", output)]


def _six_on_hosts(venv: str) -> set[str]:
    return {ssh(h, f"{venv}/bin/python", "-c", "import six; print(six.__version__)").stdout.strip() for h in (H1, H2)}


def test_requirements_txt_on_the_hosts_builds_the_workers_environment(tmp_path: Path, appdir: str) -> None:
    workdir = tmp_path / "cfg"
    port = free_port()
    for host in (H1, H2):
        _put(host, f"{appdir}/handler.py", HANDLER)
        _put(host, f"{appdir}/requirements.txt", "six==1.17.0  # the handler's only dependency\n")
    write_config(workdir, _config(port, appdir))
    first, took = _apply(workdir)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-4000:]
    lineage = json.loads((workdir / "state" / "gpuform.state.json").read_text())["lineage"]
    venv = f"/var/lib/gpuform/lineage-{lineage[:8]}/venvs/endpoint-app"
    with httpx.Client(base_url=f"http://{H1}:{port}", headers={"Authorization": "Bearer test-key"},
                      timeout=120) as http:
        out = http.post("/v2/app/runsync", json={"input": {}}).json()
        assert out["status"] == "COMPLETED", out
        assert out["output"]["six"] == "1.17.0" and out["output"]["file"].startswith(f"{venv}/"), out
    assert _six_on_hosts(venv) == {"1.17.0"}, "each host's environment has the file's requirements"
    built = _builds(output)
    assert len(built) == 2, output[-4000:]
    assert _plan(workdir)[0] == 0

    # the file differs between the hosts, and the handler is gone from h2: warnings, no change
    _put(H1, f"{appdir}/requirements.txt", "six==1.16.0\n")
    ssh(H2, "mv", f"{appdir}/handler.py", f"{appdir}/handler.py.away")
    code, text = _plan(workdir)
    assert code == 0, text
    assert (f"Warning: endpoint.app: {appdir}/requirements.txt lists different requirements on different hosts "
            "(h1: six==1.16.0; h2: six==1.17.0): apply fails until it is fixed") in text, text
    assert f"Warning: endpoint.app: the handler {appdir}/handler.py does not exist on h2: put it there" in text, text

    # the same change on both hosts: a repair; apply refuses while the handler is missing on h2
    _put(H2, f"{appdir}/requirements.txt", "six==1.16.0\n")
    code, text = _plan(workdir)
    assert code == 2 and "repair: worker environment out of date on h1, h2 (its requirements changed)" in text, text
    refused, _ = _apply(workdir)
    said = refused.stdout + refused.stderr
    assert refused.returncode == 1 and "Traceback" not in said, said[-3000:]
    assert f"endpoint app: the handler {appdir}/handler.py does not exist on h2" in said, said[-3000:]
    assert "gpuform does not copy a bare-metal worker's files" in said, said[-3000:]

    ssh(H2, "mv", f"{appdir}/handler.py.away", f"{appdir}/handler.py")
    second, retook = _apply(workdir)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-4000:]
    rebuilt = _builds(output)
    assert len(rebuilt) == 2 and _six_on_hosts(venv) == {"1.16.0"}, output[-4000:]
    with httpx.Client(base_url=f"http://{H1}:{port}", headers={"Authorization": "Bearer test-key"},
                      timeout=120) as http:
        wait_for(lambda: http.post("/v2/app/runsync", json={"input": {}}).json()["output"]["six"] == "1.16.0", 60,
                 what="the worker to roll onto the rebuilt environment")
    assert _plan(workdir)[0] == 0
    print(f"\nbare-metal worker environment: first apply {took:.1f} s (environment built in "
          f"{', '.join(f'{b:.1f}' for b in built)} s on h1, h2), apply after requirements.txt changed {retook:.1f} s "
          f"(rebuilt in {', '.join(f'{b:.1f}' for b in rebuilt)} s)")
