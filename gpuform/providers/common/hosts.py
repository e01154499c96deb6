"""A pool's SSH hosts: one verified connection each, work fanned out in parallel, GPU inventory.

An unreachable host is reported with its address and the reason; the others proceed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gpuform.config.schema import SSHHost
from gpuform.errors import GpuformError, SSHError
from gpuform.provider import GpuUsage, HostInventory
from gpuform.providers.common import sshconfig
from gpuform.providers.common.gpus import GPU_USAGE_ARGS, NVIDIA_SMI_ARGS, parse_gpu_usage, parse_nvidia_smi
from gpuform.providers.common.ssh import Connection, ConnectionPool, Target

T = TypeVar("T")
INVENTORY_TTL = 5.0


@dataclass(frozen=True)
class Host:
    name: str
    spec: SSHHost
    target: Target


class SSHHosts:
    """``ssh_config``: the file the hosts' HostName, Port, User, IdentityFile and ProxyJump come from (see
    :mod:`~gpuform.providers.common.sshconfig`); ``where`` names the pool in its errors."""

    def __init__(self, hosts: Sequence[SSHHost], known_hosts: str, trust_on_first_use: bool, timeout: float,
                 nvidia_smi: str = "nvidia-smi", ssh_config: Path | None = None, where: str = "") -> None:
        defaults = sshconfig.Defaults(known_hosts, trust_on_first_use, timeout)
        targets = sshconfig.resolve_all(hosts, ssh_config, defaults, where)
        self.hosts = [Host(h.label, h, t) for h, t in zip(hosts, targets, strict=True)]
        self.by_name = {h.name: h for h in self.hosts}
        self.pool = ConnectionPool()
        self.nvidia_smi = nvidia_smi
        self._inventory: tuple[float, list[HostInventory]] | None = None

    def conn(self, host: str | Host) -> Connection:
        target = (self.by_name[host] if isinstance(host, str) else host).target
        return self.pool.get(target)

    def each(self, fn: Callable[[Host], T], hosts: Sequence[Host] | None = None) -> tuple[dict[str, T], dict[str, str]]:
        """Run ``fn`` on every host in parallel: (results by host, errors of unreachable hosts). Any other
        failure is raised (the first one): only an unreachable host is skipped so the others proceed."""
        chosen = list(hosts if hosts is not None else self.hosts)
        results: dict[str, T] = {}
        errors: dict[str, str] = {}
        failures: list[GpuformError] = []

        def call(host: Host) -> None:
            try:
                results[host.name] = fn(host)
            except SSHError as exc:
                if exc.unreachable:
                    errors[host.name] = exc.message
                else:
                    failures.append(exc)
            except GpuformError as exc:
                failures.append(exc)

        with ThreadPoolExecutor(max_workers=max(1, min(16, len(chosen)))) as ex:
            list(ex.map(call, chosen))
        if failures:
            raise failures[0]
        return results, errors

    def inventory(self, fresh: bool = False) -> list[HostInventory]:
        now = time.monotonic()
        if not fresh and self._inventory is not None and now - self._inventory[0] < INVENTORY_TTL:
            return self._inventory[1]
        found, errors = self.each(self._host_inventory)
        out = [found.get(h.name) or HostInventory(h.name, False, reason=errors.get(h.name, "unknown"),
                                                  cordoned=h.spec.cordon) for h in self.hosts]
        self._inventory = (now, out)
        return out

    def _host_inventory(self, host: Host) -> HostInventory:
        conn = self.conn(host)
        result = conn.run([self.nvidia_smi, *NVIDIA_SMI_ARGS], check=False)
        if result.code == 127 or b"not found" in result.stderr:
            return HostInventory(host.name, True, cordoned=host.spec.cordon)  # a CPU host
        if result.code != 0:
            return HostInventory(host.name, True, reason=f"nvidia-smi exited {result.code}: "
                                 f"{result.stderr.decode(errors='replace')[-200:]}", cordoned=host.spec.cordon)
        try:
            gpus = tuple(parse_nvidia_smi(result.text))
        except ValueError as exc:
            raise SSHError(f"cannot parse nvidia-smi output on {host.name}: {exc}",
                           "Check the driver installation on that host.", host.name) from exc
        return HostInventory(host.name, True, gpus=gpus, cordoned=host.spec.cordon)

    def gpu_usage(self) -> list[GpuUsage]:
        """Every reachable host's GPUs as nvidia-smi reports them now (nothing from a host without it)."""
        def usage(host: Host) -> list[GpuUsage]:
            result = self.conn(host).run([self.nvidia_smi, *GPU_USAGE_ARGS], check=False)
            return parse_gpu_usage(result.text, host.name) if result.code == 0 else []

        reachable = [h for h in self.hosts if h.name in {i.host for i in self.inventory() if i.reachable}]
        found, _errors = self.each(usage, reachable)
        return [g for gpus in found.values() for g in gpus]

    def usable(self) -> list[HostInventory]:
        return [h for h in self.inventory() if h.reachable and not h.cordoned]

    def close(self) -> None:
        self.pool.close()
