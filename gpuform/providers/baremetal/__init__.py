"""The ``baremetal`` provider: hosts over SSH; workers run from a virtualenv under systemd or a supervisor."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gpuform.config.schema import Endpoint, PoolBase, SSHHost
from gpuform.config.types import Duration
from gpuform.provider import Capability, ProviderSpec


class BaremetalPool(PoolBase):
    """Machines reached over SSH; gpuform builds the worker's virtualenv on each from wheels it uploads."""

    provider: Literal["baremetal"] = Field(description="Runs workers as processes on SSH hosts.")
    hosts: list[SSHHost] = Field(min_length=1, description="The machines of the pool.")
    known_hosts: str = Field("~/.ssh/known_hosts", description="known_hosts file the host keys are checked "
                                                               "against.")
    trust_on_first_use: bool = Field(False, description="Accept an unknown host's key once and record it in "
                                                        "known_hosts (a changed key is still refused).")
    connect_timeout: Duration = Field(10.0, description="SSH connect and authentication timeout.")
    ssh_config: str | None = Field(None, description="OpenSSH client config the hosts' HostName, Port, User, "
                                   "IdentityFile and ProxyJump (bastions) come from, relative to the configuration "
                                   "directory; default ~/.ssh/config when it exists, `none` for no file. Settings "
                                   "written on a host win.")
    data_dir: str = Field("/var/lib/gpuform", description="Directory on each host for virtualenvs, wheels, "
                                                          "pid records and logs.")
    python: str = Field("python3", description="Interpreter on the hosts that virtualenvs are made from.")
    supervisor: Literal["auto", "systemd", "process"] = Field(
        "auto", description="systemd units where systemd runs (auto), or gpuform's process supervisor.")
    nvidia_smi: str = Field("nvidia-smi", description="Command that inventories GPUs on the hosts.")

    def host_labels(self) -> list[str]:
        return [h.label for h in self.hosts]


def check_pool(pool: PoolBase, config_dir: Path) -> list[tuple[tuple[str | int, ...], str, str]]:
    """The pool's ssh_config exists and resolves for every host (ProxyJump hops readable, no ProxyCommand)."""
    from gpuform.providers.common import sshconfig  # paramiko: only when a configuration is checked

    assert isinstance(pool, BaremetalPool)
    hosts = [(i, h) for i, h in enumerate(pool.hosts) if not getattr(h, "docker_host", None)]
    return sshconfig.check(hosts, pool.ssh_config, config_dir)


def check_endpoint(pool: PoolBase, endpoint: Endpoint, config_dir: Path) -> list[tuple[tuple[str | int, ...], str]]:
    if endpoint.worker.template == "custom" and not endpoint.worker.command:
        return [(("worker",), "a custom worker on a baremetal pool needs `command: [python, handler.py]`")]
    return []


SPEC = ProviderSpec(
    name="baremetal",
    pool_model=BaremetalPool,
    implementation="gpuform.providers.baremetal.provider:BaremetalProvider",
    description="SSH hosts; workers from a virtualenv under systemd or a supervisor",
    check_endpoint=check_endpoint,
    check_pool=check_pool,
    capabilities=frozenset({Capability.WORKERS, Capability.GATEWAY, Capability.VOLUMES, Capability.GPU_PLACEMENT,
                            Capability.GPU_METRICS, Capability.NAMED_HOSTS}),
)
