"""The provider protocol and the registry of providers (entry-point group ``gpuform.providers``).

A provider drives the hosts of one pool. The control plane calls ``read``/``create``/``update``/
``delete`` for the declared resources placed on the pool (``pool``, ``volume``, ``gateway`` and the
host-side part of ``endpoint``); the gateway's reconciler is the only caller of ``start_worker`` and
``stop_worker``. Obligations every provider must meet (the contract suite in tests/contract checks them):

- ``read`` returns ``None`` when the object is gone, otherwise the attributes it can observe; a key it
  cannot observe is left out (the core then keeps the prior value). It never raises for "not found".
- ``create`` must label what it makes with the lineage and address, so that an interrupted apply is
  adopted on the next run instead of duplicated: creating something that already exists with the same
  labels adopts it.
- ``delete`` is idempotent.
- Library exceptions (paramiko, docker, OSError) never escape: they are translated into
  :class:`~gpuform.errors.ProviderError` subclasses whose hint says how to fix the problem.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from gpuform.config.schema import Endpoint, PoolBase

Attrs = dict[str, Any]
Progress = Callable[[str], None]
Transfer = Callable[[str, int, int], None]  # (what, bytes done, bytes total)


@dataclass(frozen=True)
class ResourceRef:
    kind: str
    name: str

    @property
    def address(self) -> str:
        return f"{self.kind}.{self.name}"


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


@dataclass(frozen=True)
class GpuInfo:
    index: int
    type: str
    name: str
    memory_mib: int
    uuid: str


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


class Provider(Protocol):
    """What the core and the gateway ask of a pool's provider."""

    def read(self, ref: ResourceRef, prior: Attrs) -> Attrs | None: ...

    def create(self, ref: ResourceRef, desired: Attrs) -> Attrs: ...

    def update(self, ref: ResourceRef, prior: Attrs, desired: Attrs) -> Attrs: ...

    def delete(self, ref: ResourceRef, prior: Attrs) -> None: ...

    def inventory(self) -> list[HostInventory]: ...

    def start_worker(self, launch: WorkerLaunch) -> WorkerInfo: ...

    def stop_worker(self, worker: WorkerInfo, grace_s: float) -> None: ...

    def list_workers(self, endpoint: str | None = None) -> list[WorkerInfo]: ...

    def worker_logs(self, worker: WorkerInfo, tail: int = 50) -> str: ...

    def close(self) -> None: ...


ProviderFactory = Callable[[str, PoolBase, ProviderContext], Provider]
EndpointCheck = Callable[[PoolBase, Endpoint], list[tuple[tuple[str | int, ...], str]]]


@dataclass(frozen=True)
class ProviderSpec:
    """A provider as registered: its pool schema (cheap to import) and a lazy factory."""

    name: str
    pool_model: type[PoolBase]
    implementation: str  # "module:attribute", imported only when the provider is used
    description: str = ""
    check_endpoint: EndpointCheck | None = None

    def factory(self) -> ProviderFactory:
        module, _, attr = self.implementation.partition(":")
        factory: ProviderFactory = getattr(importlib.import_module(module), attr)
        return factory


@cache
def registry() -> dict[str, ProviderSpec]:
    """Providers by name, from the ``gpuform.providers`` entry points."""
    found: dict[str, ProviderSpec] = {}
    for ep in entry_points(group="gpuform.providers"):
        spec = ep.load()
        if isinstance(spec, ProviderSpec):
            found[ep.name] = spec
    return found
