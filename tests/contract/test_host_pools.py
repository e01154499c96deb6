"""Docker and bare-metal pools on real hosts: images and containers, warm restarts and eviction, crash logs,
cordons, and faults (a host going down during apply, dockerd restarting under workers, apply killed)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import destroy_after_test, free_port, run_gpuform, write_config
from tests.contract.hosts import Setup, load_hosts, ssh
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow]


def _setup(provider: str, tmp_path: Path) -> Setup:
    load_hosts()
    workdir = tmp_path / "cfg"
    (workdir / "model").mkdir(parents=True)
    (workdir / "model" / "weights.bin").write_bytes(os.urandom(50_000))
    return Setup(provider, workdir, free_port(), f"/srv/gpuform-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def cleanup():  # type: ignore[no-untyped-def]
    dirs: list[Path] = []
    yield dirs
    for d in dirs:
        destroy_after_test(d)


def _apply(s: Setup, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    write_config(s.workdir, text)
    result = run_gpuform("-C", str(s.workdir), "apply", "--auto-approve", *args, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _status(s: Setup, endpoint: str = "echo") -> dict:  # type: ignore[type-arg]
    key = (s.workdir / "state" / "secrets" / "gateway.main.admin_key").read_text()
    with httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        result: dict = http.get(f"/admin/endpoints/{endpoint}/status").json()  # type: ignore[type-arg]
        return result


def _started_at(s: Setup) -> float:
    key = (s.workdir / "state" / "secrets" / "gateway.main.admin_key").read_text()
    with httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        return float(http.get("/admin/info").json()["started_at"])


def _live(s: Setup) -> list[dict]:  # type: ignore[type-arg]
    return [w for w in _status(s)["worker_list"] if w["state"] in ("idle", "running")]


def _run(s: Setup, payload: object, timeout: float = 120) -> dict:  # type: ignore[type-arg]
    with httpx.Client(base_url=s.url, headers={"Authorization": "Bearer test-key"}, timeout=timeout) as http:
        result: dict = http.post("/v2/echo/runsync", json={"input": payload}).json()  # type: ignore[type-arg]
        return result


def _docker(host: str, *argv: str) -> str:
    return ssh(host, "docker", *argv).stdout


def test_docker_images_containers_warm_restarts_and_eviction(tmp_path: Path, cleanup: list[Path]) -> None:
    s = _setup("docker", tmp_path)
    cleanup.append(s.workdir)
    # no eviction while the kept container is checked (the default, 10% free, is not met on every machine)
    _apply(s, s.config(min_workers=0, pool_extra="    min_free_disk_percent: 0\n").replace(
        "idle_timeout: 30s", "idle_timeout: 2s"))
    lineage = json.loads((s.workdir / "state" / "gpuform.state.json").read_text())["lineage"]
    first = _run(s, {"n": 1})
    assert first["status"] == "COMPLETED"
    host = next(w["host"] for w in _status(s)["worker_list"] if w["id"] == first["workerId"])
    address = "10.77.0.11" if host == "h1" else "10.77.0.12"
    inspect = json.loads(_docker(address, "inspect", f"gpuform-w-{first['workerId']}"))[0]
    labels = inspect["Config"]["Labels"]
    assert labels["gpuform.lineage"] == lineage and labels["gpuform.address"] == "endpoint.echo"
    assert inspect["HostConfig"]["NetworkMode"] == "host" and inspect["HostConfig"]["RestartPolicy"]["Name"] == "no"
    mounts = {m["Destination"]: m for m in inspect["Mounts"]}
    assert mounts["/runpod-volume"]["Source"] == s.volume_path and mounts["/runpod-volume"]["RW"] is False
    container_id = inspect["Id"]
    image = inspect["Image"]  # this deployment's runtime image: the same (by id) on every host
    for other in ("10.77.0.11", "10.77.0.12"):
        assert _docker(other, "image", "inspect", "--format", "{{.Id}} {{index .Config.Labels \"gpuform.runtime\"}}",
                       image).split() == [image, "1"], other

    wait_for(lambda: not _live(s), 60, what="scale to zero")
    wait_for(lambda: "gpuform-warm-" in _docker(address, "ps", "-a", "--filter", f"label=gpuform.lineage={lineage}",
                                                "--format", "{{.Names}}"), 30,
             what="the stopped worker's container to be kept")
    second = _run(s, {"n": 2})
    assert second["status"] == "COMPLETED"
    reused = json.loads(_docker(address, "inspect", f"gpuform-w-{second['workerId']}"))[0]["Id"]
    assert reused == container_id, "the kept container was restarted for the new worker"
    assert second["delayTime"] < first["delayTime"], (second["delayTime"], first["delayTime"])

    # evict kept containers when free disk is below the threshold (95% is never met here); the gateway takes
    # its pool's new settings by hot reload (the provider rewrites the bind-mounted configuration), no restart
    started = _started_at(s)
    _apply(s, s.config(min_workers=0, pool_extra="    min_free_disk_percent: 90\n").replace(
        "idle_timeout: 30s", "idle_timeout: 2s"))
    assert _started_at(s) == started, "a pool change restarted the gateway instead of reloading it"
    wait_for(lambda: not _live(s), 60, what="scale to zero again")
    wait_for(lambda: "gpuform-warm-" not in _docker(address, "ps", "-a", "--filter", f"label=gpuform.lineage={lineage}",
                                                    "--format", "{{.Names}}"), 90,
             what="kept containers to be evicted when the disk runs low")


def test_baremetal_crash_log_survives_and_cordon_drains(tmp_path: Path, cleanup: list[Path]) -> None:
    s = _setup("baremetal", tmp_path)
    cleanup.append(s.workdir)
    crash = """  crash:
    pool: p
    worker: {command: [python, -c, "print('model shard 3 is corrupt', flush=True); raise SystemExit(3)"]}
    scaling: {min_workers: 1, max_workers: 1}
"""
    _apply(s, s.config(min_workers=2, endpoint_extra=crash), "--no-wait")  # "crash" never becomes ready
    health = wait_for(lambda: (h := _status(s, "crash"))["status"] == "UNHEALTHY" and h, 60)
    assert "model shard 3 is corrupt" in health["condition"]["log_tail"]
    lineage = json.loads((s.workdir / "state" / "gpuform.state.json").read_text())["lineage"][:8]
    logs = ssh("10.77.0.11", "sh", "-c", f"cat /var/lib/gpuform/lineage-{lineage}/logs/crash-*.log 2>/dev/null; "
               f"true").stdout + ssh("10.77.0.12", "sh", "-c", f"cat /var/lib/gpuform/lineage-{lineage}/logs/"
                                                               "crash-*.log 2>/dev/null; true").stdout
    assert "model shard 3 is corrupt" in logs, "the crashed worker's log is kept after it is gone"

    workers = wait_for(lambda: len(w := _live(s)) == 2 and w, 60, what="two echo workers")
    assert sorted(w["host"] for w in workers) == ["h1", "h2"]
    cordoned = s.config(min_workers=2, endpoint_extra=crash).replace(
        "name: h2}", "name: h2, cordon: true}")
    started = _started_at(s)
    _apply(s, cordoned, "--no-wait")
    wait_for(lambda: sorted(w["host"] for w in _live(s)) == ["h1", "h1"], 90,
             what="the worker on the cordoned host to drain and be replaced on h1")
    assert _started_at(s) == started, "the cordon reached the gateway by a restart, not a hot reload"


def test_a_host_down_during_apply_then_back_converges(tmp_path: Path, cleanup: list[Path]) -> None:
    s = _setup("baremetal", tmp_path)
    cleanup.append(s.workdir)
    text = s.config(min_workers=1, pool_extra="    connect_timeout: 3s\n")
    subprocess.run(["ip", "link", "set", "gpf-h2", "down"], check=True)
    try:
        result = _apply(s, text)
        assert "h2 skipped" in result.stderr and "cannot reach root@10.77.0.12:22" in result.stderr
        assert s.staged("10.77.0.11", "weights.bin")
        assert _run(s, {"while": "h2 is down"})["status"] == "COMPLETED"
    finally:
        subprocess.run(["ip", "link", "set", "gpf-h2", "up"], check=True)
    wait_for(lambda: ssh("10.77.0.12", "true", check=False).returncode == 0, 30)
    plan = run_gpuform("-C", str(s.workdir), "plan", "--detailed-exitcode")
    assert plan.returncode == 2 and "bytes to copy to h2" in plan.stdout
    _apply(s, text)
    assert s.staged("10.77.0.12", "weights.bin")
    assert run_gpuform("-C", str(s.workdir), "plan", "--detailed-exitcode").returncode == 0


def _restart_dockerd(address: str, name: str) -> None:
    ssh(address, "sh", "-c", "kill $(cat /var/run/docker.pid); while [ -e /var/run/docker.pid ]; do sleep 0.2; done")
    ssh(address, "sh", "-c", f"setsid dockerd --storage-driver=vfs --iptables=false --ip-forward=false --bridge=none "
                             f"--host=unix:///var/run/docker.sock --pidfile=/var/run/docker.pid "
                             f"--data-root=/var/lib/docker --exec-root=/var/run/docker "
                             f"--config-file=/etc/docker/daemon.json --label=gpuform-test.host={name} "
                             f"</dev/null >>/var/log/gpuform-test/{name}-dockerd.log 2>&1 &")
    wait_for(lambda: ssh(address, "docker", "info", check=False).returncode == 0, 60, what="dockerd back")


def test_docker_faults_dockerd_restart_and_killed_apply(tmp_path: Path, cleanup: list[Path]) -> None:
    s = _setup("docker", tmp_path)
    cleanup.append(s.workdir)
    trace = tmp_path / "trace"
    write_config(s.workdir, s.config(min_workers=2))
    traced = run_gpuform("-C", str(s.workdir), "apply", "--auto-approve", env={"GPUFORM_FAULT_TRACE": str(trace)},
                         timeout=900)
    assert traced.returncode == 0, traced.stderr[-2000:]
    points = trace.read_text().splitlines()
    kill_at = next(int(line.split()[0]) for line in points if line.endswith("after-provider-call gateway.main"))
    lineage = json.loads((s.workdir / "state" / "gpuform.state.json").read_text())["lineage"]

    workers = wait_for(lambda: len(w := _live(s)) == 2 and w, 120, what="two workers")
    on_h2 = [w["id"] for w in workers if w["host"] == "h2"]
    assert on_h2, workers
    _restart_dockerd("10.77.0.12", "h2")
    replaced = wait_for(lambda: len(w := _live(s)) == 2 and not {x["id"] for x in w} & set(on_h2) and w, 120,
                        what="the gateway to replace the workers dockerd took down")
    assert len(replaced) == 2

    run_gpuform("-C", str(s.workdir), "destroy", "--auto-approve", check=True, timeout=600)
    killed = run_gpuform("-C", str(s.workdir), "apply", "--auto-approve",
                         env={"GPUFORM_FAULT_KILL_AT": str(kill_at)}, timeout=900)
    assert killed.returncode == -9
    again = run_gpuform("-C", str(s.workdir), "apply", "--auto-approve", timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    lineage = json.loads((s.workdir / "state" / "gpuform.state.json").read_text())["lineage"]
    gateways = _docker("10.77.0.11", "ps", "-aq", "--filter", f"label=gpuform.lineage={lineage}",
                       "--filter", "label=gpuform.address=gateway.main").split()
    assert len(gateways) == 1, "the labelled gateway container was adopted, not duplicated"
    assert run_gpuform("-C", str(s.workdir), "plan", "--detailed-exitcode").returncode == 0


def test_baremetal_gateway_under_the_old_unit_name_is_adopted_then_migrated(tmp_path: Path, cleanup: list[Path]) -> None:
    """A gateway an earlier gpuform started as ``gpuform-gateway-NAME`` (before units were keyed by lineage)
    is found by refresh, and the next restart replaces it with the keyed unit instead of running a second one."""
    from tests.integration.teamwork import pool_and_gateway

    workdir = tmp_path / "cfg"
    workdir.mkdir()
    cleanup.append(workdir)
    port = free_port()
    write_config(workdir, pool_and_gateway("baremetal", str(port)))
    run_gpuform("-C", str(workdir), "apply", "--auto-approve", check=True, timeout=600)
    short = json.loads((workdir / "state" / "gpuform.state.json").read_text())["lineage"][:8]
    records = f"/var/lib/gpuform/lineage-{short}/workers"
    ssh("10.77.0.11", "python3", "-c", "import json, pathlib, sys; d = pathlib.Path(sys.argv[1]); "
        "r = json.loads((d / sys.argv[2]).read_text()); r['id'] = 'gpuform-gateway-main'; "
        "(d / 'gpuform-gateway-main.json').write_text(json.dumps(r)); (d / sys.argv[2]).unlink()",
        records, f"gpuform-gateway-{short}-main.json")
    assert run_gpuform("-C", str(workdir), "plan", "--detailed-exitcode").returncode == 0, "the old unit is found"

    write_config(workdir, pool_and_gateway("baremetal", str(port), api_keys="{test: test-key, ci: ci-key}"))
    run_gpuform("-C", str(workdir), "apply", "--auto-approve", check=True, timeout=600)
    listed = ssh("10.77.0.11", "ls", records).stdout.split()
    assert listed == [f"gpuform-gateway-{short}-main.json"], listed
    supervisors = ssh("10.77.0.11", "sh", "-c", f"pgrep -fc '[g]puform.util.supervise --pidfile "
                                                f"/var/lib/gpuform/lineage-{short}/' || true").stdout.strip()
    assert supervisors == "1", "one gateway: the old one was stopped when the keyed one started"
    assert run_gpuform("-C", str(workdir), "plan", "--detailed-exitcode").returncode == 0

