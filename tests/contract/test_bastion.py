"""Hosts behind a bastion, for real: bj1 (.ci/setup/bastion.sh) is reachable only through h1. Pools reach it
with ProxyJump from an ssh_config, every hop's host key checked; a wrong or unknown jump host key refuses.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from gpuform.config.schema import SSHHost
from gpuform.errors import SSHError
from gpuform.providers.common.hosts import SSHHosts
from tests.conftest import free_port, run_gpuform, write_config
from tests.contract.hosts import load_hosts, ssh

pytestmark = [pytest.mark.integration, pytest.mark.ssh]
BASTION_JSON = Path("/var/lib/gpuform-test/bastion.json")


@pytest.fixture
def bj1() -> dict:  # type: ignore[type-arg]
    load_hosts()
    if not BASTION_JSON.exists():
        if os.environ.get("CI"):
            raise AssertionError("bj1 is missing: .ci/setup/all.sh must run before the tests in CI")
        pytest.skip("bj1 not running (run .ci/setup/bastion.sh up)")
    info: dict = json.loads(BASTION_JSON.read_text())  # type: ignore[type-arg]
    return info


def _known(tmp_path: Path, *, drop: str = "", swap: tuple[str, str] | None = None) -> Path:
    """The test hosts' keys plus bj1's; ``drop`` leaves an address out, ``swap`` claims one host's key for
    another address."""
    info = load_hosts()
    lines = (Path(info["ssh"]["known_hosts"]).read_text() + Path(json.loads(BASTION_JSON.read_text())
                                                                 ["known_hosts"]).read_text()).splitlines()
    lines = [ln for ln in lines if ln.split(" ", 1)[0] != drop]
    if swap is not None:
        victim, donor = swap
        key = next(ln for ln in lines if ln.startswith(donor + " ")).split(" ", 1)[1]
        lines = [f"{victim} {key}" if ln.startswith(victim + " ") else ln for ln in lines]
    path = tmp_path / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    return path


def _ssh_config(tmp_path: Path, jump: str = "root@10.77.0.11") -> Path:
    key = load_hosts()["ssh"]["identity_file"]
    path = tmp_path / "ssh_config"
    path.write_text(f"Host bj1\n  HostName 10.78.0.2\n  ProxyJump {jump}\nHost *\n  IdentityFile {key}\n")
    return path


def _pool(known: Path, config: Path | None, timeout: float = 5.0) -> SSHHosts:
    return SSHHosts([SSHHost(address="bj1")], str(known), False, timeout, ssh_config=config, where="pool.inner")


def test_bj1_is_reached_through_h1_and_only_through_it(bj1: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    known = _known(tmp_path)
    pool = _pool(known, _ssh_config(tmp_path))
    try:
        assert pool.conn("bj1").run(["hostname"]).text.strip() == "gpuform-bj1"
        assert pool.hosts[0].target.route == "root@10.78.0.2:22 via root@10.77.0.11:22"
    finally:
        pool.close()
    direct = SSHHosts([SSHHost(address="10.78.0.2", name="bj1",
                               identity_file=load_hosts()["ssh"]["identity_file"])], str(known), False, 3.0,
                      ssh_config=None)
    try:
        [seen] = direct.inventory()
        assert not seen.reachable and "cannot reach root@10.78.0.2:22" in seen.reason
    finally:
        direct.close()


def test_two_hops_each_with_its_host_key_checked(bj1: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    """h2 -> h1 -> bj1: it connects with the right keys; h2's key forged refuses at the first hop."""
    config = _ssh_config(tmp_path, jump="root@10.77.0.12,root@10.77.0.11")
    pool = _pool(_known(tmp_path), config)
    try:
        assert pool.hosts[0].target.route == "root@10.78.0.2:22 via root@10.77.0.11:22 via root@10.77.0.12:22"
        assert pool.conn("bj1").run(["hostname"]).text.strip() == "gpuform-bj1"
    finally:
        pool.close()
    forged = _pool(_known(tmp_path, swap=("10.77.0.12", "10.77.0.11")), config)
    with pytest.raises(SSHError, match=r"host key of root@10\.77\.0\.12:22 does not match"):
        forged.conn("bj1")
    forged.close()


@pytest.mark.parametrize(("case", "expected"), [
    ("jump key forged", r"^jump host for root@10\.78\.0\.2:22: host key of root@10\.77\.0\.11:22 does not match "
                        r".*man-in-the-middle"),
    ("jump key unknown", r"^jump host for root@10\.78\.0\.2:22: root@10\.77\.0\.11:22 is not in .*refusing an "
                         r"unknown host key"),
    ("target key forged", r"^host key of root@10\.78\.0\.2:22 via root@10\.77\.0\.11:22 does not match"),
    ("target key unknown", r"^root@10\.78\.0\.2:22 via root@10\.77\.0\.11:22 is not in .*refusing"),
])
def test_a_wrong_or_unknown_key_at_any_hop_refuses(bj1: dict, tmp_path: Path, case: str,  # type: ignore[type-arg]
                                                    expected: str) -> None:
    known = {"jump key forged": lambda: _known(tmp_path, swap=("10.77.0.11", "10.77.0.12")),
             "jump key unknown": lambda: _known(tmp_path, drop="10.77.0.11"),
             "target key forged": lambda: _known(tmp_path, swap=("10.78.0.2", "10.77.0.11")),
             "target key unknown": lambda: _known(tmp_path, drop="10.78.0.2")}[case]()
    pool = _pool(known, _ssh_config(tmp_path))
    with pytest.raises(SSHError, match=expected) as info:
        pool.conn("bj1")
    pool.close()
    assert not info.value.unreachable, "a refused key is an error, never an unreachable host to skip"
    assert info.value.hint
    if case == "target key unknown":  # the key is read where the host is reachable: through its jump host
        assert "ssh -p 22 root@10.77.0.11 ssh-keyscan -p 22 10.78.0.2 >> " in info.value.hint


def _config(known: Path, port: int) -> str:
    """The gateway on h1 (pool edge); bj1, behind h1, as a baremetal pool and as a docker pool."""
    info = load_hosts()
    key = info["ssh"]["identity_file"]
    return f"""
pools:
  inner:
    provider: baremetal
    ssh_config: ./ssh_config
    known_hosts: {known}
    connect_timeout: 5s
    price_per_gpu_second: {{cpu: 0.001}}
    hosts: [{{address: bj1}}]
  inner-docker:
    provider: docker
    ssh_config: ./ssh_config
    known_hosts: {known}
    data_dir: /var/lib/gpuform-docker
    base_image: {info["base_image"]}
    price_per_gpu_second: {{cpu: 0.001}}
    hosts: [{{address: bj1}}]
  edge:
    provider: baremetal
    known_hosts: {known}
    price_per_gpu_second: {{cpu: 0.001}}
    hosts: [{{address: 10.77.0.11, identity_file: {key}, name: h1}}]
gateway:
  main:
    pool: edge
    listen: 0.0.0.0:{port}
    advertise_url: http://10.77.0.11:{port}
    api_keys: {{test: test-key}}
    timings: {{lease_timeout: 5s, ping_interval: 1s, reconcile_interval: 0.3s, take_timeout: 2s}}
endpoints:
  echo:
    pool: inner
    worker: {{template: echo}}
    scaling: {{min_workers: 0, max_workers: 1, idle_timeout: 30s}}
  echo-docker:
    pool: inner-docker
    worker: {{template: echo}}
    scaling: {{min_workers: 0, max_workers: 1, idle_timeout: 30s}}
"""


def test_apply_refuses_a_pool_whose_jump_host_key_is_unknown(bj1: dict, workdir: Path) -> None:  # type: ignore[type-arg]
    _ssh_config(workdir)
    text = _config(_known(workdir, drop="10.77.0.11"), free_port())
    write_config(workdir, text[:text.index("  inner-docker:")])  # the baremetal pool alone
    applied = run_gpuform("-C", str(workdir), "apply", "--auto-approve", timeout=120)
    out = applied.stdout + applied.stderr
    assert applied.returncode != 0, out
    assert "pool.inner" in out and "jump host for root@10.78.0.2:22: root@10.77.0.11:22 is not in" in out, out
    assert "ssh-keyscan" in out, "the fix is shown"
    assert run_gpuform("-C", str(workdir), "state", "list").stdout.strip() in ("", "(empty)"), "nothing created"


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first docker test of a source tree builds the runtime image (minutes on a loaded machine)
def test_baremetal_and_docker_pools_behind_a_bastion_run_jobs(bj1: dict, workdir: Path) -> None:  # type: ignore[type-arg]
    """The gateway on h1 starts an echo worker on bj1 through h1 for each pool (with the resolved ssh_config
    it was given: its pools' hosts, the jump host, the keys); each job completes there."""
    port = free_port()
    _ssh_config(workdir)
    write_config(workdir, _config(_known(workdir), port))
    applied = run_gpuform("-C", str(workdir), "apply", "--auto-approve", timeout=900)
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-3000:]
    admin = (workdir / "state" / "secrets" / "gateway.main.admin_key").read_text()
    for endpoint in ("echo", "echo-docker"):
        with httpx.Client(base_url=f"http://10.77.0.11:{port}", headers={"Authorization": "Bearer test-key"},
                          timeout=180) as http:
            done = http.post(f"/v2/{endpoint}/runsync", json={"input": {"hello": endpoint}}).json()
        assert done["status"] == "COMPLETED" and done["output"] == {"echo": {"hello": endpoint}}, done
        with httpx.Client(base_url=f"http://10.77.0.11:{port}", headers={"Authorization": f"Bearer {admin}"},
                          timeout=30) as http:
            workers = http.get(f"/admin/endpoints/{endpoint}/status").json()["worker_list"]
        assert [w["host"] for w in workers if w["id"] == done["workerId"]] == ["bj1"], workers
    lineage = json.loads((workdir / "state" / "gpuform.state.json").read_text())["lineage"][:8]
    given = ssh("10.77.0.11", "cat", f"/var/lib/gpuform/lineage-{lineage}/gateways/main/creds/inner.ssh_config").stdout
    assert "Host bj1\n  HostName 10.78.0.2\n" in given and "ProxyJump gpuform-jump-" in given, given
    assert f"IdentityFile /var/lib/gpuform/lineage-{lineage}/gateways/main/creds/inner.ssh-" in given, given
    containers = subprocess.run(["ssh", "-F", bj1["ssh_config"], "bj1", "docker", "ps", "--format", "{{.Names}}"],
                                capture_output=True, text=True, check=True, timeout=60).stdout
    assert "gpuform-w-echo-docker" in containers or "gpuform-w-" in containers, containers
