"""The fake provider's operations, on a :class:`World` shared by every instance of the same lineage and pool
in one process (so an apply, a refresh and a gateway in one test see the same pool).

Tests drive it: :meth:`World.crash` ends a worker as if its process died, ``World.fail_starts`` makes the
next starts fail, and ``World.calls`` records every operation in order.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar

from gpuform.errors import NoCapacity, ProviderError
from gpuform.provider import (
    Attrs,
    GpuInfo,
    HostInventory,
    Observation,
    ProviderContext,
    VolumeSpec,
    WorkerInfo,
    WorkerLaunch,
)
from gpuform.providers.common.gpus import occupancy, place
from gpuform.providers.fake import FakePool
from gpuform.spec import EndpointSpec
from gpuform.util.manifests import PRESENT, Manifest, declared_source, manifest_digest


@dataclass
class World:
    """Everything a fake pool holds."""

    prepared: set[str] = field(default_factory=set)  # hosts create_pool has prepared
    volumes: dict[tuple[str, str], Manifest] = field(default_factory=dict)  # (host, path) -> files
    endpoints: dict[str, set[str]] = field(default_factory=dict)  # endpoint -> hosts prepared for it
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    launches: dict[str, WorkerLaunch] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (operation, subject)
    fail_starts: int = 0
    lost_hosts: set[str] = field(default_factory=set)  # hosts that stopped answering (their workers run on)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def crash(self, worker_id: str, exit_code: int = 1, log: str = "") -> None:
        """End a worker as if its process had died."""
        info = self.workers[worker_id]
        info.state, info.exit_code = "exited", exit_code
        self.logs[worker_id] = self.logs.get(worker_id, "") + log

    def running(self, endpoint: str | None = None) -> list[WorkerInfo]:
        return [w for w in self.workers.values() if w.state == "running" and endpoint in (None, w.endpoint)]


class FakeProvider:
    WORLDS: ClassVar[dict[tuple[str, str], World]] = {}

    def __init__(self, pool_name: str, pool: FakePool, ctx: ProviderContext) -> None:
        self.pool_name, self.pool, self.ctx = pool_name, pool, ctx
        self.world = self.WORLDS.setdefault((ctx.lineage, pool_name), World())

    @classmethod
    def world_of(cls, lineage: str, pool: str) -> World:
        return cls.WORLDS.setdefault((lineage, pool), World())

    def _call(self, operation: str, subject: str = "") -> None:
        self.world.calls.append((operation, subject))

    # ---- the pool -----------------------------------------------------------------------------------

    def read_pool(self) -> Attrs | None:
        return {"prepared": sorted(self.world.prepared)}

    def create_pool(self) -> Attrs:
        self._call("create_pool")
        reachable = [h.name for h in self.pool.hosts if h.reachable]
        if not reachable:
            raise ProviderError(f"every host of pool {self.pool_name} is down", "Bring a host back.")
        self.world.prepared |= set(reachable)
        return {"prepared": sorted(self.world.prepared)}

    def delete_pool(self) -> None:
        self._call("delete_pool")
        for worker in self.world.running():
            self.stop_worker(worker, 0)
        self.WORLDS.pop((self.ctx.lineage, self.pool_name), None)

    def inventory(self) -> list[HostInventory]:
        return [HostInventory(h.name, h.reachable and h.name not in self.world.lost_hosts,
                              "down (fake)" if not h.reachable else "does not answer (fake)"
                              if h.name in self.world.lost_hosts else "",
                              tuple(GpuInfo(i, t, t, 0, f"FAKE-{h.name}-{i}") for i, t in enumerate(h.gpus)),
                              h.cordon) for h in self.pool.hosts]

    # ---- volumes ------------------------------------------------------------------------------------

    def read_volume(self, name: str, volume: VolumeSpec) -> Observation | None:
        held = {h.name: self.world.volumes.get((h.name, volume.path)) for h in self.pool.hosts if h.reachable}
        if volume.source is None:
            missing = sorted(h for h, m in held.items() if m is None)
            return Observation({"content": f"missing on {', '.join(missing)}" if missing else PRESENT})
        if all(v is None for v in held.values()):
            return None
        digests = {h: manifest_digest(m) if m is not None else "missing" for h, m in held.items()}
        agreed = set(digests.values())
        content = agreed.pop() if len(agreed) == 1 else f"differs on {', '.join(sorted(digests))}"
        return Observation({"content": content, "hosts": {h: {"files": len(m or {})} for h, m in held.items()}})

    def stage_volume(self, name: str, volume: VolumeSpec) -> Attrs:
        self._call("stage_volume", name)
        if volume.source is None:  # files already on the hosts: checked, never written
            missing = sorted(h.name for h in self.pool.hosts if h.reachable and (h.name, volume.path)
                             not in self.world.volumes)
            if missing:
                raise ProviderError(f"{volume.path} is missing on {', '.join(missing)}", "Put the files there.")
            return {}
        _, source = declared_source(self.ctx.config_dir, self.ctx.state_dir, volume.source)
        for host in (h for h in self.pool.hosts if h.reachable):
            self.world.volumes[(host.name, volume.path)] = dict(source)
        return {"hosts": {h.name: {"files": len(source)} for h in self.pool.hosts if h.reachable}}

    def remove_volume(self, name: str, volume: VolumeSpec) -> None:
        self._call("remove_volume", name)
        if volume.source is None:
            return
        for host in self.pool.hosts:
            self.world.volumes.pop((host.name, volume.path), None)

    # ---- endpoints ----------------------------------------------------------------------------------

    def prepare_endpoint(self, name: str, spec: EndpointSpec) -> Attrs:
        self._call("prepare_endpoint", name)
        hosts = {h.name for h in self.pool.hosts if h.reachable and not h.cordon}
        self.world.endpoints.setdefault(name, set()).update(hosts)
        return {"hosts_ready": sorted(self.world.endpoints[name])}

    def read_endpoint(self, name: str, spec: EndpointSpec) -> Observation:
        ready = self.world.endpoints.get(name, set())
        missing = sorted(h.name for h in self.pool.hosts if h.reachable and not h.cordon and h.name not in ready)
        return Observation({"hosts_ready": sorted(ready)},
                           repair=[f"worker environment missing on {', '.join(missing)}"] if missing else [])

    def remove_endpoint(self, name: str, spec: EndpointSpec) -> None:
        self._call("remove_endpoint", name)
        for worker in self.world.running(name):
            self.stop_worker(worker, 0)
        self.world.endpoints.pop(name, None)

    # ---- workers ------------------------------------------------------------------------------------

    def start_worker(self, launch: WorkerLaunch) -> WorkerInfo:
        with self.world.lock:
            self._call("start_worker", launch.worker_id)
            if self.world.fail_starts > 0:
                self.world.fail_starts -= 1
                raise ProviderError(f"starting {launch.worker_id} failed (fake)", "The test asked for it.")
            used, count = occupancy(self.world.running())
            spot = place(self.inventory(), used, count, launch.gpu_types, launch.gpu_count)
            if spot is None:
                raise NoCapacity(f"no host in pool {self.pool_name} has a free GPU of type "
                                 f"{' or '.join(launch.gpu_types)}", "Free GPUs or add hosts.",
                                 f"pool.{self.pool_name}")
            info = WorkerInfo(launch.worker_id, launch.endpoint, spot.host, "running", spot.gpu_type, spot.indices,
                              ref=launch.worker_id, started_at=time.time(), spec_revision=launch.spec_revision)
            self.world.workers[launch.worker_id] = info
            self.world.launches[launch.worker_id] = launch
            return info

    def stop_worker(self, worker: WorkerInfo, grace_s: float) -> None:
        self._call("stop_worker", worker.worker_id)
        found = self.world.workers.get(worker.worker_id)
        if found is not None and found.state == "running":
            found.state = "stopped"

    def list_workers(self, endpoint: str | None = None) -> list[WorkerInfo]:
        """Workers on the hosts that answer (a real provider skips an unreachable host the same way)."""
        return [w for w in self.world.workers.values()
                if endpoint in (None, w.endpoint) and w.host not in self.world.lost_hosts]

    def worker_logs(self, worker: WorkerInfo, tail: int = 50) -> str:
        return "\n".join(self.world.logs.get(worker.worker_id, "").splitlines()[-tail:])

    def close(self) -> None:
        return None
