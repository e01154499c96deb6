"""Pools' hosts resolved from an ssh_config: precedence, ProxyJump chains, refused forms, the file a remote
gateway gets, and the located errors of `validate`."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from gpuform.config.load import load
from gpuform.config.schema import SSHHost
from gpuform.errors import ConfigError, SSHError
from gpuform.providers.common import sshconfig
from gpuform.providers.common.ssh import Target
from tests.conftest import write_config

pytestmark = pytest.mark.unit

DEFAULTS = sshconfig.Defaults("/kh", False, 5.0)
CONFIG = """
Host gpu-7
  HostName 10.0.0.7
Host gpu-*
  HostName %h.lab.internal
  User ubuntu
  Port 2222
  IdentityFile {key}
  ProxyJump ops@bastion:2200
Host bastion
  HostName 192.0.2.10
  IdentityFile {key}
Host deep
  ProxyJump outer,inner
Host outer
  HostName 198.51.100.1
Host inner
  ProxyJump ignored-for-later-hops
Host loop-a
  ProxyJump loop-b
Host loop-b
  ProxyJump loop-a
Host legacy
  ProxyCommand nc -x proxy:1080 %h %p
Host direct
  ProxyCommand none
"""


def _cfg(tmp_path: Path) -> paramiko.SSHConfig:
    key = tmp_path / "id_test"
    key.write_text("not a real key\n")
    return paramiko.SSHConfig.from_text(CONFIG.format(key=key))


def test_the_ssh_config_fills_what_the_pool_leaves_at_defaults(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    t = sshconfig.resolve(SSHHost(address="gpu-7"), cfg, DEFAULTS)
    assert (t.address, t.port, t.user, t.identity_file) == ("10.0.0.7", 2222, "ubuntu", str(tmp_path / "id_test"))
    assert t.known_hosts == "/kh" and t.connect_timeout == 5.0
    assert t.jump is not None and (t.jump.address, t.jump.port, t.jump.user) == ("192.0.2.10", 2200, "ops")
    assert t.jump.jump is None and t.jump.known_hosts == "/kh", "every hop is checked against the pool's file"
    assert t.route == "ubuntu@10.0.0.7:2222 via ops@192.0.2.10:2200"


def test_settings_written_on_the_host_win_over_the_ssh_config(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    t = sshconfig.resolve(SSHHost(address="gpu-7", port=22022, user="svc", identity_file="/k/own"), cfg, DEFAULTS)
    assert (t.address, t.port, t.user, t.identity_file) == ("10.0.0.7", 22022, "svc", "/k/own")
    assert sshconfig.resolve(SSHHost(address="direct"), cfg, DEFAULTS).jump is None, "ProxyCommand none is fine"
    plain = sshconfig.resolve(SSHHost(address="10.1.1.1"), cfg, DEFAULTS)
    assert plain == Target("10.1.1.1", 22, "root", None, "/kh", False, 5.0), "no match: gpuform's defaults"


def test_multi_hop_proxyjump_chains_the_hops_in_order(tmp_path: Path) -> None:
    t = sshconfig.resolve(SSHHost(address="deep"), _cfg(tmp_path), DEFAULTS)
    assert t.route == "root@deep:22 via root@inner:22 via root@198.51.100.1:22"


@pytest.mark.parametrize(("alias", "expected"), [
    ("loop-a", "ProxyJump loops or is too long: loop-a -> loop-b -> loop-a"),
    ("legacy", "gives legacy a ProxyCommand, which gpuform does not run"),
])
def test_loops_and_proxycommand_are_refused(tmp_path: Path, alias: str, expected: str) -> None:
    with pytest.raises(sshconfig.SSHConfigError, match=expected):
        sshconfig.resolve(SSHHost(address=alias), _cfg(tmp_path), DEFAULTS)


@pytest.mark.parametrize(("text", "hops"), [
    ("ops@b:2200", [("b", 2200, "ops")]),
    ("ssh://ops@b:2200,c", [("b", 2200, "ops"), ("c", None, None)]),
    ("[2001:db8::1]:2022", [("2001:db8::1", 2022, None)]),
    ("NONE", []),
])
def test_proxyjump_hops_parse(text: str, hops: list[tuple[str, int | None, str | None]]) -> None:
    assert sshconfig._jumps(text, "x") == hops


def test_an_unreadable_hop_is_refused() -> None:
    with pytest.raises(sshconfig.SSHConfigError, match="unreadable ProxyJump hop 'b:99999'"):
        sshconfig._jumps("b:99999", "x")


def test_the_rendered_config_resolves_to_the_same_targets(tmp_path: Path) -> None:
    """What a remote gateway is given: the resolved hosts, keys mapped to their copies, jump hosts included."""
    cfg = _cfg(tmp_path)
    hosts = [SSHHost(address="gpu-7"), SSHHost(address="deep"), SSHHost(address="10.1.1.1")]
    before = [sshconfig.resolve(h, cfg, DEFAULTS) for h in hosts]
    text = sshconfig.render(list(zip([h.address for h in hosts], before, strict=True)), lambda p: "/copied/key")
    after = [sshconfig.resolve(h, paramiko.SSHConfig.from_text(text), DEFAULTS) for h in hosts]

    def keys_copied(t: Target | None) -> Target | None:
        if t is None:
            return None
        return Target(t.address, t.port, t.user, t.identity_file and "/copied/key", t.known_hosts,
                      t.trust_on_first_use, t.connect_timeout, keys_copied(t.jump))

    assert after == [keys_copied(t) for t in before]


def test_a_pool_with_a_bad_ssh_config_fails_at_construction_naming_the_pool(tmp_path: Path) -> None:
    from gpuform.providers.common.hosts import SSHHosts

    (tmp_path / "cfg").write_text("Host legacy\n  ProxyCommand nc %h %p\n")
    with pytest.raises(SSHError) as info:
        SSHHosts([SSHHost(address="legacy")], "/kh", False, 5.0, ssh_config=tmp_path / "cfg", where="pool.lab")
    assert info.value.address == "pool.lab" and "ProxyJump" in info.value.hint


POOLS = """
pools:
  lab:
    provider: baremetal
    ssh_config: {ssh_config}
    hosts:
      - {{address: 10.0.0.1}}
      - {{address: legacy}}
  dock:
    provider: docker
    ssh_config: ./ssh/config
    hosts:
      - {{address: local, docker_host: "unix:///var/run/docker.sock"}}
      - {{address: legacy}}
gateway: {{main: {{pool: lab}}}}
"""


def test_validate_locates_a_missing_ssh_config(tmp_path: Path) -> None:
    write_config(tmp_path, POOLS.format(ssh_config="./no/such/config"))
    (tmp_path / "ssh").mkdir()
    (tmp_path / "ssh" / "config").write_text("Host *\n  User ops\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={})
    errors = [d.render() for d in info.value.diagnostics if d.severity == "error"]
    assert len(errors) == 1, errors
    assert "gpuform.yaml:4:" in errors[0] and "ssh_config file" in errors[0] and "does not exist" in errors[0]
    assert "relative paths are read from the configuration directory" in errors[0]


def test_validate_locates_a_host_the_ssh_config_cannot_serve(tmp_path: Path) -> None:
    (tmp_path / "ssh").mkdir()
    (tmp_path / "ssh" / "config").write_text("Host legacy\n  ProxyCommand nc %h %p\n")
    write_config(tmp_path, POOLS.format(ssh_config="ssh/config"))
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={})
    errors = [d.render() for d in info.value.diagnostics if d.severity == "error"]
    assert len(errors) == 2, errors
    assert "gpuform.yaml:7:" in errors[0] and "ProxyCommand" in errors[0], "pool lab, hosts[1]"
    assert "gpuform.yaml:13:" in errors[1] and "ProxyCommand" in errors[1], "pool dock, hosts[1] (not the socket)"


def test_ssh_config_none_reads_no_file(tmp_path: Path) -> None:
    assert sshconfig.config_path("none", tmp_path) is None
    assert sshconfig.config_path("ssh/config", tmp_path) == tmp_path / "ssh" / "config"


def test_include_is_read_and_match_exec_blocks_left_out(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "lab").write_text("Host gpu-7\n  HostName 10.0.0.7\n  ProxyJump ops@bastion\n")
    main = tmp_path / "config"
    main.write_text(f"Include {tmp_path}/conf.d/*\nHost *\n  User ubuntu\n")
    t = sshconfig.resolve(SSHHost(address="gpu-7"), sshconfig.load(main), DEFAULTS)
    assert t.route == "ubuntu@10.0.0.7:22 via ops@bastion:22"
    marker = tmp_path / "ran"
    main.write_text(f"Match exec \"touch {marker}\"\n  User ubuntu\nHost gpu-7\n  Port 2200\n")
    t = sshconfig.resolve(SSHHost(address="gpu-7"), sshconfig.load(main), DEFAULTS)
    assert (t.user, t.port) == ("root", 2200) and not marker.exists(), "the block is skipped, its command not run"


def test_a_pool_without_ssh_config_reads_the_users_own_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    assert sshconfig.config_path(None, tmp_path) is None, "no ~/.ssh/config: no file"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host gpu-9\n  HostName 10.9.9.9\n  User alice\n  Port 2200\n"
                                          "  ProxyJump ops@bastion.lab\n")
    path = sshconfig.config_path(None, tmp_path)
    assert path == home / ".ssh" / "config"
    t = sshconfig.resolve(SSHHost(address="gpu-9"), sshconfig.load(path), DEFAULTS)
    assert (t.address, t.port, t.user) == ("10.9.9.9", 2200, "alice")
    assert t.jump is not None and (t.jump.address, t.jump.user) == ("bastion.lab", "ops")
