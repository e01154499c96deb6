"""Providers: what the control plane and the gateway ask of a pool's hosts, and the registry of providers.

A provider drives the hosts of one pool. Its operations are grouped by what they act on, and a provider
declares the capabilities it has (:class:`Capability`); callers ask for a capability with :func:`require`,
never for a provider by name. Every provider implements :class:`Provider` (the pool itself, the host-side
part of endpoints, and workers). :class:`GatewayHost` (runs the gateway) and :class:`VolumeHost` (stages
volumes) are optional. docs/providers.md explains how to write one.

Obligations every provider must meet (the contract suites in ``tests/`` check them):

- reads return ``None`` when the object is gone, otherwise what they can observe; a key they cannot
  observe is left out (the core then keeps the prior value). They never raise for "not found".
- whatever is created is labelled with the lineage and address (or the worker id), so an interrupted
  apply is adopted on the next run instead of duplicated: creating what already exists adopts it.
- removal is idempotent; removing a pool or an endpoint also stops any worker of it still running.
- the gateway's reconciler is the only caller of ``start_worker`` and ``stop_worker``.
- library exceptions (paramiko, docker, OSError) never escape: they are translated into
  :class:`~gpuform.errors.ProviderError` subclasses whose hint says how to fix the problem.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import Field

from gpuform.config.plugins import ENTRY_POINT_GROUP, PoolKind
from gpuform.config.schema import LogRotation, PoolBase, Volume
from gpuform.errors import ProviderError
from gpuform.spec import EndpointSpec, RuntimeConfig

Attrs = dict[str, Any]
Progress = Callable[[str], None]
Transfer = Callable[[str, int, int], None]  # (what, bytes done, bytes total)
Event = Callable[[str, str], None]  # (address, message)


class Capability(StrEnum):
    """What a provider can do beyond running workers; declared in its :class:`ProviderSpec`."""

    WORKERS = "workers"  # starts, stops and lists workers and reads their logs (every provider)
    GATEWAY = "gateway"  # runs and supervises a gateway on a pool host (GatewayHost)
    VOLUMES = "volumes"  # stages volume files onto its hosts and checks them (VolumeHost)
    GPU_PLACEMENT = "gpu_placement"  # inventories GPUs and places workers on them by index and type
    NAMED_HOSTS = "named_hosts"  # several hosts by name: cordons, unreachable hosts skipped, per-host repair
    IMAGES = "images"  # runs workers from container images (worker.image)
    WARM_RESTART = "warm_restart"  # keeps stopped workers for fast restarts
    GPU_METRICS = "gpu_metrics"  # reads each GPU's utilisation and memory (GpuMonitor)


@dataclass
class ProviderContext:
    """What a provider may use besides its pool's configuration."""

    lineage: str
    state_dir: Path
    config_dir: Path
    progress: Progress = field(default=lambda message: None)
    cancelled: threading.Event = field(default_factory=threading.Event)
    transfer: Transfer = field(default=lambda what, done, total: None)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    type: str
    name: str
    memory_mib: int
    uuid: str


@dataclass(frozen=True)
class GpuUsage:
    """One GPU's utilisation (0-1, None when the driver does not say) and memory, as ``nvidia-smi`` reports."""

    host: str
    index: int
    utilization: float | None
    memory_used_mib: int | None
    memory_total_mib: int | None


@dataclass(frozen=True)
class HostInventory:
    """One host as refresh saw it: reachable or not, and its GPUs."""

    host: str
    reachable: bool
    reason: str = ""
    gpus: tuple[GpuInfo, ...] = ()
    cordoned: bool = False

    @property
    def gpu_types(self) -> set[str]:
        return {g.type for g in self.gpus} or {"cpu"}


@dataclass
class WorkerLaunch:
    """Everything a provider needs to start one worker."""

    worker_id: str
    endpoint: str
    lineage: str
    template: str
    image: str | None
    command: list[str]
    python: str | None
    workdir: str | None
    env: dict[str, str]
    gpu_types: list[str]
    gpu_count: int
    volume_path: str | None = None
    keep_stopped: bool = True
    spec_revision: str = ""
    logs: LogRotation = field(default_factory=LogRotation)  # how the worker's log rotates (the gateway's setting)
    files: dict[str, bytes] = field(default_factory=dict)
    """Files the worker needs, by the environment variable that must hold each one's path where the worker runs
    (TLS: the CA bundle, a client certificate and key). A provider must write each (mode 0600; the names from
    :meth:`named_files` are content-addressed, so rewriting one is harmless) and set the variables
    (:meth:`file_env`)."""

    def named_files(self) -> dict[str, bytes]:
        """File name -> content, for each distinct file of :attr:`files`."""
        return {_file_name(data): data for data in self.files.values()}

    def file_env(self, directory: str) -> dict[str, str]:
        """The variables of :attr:`files`, naming the files as the worker sees ``directory``."""
        return {var: f"{directory.rstrip('/')}/{_file_name(data)}" for var, data in self.files.items()}


def _file_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24] + ".pem"


@dataclass
class WorkerInfo:
    """A worker as the provider sees it. ``state`` is ``running``, ``exited`` or ``stopped``."""

    worker_id: str
    endpoint: str
    host: str
    state: str
    gpu_type: str = "cpu"
    gpu_indices: tuple[int, ...] = ()
    exit_code: int | None = None
    ref: str = ""
    started_at: float = 0.0
    spec_revision: str = ""


@dataclass
class Observation:
    """What a read found: observed values, notes for the plan, and host-side gaps an update repairs."""

    attributes: Attrs = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    repair: list[str] = field(default_factory=list)


class VolumeSpec(Volume):
    """A volume as apply hands it to a provider: the declared volume plus its source's digest."""

    content: str | None = Field(None, description="Digest of the source directory's manifest.")
    files: int | None = Field(None, description="Files in the source directory.")
    bytes: int | None = Field(None, description="Bytes in the source directory.")


@runtime_checkable
class Provider(Protocol):
    """Every provider: the pool itself, the host-side part of endpoints, and workers."""

    def read_pool(self) -> Attrs | None: ...

    def create_pool(self) -> Attrs:
        """Prepare the hosts (idempotent; apply calls it for updates too); returns computed attributes."""
        ...

    def delete_pool(self) -> None:
        """Stop every worker of this lineage still on the hosts, check none runs (ProviderError if one does),
        then remove what the pool put there."""
        ...

    def inventory(self) -> list[HostInventory]: ...

    def prepare_endpoint(self, name: str, spec: EndpointSpec) -> Attrs:
        """Put what the endpoint's workers need on the hosts (images, virtualenvs); idempotent."""
        ...

    def read_endpoint(self, name: str, spec: EndpointSpec) -> Observation: ...

    def remove_endpoint(self, name: str, spec: EndpointSpec) -> None: ...

    def start_worker(self, launch: WorkerLaunch) -> WorkerInfo: ...

    def stop_worker(self, worker: WorkerInfo, grace_s: float) -> None: ...

    def list_workers(self, endpoint: str | None = None) -> list[WorkerInfo]: ...

    def worker_logs(self, worker: WorkerInfo, tail: int = 50) -> str: ...

    def close(self) -> None: ...


@runtime_checkable
class GatewayHost(Protocol):
    """Capability ``gateway``: runs a supervised gateway process on a host of the pool."""

    def read_gateway(self, name: str) -> Attrs | None: ...

    def start_gateway(self, name: str, config: RuntimeConfig) -> Attrs:
        """Make the gateway run ``config``: adopt one already running it, restart one running another."""
        ...

    def reload_gateway(self, name: str, config: RuntimeConfig) -> Attrs | None:
        """Write ``config`` where the running gateway reads its configuration, for it to take by a hot reload
        (``POST /admin/reload``, which the caller sends); None, writing nothing, when no gateway runs."""
        ...

    def stop_gateway(self, name: str, remove_data: bool) -> None: ...

    def gateway_logs(self, name: str, tail: int = 100) -> str:
        """The last ``tail`` lines of the gateway's own log ('' when there is none yet); kept after it stops."""
        ...


@runtime_checkable
class VolumeHost(Protocol):
    """Capability ``volumes``: stages a volume's source files onto every host and checks them."""

    def read_volume(self, name: str, volume: VolumeSpec) -> Observation | None: ...

    def stage_volume(self, name: str, volume: VolumeSpec) -> Attrs: ...

    def remove_volume(self, name: str, volume: VolumeSpec) -> None: ...


@runtime_checkable
class GpuMonitor(Protocol):
    """Capability ``gpu_metrics``: each reachable host's GPUs as ``nvidia-smi`` reports them now."""

    def gpu_usage(self) -> list[GpuUsage]:
        """Every GPU of every reachable host ([] for hosts without ``nvidia-smi``); never raises for a host
        that cannot be reached (it is left out)."""
        ...


CAPABILITY_PROTOCOLS: dict[Capability, type] = {Capability.WORKERS: Provider, Capability.GATEWAY: GatewayHost,
                                                Capability.VOLUMES: VolumeHost, Capability.GPU_METRICS: GpuMonitor}
ProviderFactory = Callable[[str, PoolBase, ProviderContext], Provider]


@dataclass(frozen=True, kw_only=True)
class ProviderSpec(PoolKind):
    """A provider as registered: its pool schema (cheap to import), capabilities and a lazy factory."""

    implementation: str  # "module:attribute", imported only when the provider is used

    def factory(self) -> ProviderFactory:
        module, _, attr = self.implementation.partition(":")
        factory: ProviderFactory = getattr(importlib.import_module(module), attr)
        return factory


@cache
def registry() -> dict[str, ProviderSpec]:
    """Providers by name, from the ``gpuform.providers`` entry points."""
    found: dict[str, ProviderSpec] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        spec = ep.load()
        if isinstance(spec, ProviderSpec):
            found[ep.name] = spec
    return found


def make_provider(pool: str, attrs: Attrs | PoolBase, ctx: ProviderContext) -> Provider:
    """Instantiate the provider for a pool from its configuration (a model, or attributes from state)."""
    name = attrs.provider if isinstance(attrs, PoolBase) else str(attrs.get("provider", ""))
    spec = registry().get(name)
    if spec is None:
        raise ProviderError(f'pool "{pool}" uses provider "{name}", which is not installed',
                            f"Installed providers: {', '.join(sorted(registry()))}.", f"pool.{pool}")
    model = attrs if isinstance(attrs, spec.pool_model) else spec.pool_model.model_validate(
        attrs.model_dump() if isinstance(attrs, PoolBase) else attrs)
    return spec.factory()(pool, model, ctx)


def gateway_host(provider: Provider, pool: str) -> GatewayHost:
    """``provider`` as a gateway host, or a ProviderError naming the pool."""
    if isinstance(provider, GatewayHost):
        return provider
    raise _incapable(provider, pool, Capability.GATEWAY)


def volume_host(provider: Provider, pool: str) -> VolumeHost:
    """``provider`` as a volume host, or a ProviderError naming the pool."""
    if isinstance(provider, VolumeHost):
        return provider
    raise _incapable(provider, pool, Capability.VOLUMES)


def _incapable(provider: Provider, pool: str, capability: Capability) -> ProviderError:
    return ProviderError(f"the provider of pool {pool} ({type(provider).__name__}) lacks the {capability} capability",
                         "Put this resource on a pool whose provider has it (docs/providers.md lists each "
                         "provider's capabilities).", f"pool.{pool}")
