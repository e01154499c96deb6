"""Volumes on the real test hosts h1/h2 (baremetal over SSH): host-to-host staging sends each file from this
machine once and removes its key after; the key is restricted and host keys are still verified; an
interrupted staging resumes; a volume already on the hosts is checked on each and never touched."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuform.errors import SSHError
from gpuform.providers.common.hosts import SSHHosts
from gpuform.providers.common.peers import PeerLink
from tests.conftest import destroy_after_test, run_gpuform, write_config
from tests.contract.hosts import load_hosts, ssh

pytestmark = [pytest.mark.integration, pytest.mark.ssh]
H1, H2 = "10.77.0.11", "10.77.0.12"


def _pool() -> str:
    info = load_hosts()
    key, known = info["ssh"]["identity_file"], info["ssh"]["known_hosts"]
    return (f"pools:\n  p:\n    provider: baremetal\n    known_hosts: {known}\n    hosts:\n"
            f"      - {{address: {H1}, identity_file: {key}, name: h1}}\n"
            f"      - {{address: {H2}, identity_file: {key}, name: h2}}\n")


@pytest.fixture
def remote_dir() -> Iterator[str]:
    path = f"/srv/gpuform-vol-{uuid.uuid4().hex[:8]}"
    yield path
    for host in (H1, H2):
        ssh(host, "rm", "-rf", "--", path, check=False)


def _computed(workdir: Path, address: str) -> dict:  # type: ignore[type-arg]
    state = json.loads((workdir / "state" / "gpuform.state.json").read_text())
    return next(r for r in state["resources"] if r["address"] == address)["computed"]


def _keys_left(host: str) -> str:
    return ssh(host, "sh", "-c", "grep gpuform-volume ~/.ssh/authorized_keys; ls -d /tmp/gpuform-volume-* 2>/dev/null",
               check=False).stdout


def _sums(host: str, path: str) -> str:
    return ssh(host, "sh", "-c", f"cd {path} && find . -type f ! -name .gpuform-manifest.json | sort | "
                                 "xargs sha256sum").stdout


@pytest.fixture
def nfs_dir() -> Iterator[str]:
    """A directory already on both hosts (as an NFS mount or a pre-pulled copy would be)."""
    path = f"/srv/gpuform-nfs-{uuid.uuid4().hex[:8]}"
    for host in (H1, H2):
        ssh(host, "sh", "-c", f"mkdir -p {path}/tok && echo weights > {path}/w.bin && echo '{{}}' > {path}/tok/v.json")
    yield path
    for host in (H1, H2):
        ssh(host, "rm", "-rf", "--", path, check=False)


def test_staging_host_to_host_resumes_and_a_volume_already_there_is_only_checked(tmp_path: Path, remote_dir: str,
                                                                                 nfs_dir: str) -> None:
    """Volume w is staged: each file leaves this machine once, the hosts copy it to each other, the key is
    removed after, a killed staging resumes. Volume nfs is already on both hosts: checked on each (a file
    removed on h2 is reported there), never written, and kept by destroy."""
    workdir = tmp_path / "cfg"
    (workdir / "model" / "tok").mkdir(parents=True)
    for i in range(6):
        (workdir / "model" / f"shard{i}.bin").write_bytes(os.urandom(150_000))
    (workdir / "model" / "tok" / "vocab.json").write_text('{"a": 1}')
    (workdir / "sums.txt").write_text(ssh(H1, "sh", "-c", f"cd {nfs_dir} && sha256sum w.bin tok/v.json").stdout)
    write_config(workdir, _pool() + f"volumes:\n  w: {{pool: p, path: {remote_dir}, source: ./model}}\n"
                                    f"  nfs: {{pool: p, path: {nfs_dir}, manifest: sums.txt}}\n")
    nfs_before = _sums(H1, nfs_dir) + _sums(H2, nfs_dir)
    try:
        run_gpuform("-C", str(workdir), "apply", "--auto-approve", check=True, timeout=300)
        hosts = _computed(workdir, "volume.w")["hosts"]
        total = sum(p.stat().st_size for p in (workdir / "model").rglob("*") if p.is_file())
        assert sum(h["bytes_from_this_machine"] for h in hosts.values()) == total, hosts
        assert all(h["copied"] == 7 and h["from_hosts"] == 7 - h["from_this_machine"] for h in hosts.values()), hosts
        assert {h["from_hosts"] for h in hosts.values()} != {0}, "the hosts served each other"
        expected = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.relative_to(workdir / 'model')}\n"
                           for p in sorted((workdir / "model").rglob("*")) if p.is_file())
        assert _sums(H1, remote_dir) == _sums(H2, remote_dir) == expected
        assert _keys_left(H1) == _keys_left(H2) == "", "the staging key is removed from both hosts"

        # killed once the first batch is verified on a host: the retry copies only what is missing
        for i in range(6):
            (workdir / "model" / f"more{i}.bin").write_bytes(os.urandom(150_000))
        killed = run_gpuform("-C", str(workdir), "apply", "--auto-approve",
                             env={"GPUFORM_FAULT_KILL_AT": "volume.placed:1"}, timeout=300)
        assert killed.returncode == -9
        run_gpuform("-C", str(workdir), "apply", "--auto-approve", check=True, timeout=300)
        hosts = _computed(workdir, "volume.w")["hosts"]
        assert 0 < sum(h["copied"] for h in hosts.values()) < 12, f"only what was missing is copied: {hosts}"
        assert sum(h["bytes_from_this_machine"] for h in hosts.values()) <= 6 * 150_000
        assert _sums(H1, remote_dir) == _sums(H2, remote_dir) and _sums(H1, remote_dir).count("\n") == 13
        assert _keys_left(H1) == _keys_left(H2) == "", "the retry also removed what the killed staging left"
        assert run_gpuform("-C", str(workdir), "plan", "--detailed-exitcode").returncode == 0

        ssh(H2, "rm", f"{nfs_dir}/tok/v.json")
        plan = run_gpuform("-C", str(workdir), "plan", "--detailed-exitcode")
        assert plan.returncode == 2 and "differs on h2: 1 file(s) of the manifest missing (tok/v.json)" in plan.stdout
        ssh(H2, "sh", "-c", f"echo '{{}}' > {nfs_dir}/tok/v.json")
    finally:
        destroy_after_test(workdir)
    assert ssh(H1, "test", "-e", remote_dir, check=False).returncode != 0, "destroy removes what it staged"
    assert _sums(H1, nfs_dir) + _sums(H2, nfs_dir) == nfs_before, "destroy leaves what gpuform did not put there"
    assert ssh(H1, "test", "-e", f"{nfs_dir}/.gpuform-manifest.json", check=False).returncode != 0


def test_the_staging_key_is_restricted_and_host_keys_are_still_verified(remote_dir: str) -> None:
    info = load_hosts()
    from gpuform.config.schema import SSHHost

    specs = [SSHHost(address=a, identity_file=info["ssh"]["identity_file"], name=n) for n, a in (("h1", H1), ("h2", H2))]
    hosts = SSHHosts(specs, info["ssh"]["known_hosts"], False, 10.0)
    conns = {h.name: hosts.conn(h) for h in hosts.hosts}
    for host in (H1, H2):
        ssh(host, "mkdir", "-p", remote_dir)
    ssh(H1, "sh", "-c", f"echo weights > {remote_dir}/w.bin")
    try:
        with PeerLink(conns, remote_dir, f"test:{remote_dir}") as link:
            line = ssh(H2, "grep", link.marker, "/root/.ssh/authorized_keys").stdout
            assert line.startswith(f'restrict,from="{H1}",expiry-time="') and f'receive {remote_dir}"' in line
            link.send("h1", "h2", "w.bin")
            assert ssh(H2, "cat", f"{remote_dir}/w.bin.gpuform-partial").stdout == "weights\n"

            key = f"{link.dirs['h1']}/key"
            base = ["ssh", "-F", "/dev/null", "-i", key, "-o", f"UserKnownHostsFile={link.dirs['h1']}/known_hosts",
                    "-o", "BatchMode=yes", f"root@{H2}"]
            escape = ssh(H1, *base, "../../tmp/escaped", check=False)
            assert escape.returncode == 2 and "refused path" in escape.stderr
            ssh(H1, *base, "touch /tmp/pwned; id", check=False)
            assert ssh(H2, "test", "-e", "/tmp/pwned", check=False).returncode != 0, "no shell: only a file write"

            h1_key = ssh(H1, "cat", f"{link.dirs['h1']}/known_hosts").stdout.splitlines()[0].split(" ", 1)[1]
            ssh(H1, "sh", "-c", f"echo '{H2} {h1_key}' > {link.dirs['h1']}/known_hosts")  # h1's key claimed for h2
            with pytest.raises(SSHError) as refused:
                link.send("h1", "h2", "w.bin")
            assert "Host key verification failed" in refused.value.message
        assert _keys_left(H1) == _keys_left(H2) == ""
    finally:
        hosts.close()
