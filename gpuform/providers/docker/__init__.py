"""The ``docker`` provider: workers are containers on Docker hosts (local socket or over SSH)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gpuform.config.schema import Endpoint, PoolBase, SSHHost
from gpuform.config.types import Duration, Model
from gpuform.provider import Capability, ProviderSpec
from gpuform.workerspec import TEMPLATES


class DockerHost(SSHHost):
    """A Docker host: over SSH (address, user, key), or this machine's engine (``docker_host``)."""

    docker_host: str | None = Field(None, description="Engine URL on this machine, e.g. "
                                                      "unix:///var/run/docker.sock; omit to use SSH.")


class Registry(Model):
    """A registry hosts pull images from; without one, images are sent to hosts with save/load."""

    url: str = Field(description="Registry host, e.g. registry.lab:5000.")
    username: str | None = Field(None, description="Registry user.")
    password: str | None = Field(None, description="Registry password or token; use ${env.NAME}.")


class DockerPool(PoolBase):
    """Docker hosts; gpuform makes sure every host has the images its endpoints use."""

    provider: Literal["docker"] = Field(description="Runs workers as containers on Docker hosts.")
    hosts: list[DockerHost] = Field(min_length=1, description="The Docker hosts of the pool.")
    known_hosts: str = Field("~/.ssh/known_hosts", description="known_hosts file SSH host keys are checked "
                                                               "against.")
    trust_on_first_use: bool = Field(False, description="Accept an unknown host's key once and record it.")
    connect_timeout: Duration = Field(10.0, description="SSH connect and authentication timeout.")
    ssh_config: str | None = Field(None, description="OpenSSH client config the hosts' HostName, Port, User, "
                                   "IdentityFile and ProxyJump (bastions) come from, relative to the configuration "
                                   "directory; default ~/.ssh/config when it exists, `none` for no file. Settings "
                                   "written on a host win.")
    registry: Registry | None = Field(None, description="Pull images from this registry instead of copying them.")
    base_image: str = Field("python:3.11-slim", description="Image (with Python 3) the gpuform runtime image is "
                                                           "built from; it runs the gateway and built-in workers.")
    data_dir: str = Field("/var/lib/gpuform", description="Host directory for the gateway's queue and workers' "
                                                          "environment files.")
    min_free_disk_percent: float = Field(10.0, ge=0, le=90, description="Below this much free disk on a host, "
                                         "stopped worker containers kept for fast restarts are removed, "
                                         "least recently used first.")
    nvidia_smi: str = Field("nvidia-smi", description="Command that inventories GPUs on the hosts.")

    def host_labels(self) -> list[str]:
        return [h.label for h in self.hosts]


def check_pool(pool: PoolBase, config_dir: Path) -> list[tuple[tuple[str | int, ...], str, str]]:
    """The pool's ssh_config exists and resolves for every host (ProxyJump hops readable, no ProxyCommand)."""
    from gpuform.providers.common import sshconfig  # paramiko: only when a configuration is checked

    assert isinstance(pool, DockerPool)
    hosts = [(i, h) for i, h in enumerate(pool.hosts) if not getattr(h, "docker_host", None)]
    return sshconfig.check(hosts, pool.ssh_config, config_dir)


def check_endpoint(pool: PoolBase, endpoint: Endpoint, config_dir: Path) -> list[tuple[tuple[str | int, ...], str]]:
    if endpoint.worker.requirements:
        return [(("worker", "requirements"), "requirements are installed by local and baremetal pools; on a docker "
                                             "pool, install them in the worker's image")]
    template = TEMPLATES[endpoint.worker.template]
    if (template.name == "custom" or template.packages) and not endpoint.worker.image:
        what = f" with {', '.join(template.packages)} and gpuform[worker] installed" if template.packages else ""
        return [(("worker",), f"a {template.name} worker on a docker pool needs `image:`{what} "
                              "(see gpuform/workers/vllm/ for the vLLM images)")]
    return []


SPEC = ProviderSpec(
    name="docker",
    pool_model=DockerPool,
    implementation="gpuform.providers.docker.provider:DockerProvider",
    description="Docker hosts (local socket or SSH); workers are containers",
    check_endpoint=check_endpoint,
    check_pool=check_pool,
    capabilities=frozenset({Capability.WORKERS, Capability.GATEWAY, Capability.VOLUMES, Capability.GPU_PLACEMENT,
                            Capability.GPU_METRICS, Capability.NAMED_HOSTS, Capability.IMAGES,
                            Capability.WARM_RESTART}),
)
