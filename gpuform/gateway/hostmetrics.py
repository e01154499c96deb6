"""Per-host gauges: GPUs used and free on each host of the gateway's pools, and each GPU's utilisation and
memory where the provider can read ``nvidia-smi`` (capability ``gpu_metrics``).

A background loop every ``timings.host_metrics_interval``; provider calls run in threads, and a pool whose
hosts cannot be read is skipped (logged once) — a gateway without ``nvidia-smi`` anywhere simply exports
no GPU gauges. Nothing here is on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from gpuform.errors import GpuformError
from gpuform.gateway.fleet import Fleet, ProviderAccess
from gpuform.gateway.metrics import Metrics
from gpuform.gateway.states import LIVE, WorkerState
from gpuform.provider import GpuMonitor, GpuUsage, HostInventory

log = logging.getLogger("gpuform.hostmetrics")
MIB = 1024 * 1024
HOLDS_GPU = frozenset({*LIVE, WorkerState.SLEEPING, WorkerState.STOPPING})


class HostMonitor:
    def __init__(self, pools: Iterable[str], providers: ProviderAccess, fleet: Fleet, metrics: Metrics,
                 interval: float) -> None:
        self.pools = sorted(pools)
        self.providers = providers
        self.fleet = fleet
        self.metrics = metrics
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._failing: set[str] = set()

    def start(self) -> None:
        if self.pools:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            for pool in self.pools:
                await self.collect(pool)
            await asyncio.sleep(self.interval)

    async def collect(self, pool: str) -> None:
        """Read one pool's hosts and set its gauges; a failure is logged once and leaves the last values."""
        try:
            provider = self.providers(pool)
            hosts = await asyncio.to_thread(provider.inventory)
            usage = await asyncio.to_thread(provider.gpu_usage) if isinstance(provider, GpuMonitor) else []
        except GpuformError as exc:
            if pool not in self._failing:
                log.warning("cannot read the hosts of pool %s for metrics: %s", pool, exc.message)
            self._failing.add(pool)
            return
        except Exception:  # a provider bug must not end the loop; logged once
            if pool not in self._failing:
                log.exception("reading the hosts of pool %s for metrics failed", pool)
            self._failing.add(pool)
            return
        self._failing.discard(pool)
        self.record(pool, hosts, usage)

    def record(self, pool: str, hosts: list[HostInventory], usage: list[GpuUsage]) -> None:
        used = self._used(pool)
        types: dict[tuple[str, int], str] = {}
        for host in hosts:
            self.metrics.host_up.labels(pool, host.host).set(1 if host.reachable else 0)
            counts: dict[str, list[int]] = {}
            for gpu in host.gpus:
                types[(host.host, gpu.index)] = gpu.type
                busy = gpu.index in used.get(host.host, set())
                counts.setdefault(gpu.type, [0, 0])[0 if busy else 1] += 1
            for gpu_type, (n_used, n_free) in counts.items():
                self.metrics.host_gpus.labels(pool, host.host, gpu_type, "used").set(n_used)
                self.metrics.host_gpus.labels(pool, host.host, gpu_type, "free").set(n_free)
        for card in usage:
            labels = (pool, card.host, str(card.index), types.get((card.host, card.index), ""))
            if card.utilization is not None:
                self.metrics.gpu_utilization.labels(*labels).set(card.utilization)
            if card.memory_used_mib is not None:
                self.metrics.gpu_memory_used.labels(*labels).set(card.memory_used_mib * MIB)
            if card.memory_total_mib is not None:
                self.metrics.gpu_memory_total.labels(*labels).set(card.memory_total_mib * MIB)

    def _used(self, pool: str) -> dict[str, set[int]]:
        """GPU indices held by this gateway's workers on each host of ``pool`` (a sleeping worker holds its GPU)."""
        used: dict[str, set[int]] = {}
        for worker in self.fleet.records.values():
            if worker.pool == pool and worker.info is not None and worker.state in HOLDS_GPU:
                used.setdefault(worker.info.host, set()).update(worker.info.gpu_indices)
        return used
