"""SSH done right, against the real test hosts: verified host keys, trust on first use, unreachable hosts,
GPU inventory from nvidia-smi, and the warnings plan derives from it."""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paramiko
import pytest

from gpuform.config.schema import SSHHost
from gpuform.errors import SSHError
from gpuform.providers.common.hosts import SSHHosts
from gpuform.providers.common.ssh import Connection, Target
from tests.conftest import free_port, run_gpuform, write_config
from tests.contract.hosts import Setup, load_hosts
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def _target(**kw: object) -> Target:
    info = load_hosts()
    base = {"address": "10.77.0.11", "identity_file": info["ssh"]["identity_file"],
            "known_hosts": info["ssh"]["known_hosts"], "connect_timeout": 5.0}
    return Target(**{**base, **kw})  # type: ignore[arg-type]


def test_a_wrong_host_key_is_refused(tmp_path: Path) -> None:
    info = load_hosts()
    h2_key = next(line for line in Path(info["ssh"]["known_hosts"]).read_text().splitlines()
                  if line.startswith("10.77.0.12 "))
    forged = tmp_path / "known_hosts"
    forged.write_text(h2_key.replace("10.77.0.12", "10.77.0.11", 1) + "\n")  # h2's key claimed for h1
    with pytest.raises(SSHError) as info_:
        Connection(_target(known_hosts=str(forged)))
    assert "does not match" in info_.value.message and "man-in-the-middle" in info_.value.message
    assert "ssh-keygen" in info_.value.hint


def test_unknown_hosts_are_refused_unless_trusted_on_first_use(tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    with pytest.raises(SSHError, match="refusing an unknown host key"):
        Connection(_target(known_hosts=str(empty)))
    conn = Connection(_target(known_hosts=str(empty), trust_on_first_use=True))
    assert conn.run(["hostname"]).text.strip() == "gpuform-h1"
    conn.close()
    recorded = empty.read_text()
    assert recorded.startswith("10.77.0.11 ssh-ed25519 ")
    Connection(_target(known_hosts=str(empty))).close()  # now known: no trust needed


def test_commands_are_argv_and_failures_carry_output() -> None:
    conn = Connection(_target())
    assert conn.run(["printf", "%s|", "a b", "$HOME", "; rm -rf /"]).text == "a b|$HOME|; rm -rf /|"
    with pytest.raises(SSHError) as info:
        conn.run(["ls", "/no/such/dir"])
    assert "exited 2" in info.value.message and "No such file" in info.value.message
    conn.close()


def test_a_command_without_input_reads_dev_null_and_its_channel_gets_no_eof(monkeypatch: pytest.MonkeyPatch) -> None:
    """An EOF sent just as a command exits can reach sshd after the channel is gone, and sshd then drops the
    whole connection (paramiko#1705): a command given no input reads /dev/null instead, so none is sent."""
    eofs: list[int] = []
    send_eof = paramiko.Channel.shutdown_write

    def counted(chan: paramiko.Channel) -> None:
        eofs.append(chan.chanid)
        send_eof(chan)

    monkeypatch.setattr(paramiko.Channel, "shutdown_write", counted)
    conn = Connection(_target())
    try:
        assert conn.run(["cat"], timeout=10).stdout == b"", "a command reading its input ends at once"
        assert conn.run(["sh", "-c", "exit 0"]).code == 0
        assert eofs == []
        assert conn.run(["cat"], stdin=b"weights").stdout == b"weights" and len(eofs) == 1, "input ends with EOF"
    finally:
        conn.close()


def test_connections_writing_one_file_at_once_all_succeed() -> None:
    """The CLI and a gateway write the same host agent file on one host at once (several connections): each
    write goes through its own temporary file, so neither finds its temporary file renamed away."""
    conns = [Connection(_target()) for _ in range(4)]
    path = f"/tmp/gpuform-write-race-{uuid.uuid4().hex[:8]}"
    errors: list[BaseException] = []

    def write(conn: Connection, byte: bytes) -> None:
        try:
            for _ in range(30):
                conn.write_file(path, byte * 5_000)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c, b)) for c, b in zip(conns, (b"a", b"b", b"c", b"d"), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        written = conns[0].run(["cat", path]).stdout
        assert written in [b * 5_000 for b in (b"a", b"b", b"c", b"d")]  # one whole write, never a mix
        assert conns[0].run(["sh", "-c", f"ls {path}.gpuform-tmp* 2>/dev/null | wc -l"]).text.strip() == "0"
    finally:
        conns[0].run(["rm", "-f", path])
        for c in conns:
            c.close()


def test_a_connection_dropped_by_the_host_is_made_again_for_commands_and_sftp() -> None:
    """The host ends the connection (its sshd restarted, a NAT forgot it): the next command and the next SFTP
    write connect again instead of failing with the dead session."""
    conn, other = Connection(_target()), Connection(_target())
    path = f"/tmp/gpuform-reconnect-{uuid.uuid4().hex[:8]}"
    try:
        conn.write_file(path, b"before")
        transport = conn.client.get_transport()
        assert transport is not None
        port = transport.sock.getsockname()[1]  # type: ignore[union-attr]
        # the sshd process serving this connection, found by the client's port
        listing = other.run(["ss", "-tnpH", "state", "established", f"( sport = :22 and dport = :{port} )"]).text
        pids = {int(p) for p in re.findall(r"pid=(\d+)", listing)}
        assert pids, listing
        other.run(["kill", "-9", *map(str, pids)])
        wait_for(lambda: not transport.is_active(), 10, what="the dropped connection to be seen")
        conn.write_file(path, b"after")
        assert conn.run(["cat", path]).stdout == b"after"
    finally:
        other.run(["rm", "-f", path])
        conn.close()
        other.close()


def test_an_unreachable_host_is_reported_and_the_others_proceed() -> None:
    info = load_hosts()
    hosts = [SSHHost(address="10.77.0.11", identity_file=info["ssh"]["identity_file"], name="h1"),
             SSHHost(address="10.77.0.99", identity_file=info["ssh"]["identity_file"], name="gone")]
    pool = SSHHosts(hosts, info["ssh"]["known_hosts"], False, 2.0)
    inventory = {h.host: h for h in pool.inventory()}
    assert inventory["h1"].reachable and len(inventory["h1"].gpus) == 8
    assert inventory["h1"].gpu_types == {"H100-80GB"}
    assert not inventory["gone"].reachable and "cannot reach root@10.77.0.99:22" in inventory["gone"].reason
    pool.close()


def test_a_host_lost_under_an_open_connection_is_unreachable_and_the_others_proceed() -> None:
    """h2's link is cut while the pool holds an open connection to it: the next command gets no answer (the
    connection still looks open), is reported as an unreachable host within the connect timeout, and the
    inventory goes on with h1 (it raised before, so placement and listings failed while any host was lost)."""
    info = load_hosts()
    hosts = [SSHHost(address=a, identity_file=info["ssh"]["identity_file"], name=n)
             for a, n in (("10.77.0.11", "h1"), ("10.77.0.12", "h2"))]
    pool = SSHHosts(hosts, info["ssh"]["known_hosts"], False, 2.0)
    try:
        assert all(h.reachable for h in pool.inventory(fresh=True))
        subprocess.run(["ip", "link", "set", "gpf-h2", "down"], check=True)
        try:
            started = time.monotonic()
            with pytest.raises(SSHError) as lost:
                pool.conn("h2").run(["true"])
            assert lost.value.unreachable and "no answer on the open SSH connection" in lost.value.message
            assert time.monotonic() - started < 5
            inventory = {h.host: h for h in pool.inventory(fresh=True)}
            assert inventory["h1"].reachable and not inventory["h2"].reachable, inventory
            assert "cannot reach root@10.77.0.12:22" in inventory["h2"].reason
        finally:
            subprocess.run(["ip", "link", "set", "gpf-h2", "up"], check=True)

        def back() -> bool:
            try:
                return pool.conn("h2").run(["true"], check=False).code == 0
            except SSHError:  # the link is still coming up
                return False
        wait_for(back, 30, interval=0.5, what="h2 back")
    finally:
        pool.close()


def test_gpu_inventory_of_real_hosts_feeds_plan_warnings(tmp_path: Path) -> None:
    s = Setup("baremetal", tmp_path, free_port(), "/srv/unused")
    text = s.pool_yaml() + f"""
gateway:
  main: {{pool: p, listen: "0.0.0.0:{s.port}", advertise_url: "{s.url}"}}
endpoints:
  big:
    pool: p
    worker: {{template: echo}}
    gpu: {{types: [H100-80GB], count: 2}}
    scaling: {{max_workers: 6}}
  rare:
    pool: p
    worker: {{template: echo}}
    gpu: {{types: [B200-180GB]}}
"""
    write_config(tmp_path, text)
    plan = run_gpuform("-C", str(tmp_path), "plan")
    assert plan.returncode == 0, plan.stderr
    assert "endpoint.big: max_workers × gpus needs 12 GPUs of type H100-80GB, but pool.p has 8" in plan.stdout
    assert "endpoint.rare: no usable host in pool.p has a GPU of type B200-180GB" in plan.stdout
    assert "H100-80GB" in plan.stdout and "cpu" in plan.stdout
