"""apply/plan/destroy with the local provider, for real: a gateway daemon, staged files, drift behind our back."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from gpuform.gateway.client import AdminClient
from gpuform.spec import EndpointSpec
from gpuform.util import procs
from tests.conftest import free_port, local_config, pool_dir, run_gpuform, write_config

pytestmark = pytest.mark.integration

VOLUME = """
volumes:
  weights: {pool: here, path: VOLPATH, source: ./model}
"""


def _config_with_volume(workdir: Path, port: int) -> Path:
    model = workdir / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"layers": 2}')
    (model / "sub" / "weights.bin").write_bytes(os.urandom(200_000))
    volpath = workdir.parent / "staged"
    endpoint = """
        endpoints:
          echo:
            pool: here
            worker: {template: echo, env: {MODE: fast}}
            model: {name: tiny, volume: weights}
            scaling: {min_workers: 0, max_workers: 2, idle_timeout: 5s}
        """
    write_config(workdir, local_config(port, VOLUME.replace("VOLPATH", str(volpath)), endpoint))
    return volpath


def _state(workdir: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((workdir / "state" / "gpuform.state.json").read_text())


def _admin(workdir: Path, port: int) -> AdminClient:
    key = (workdir / "state" / "secrets" / "gateway.main.admin_key").read_text()
    return AdminClient(f"http://127.0.0.1:{port}", key)


def _gateway_processes(lineage: str) -> list[int]:
    return list(procs.find_by_labels({"gpuform.lineage": lineage, "gpuform.address": "gateway.main"}))


def test_apply_then_plan_is_empty_and_drift_is_found_and_repaired(workdir: Path) -> None:
    port = free_port()
    volpath = _config_with_volume(workdir, port)
    d = str(workdir)
    applied = run_gpuform("-C", d, "apply", "--auto-approve", check=True)
    assert "Apply complete! Resources: 4 added" in applied.stdout
    assert (volpath / "sub" / "weights.bin").read_bytes() == (workdir / "model" / "sub" / "weights.bin").read_bytes()
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["ok"] is True
    plan = run_gpuform("-C", d, "plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "No changes" in plan.stdout

    # 1. a staged file deleted behind gpuform's back
    (volpath / "sub" / "weights.bin").unlink()
    plan = run_gpuform("-C", d, "plan", "--detailed-exitcode")
    assert plan.returncode == 2
    assert "# volume.weights has changed" in plan.stdout and "differs on localhost" in plan.stdout
    assert "1 file(s), 200000 bytes to copy to localhost" in plan.stdout
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in plan.stdout

    # 2. a worker's declared env edited on the gateway
    with _admin(workdir, port) as admin:
        spec = admin.get_endpoint("echo")
        assert spec is not None
        edited = spec["spec"]
        edited["worker"]["env"]["MODE"] = "slow"
        admin.put_endpoint("echo", EndpointSpec.model_validate(edited), {})
    plan = run_gpuform("-C", d, "plan")
    assert "# endpoint.echo has changed" in plan.stdout and '~ MODE = "fast" -> "slow"' in plan.stdout
    assert '~ MODE = "slow" -> "fast"' in plan.stdout
    assert "Plan: 0 to add, 2 to change, 0 to destroy." in plan.stdout

    # 3. the gateway process stopped
    lineage = _state(workdir)["lineage"]
    (pid,) = _gateway_processes(lineage)
    procs.terminate(pid, grace=10)
    plan = run_gpuform("-C", d, "plan")
    assert "# gateway.main has been deleted" in plan.stdout
    assert "Plan: 1 to add, 2 to change, 0 to destroy." in plan.stdout

    repaired = run_gpuform("-C", d, "apply", "--auto-approve", check=True)
    assert "Apply complete! Resources: 1 added, 2 changed" in repaired.stdout
    assert (volpath / "sub" / "weights.bin").exists()
    with _admin(workdir, port) as admin:
        spec = admin.get_endpoint("echo")
        assert spec is not None and spec["spec"]["worker"]["env"]["MODE"] == "fast"
    assert len(_gateway_processes(lineage)) == 1
    assert run_gpuform("-C", d, "plan", "--detailed-exitcode").returncode == 0

    here = pool_dir(workdir)
    assert here.is_dir()
    destroyed = run_gpuform("-C", d, "destroy", "--auto-approve", check=True)
    assert "Destroy complete! Resources: 0 added, 0 changed, 4 destroyed." in destroyed.stdout
    assert not _gateway_processes(lineage)
    assert not volpath.exists()
    assert not here.exists()
    assert _state(workdir)["resources"] == []


def test_second_concurrent_apply_fails_at_once_with_the_holder(workdir: Path) -> None:
    write_config(workdir, local_config(free_port()))
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys,time; from pathlib import Path; from gpuform.state.store import LocalStateStore, locked\n"
        "with locked(LocalStateStore(Path(sys.argv[1])), 'apply'):\n print('locked', flush=True); time.sleep(30)"),
        str(workdir / "state")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        second = run_gpuform("-C", str(workdir), "apply", "--auto-approve")
        assert second.returncode == 1 and time.monotonic() - started < 10
        assert "Error acquiring the state lock" in second.stderr and f"pid {holder.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        holder.kill()
        holder.wait()


def test_saved_plan_applies_exactly_and_a_stale_one_is_refused(workdir: Path, tmp_path: Path) -> None:
    write_config(workdir, local_config(free_port()))
    d = str(workdir)
    first, second = tmp_path / "first.plan", tmp_path / "second.plan"
    run_gpuform("-C", d, "plan", "-out", str(first), check=True)
    run_gpuform("-C", d, "plan", "-out", str(second), check=True)
    assert run_gpuform("-C", d, "apply", str(first), check=True).returncode == 0
    stale = run_gpuform("-C", d, "apply", str(second))
    assert stale.returncode == 1 and "saved plan is stale" in stale.stderr and "serial" in stale.stderr
    (workdir / "gpuform.yaml").write_text((workdir / "gpuform.yaml").read_text().replace("max_workers: 2",
                                                                                         "max_workers: 3"))
    run_gpuform("-C", d, "plan", "-out", str(first), check=True)
    (workdir / "gpuform.yaml").write_text((workdir / "gpuform.yaml").read_text().replace("max_workers: 3",
                                                                                         "max_workers: 4"))
    changed = run_gpuform("-C", d, "apply", str(first))
    assert changed.returncode == 1 and "configuration" in changed.stderr and "changed since" in changed.stderr


def test_a_failure_skips_only_its_dependents_and_is_reported_once(workdir: Path) -> None:
    port = free_port()
    endpoint = """
        volumes:
          broken: {pool: here, path: /proc/gpuform-cannot-write-here, source: ./model}
        endpoints:
          echo:
            pool: here
            worker: {template: echo}
          tiny:
            pool: here
            worker: {template: echo}
            model: {name: tiny, volume: broken}
        """
    (workdir / "model").mkdir()
    (workdir / "model" / "f").write_text("x")
    write_config(workdir, local_config(port, "", endpoint))
    result = run_gpuform("-C", str(workdir), "apply", "--auto-approve")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("Error: volume.broken:") == 1 and "cannot create /proc/gpuform-cannot-write-here" in result.stderr
    assert "Skipped: endpoint.tiny" in result.stderr
    state = _state(workdir)
    assert {r["address"] for r in state["resources"]} == {"pool.here", "gateway.main", "endpoint.echo"}


def test_ctrl_c_finishes_in_flight_work_and_saves_state(workdir: Path) -> None:
    import subprocess
    import sys

    port = free_port()
    (workdir / "model").mkdir()
    for i in range(40):
        (workdir / "model" / f"shard{i}.bin").write_bytes(os.urandom(2_000_000))
    volpath = workdir.parent / "staged"
    endpoint = """
        volumes:
          weights: {pool: here, path: VOLPATH, source: ./model}
        endpoints:
          echo: {pool: here, worker: {template: echo}, model: {name: m, volume: weights}}
        """.replace("VOLPATH", str(volpath))
    write_config(workdir, local_config(port, "", endpoint))
    proc = subprocess.Popen([sys.executable, "-m", "gpuform", "-C", str(workdir), "apply", "--auto-approve"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (volpath / "shard0.bin").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Interrupt received" in err and "Traceback" not in err
    state = _state(workdir)
    addresses = {r["address"] for r in state["resources"]}
    assert "endpoint.echo" not in addresses  # it waits for the volume; nothing new started after Ctrl-C
    again = run_gpuform("-C", str(workdir), "apply", "--auto-approve", check=True)
    assert "Apply complete!" in again.stdout
    assert run_gpuform("-C", str(workdir), "plan", "--detailed-exitcode").returncode == 0


def test_a_gateway_applied_with_queue_sqlite_plans_no_change_after_the_upgrade_to_store(workdir: Path) -> None:
    """State recorded before `store:` existed (``queue: sqlite``, no ``store``/``replicas``) against a live gateway
    and a configuration that still says ``queue: sqlite``: a located deprecation warning, and no change."""
    from gpuform.state.store import LocalStateStore

    port = free_port()
    write_config(workdir, local_config(port).replace("    api_keys: {test: test-key}\n",
                                                     "    api_keys: {test: test-key}\n    queue: sqlite\n"))
    run_gpuform("-C", str(workdir), "apply", "--auto-approve", check=True)
    store = LocalStateStore(workdir / "state")
    state = store.read()
    attrs = state.resources["gateway.main"].attributes
    del attrs["store"], attrs["replicas"]
    attrs["queue"] = "sqlite"
    store.write(state)
    planned = run_gpuform("-C", str(workdir), "plan", "-detailed-exitcode")
    assert planned.returncode == 0 and "No changes" in planned.stdout, planned.stdout + planned.stderr
    assert "gpuform.yaml:" in planned.stdout + planned.stderr and "`queue: sqlite` is deprecated" in (
        planned.stdout + planned.stderr)
