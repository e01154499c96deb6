"""Staging a volume onto a pool's SSH hosts: every file of the source verified on every host, copied to each
host at most once, hosts worked on in parallel (at most ``parallel_hosts`` at a time).

1. open: each host reports what it already holds (recorded manifest; a same-size file it has not recorded is
   checksummed there), so a staging that stopped part-way resumes where it stopped.
2. seed: each file no host holds leaves this machine once, to one host (the files spread over the hosts).
3. spread: every host fetches what it still lacks from a host that holds it, over SSH with a key made for
   this staging (``peers.PeerLink``; removed after), or from this machine when ``host_to_host`` is off, the
   pool is not all SSH hosts, or a host-to-host copy fails.
Every received file is checksummed on its host before it is moved into place.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from gpuform import faults
from gpuform.errors import GpuformError, ProviderError
from gpuform.provider import Attrs, ProviderContext, VolumeSpec
from gpuform.providers.common.peers import PeerLink
from gpuform.providers.common.remote_volume import PARTIAL, HostVolume, source_of
from gpuform.providers.common.shell import Shell
from gpuform.providers.common.ssh import Connection
from gpuform.util.manifests import Manifest

BATCH_FILES = 16
BATCH_BYTES = 64 << 20


@dataclass
class Tally:
    copied: int = 0
    from_this_machine: int = 0
    from_hosts: int = 0
    bytes_from_this_machine: int = 0


class Staging:
    def __init__(self, ctx: ProviderContext, volume: VolumeSpec, shells: Mapping[str, Shell]) -> None:
        self.ctx, self.volume = ctx, volume
        self.src, self.source = source_of(ctx, volume)
        self.hosts = {n: HostVolume(n, s, volume.path, self.source) for n, s in shells.items()}
        self.tally = {n: Tally() for n in shells}
        self._lock = threading.Lock()
        self._turn = itertools.count()

    def run(self) -> Attrs:
        try:
            return self._run()
        except BaseException:
            for host in (h for h in self.hosts.values() if h.opened):  # what is verified, for the next apply
                with contextlib.suppress(GpuformError):
                    host.record(force=True)
            raise

    def _run(self) -> Attrs:
        self._each(lambda h: h.open())
        conns = {n: s for n, s in ((n, h.conn) for n, h in self.hosts.items()) if isinstance(s, Connection)}
        if self.volume.host_to_host and len(self.hosts) > 1 and len(conns) == len(self.hosts) and self._missing():
            self._seed()
            self._host_to_host(PeerLink(conns, self.volume.path, f"{self.ctx.lineage}:{self.volume.path}"))
        else:
            self._each(lambda h: self._upload(h, h.todo()))
        self._each(lambda h: h.finish())
        return {"hosts": {n: {"files": len(self.source), **asdict(t)} for n, t in self.tally.items()}}

    def _host_to_host(self, link: PeerLink) -> None:
        try:
            link.open()
        except GpuformError as exc:
            self.ctx.progress(f"host-to-host copy unavailable ({exc}); copying from this machine instead")
            link.close()
            self._each(lambda h: self._upload(h, h.todo()))
            return
        try:
            self._each(lambda h: self._spread(h, link))
        finally:
            for failure in link.close():
                self.ctx.progress(f"could not remove the staging key from {failure}; it expires in 2 days")

    def _missing(self) -> bool:
        return any(h.todo() for h in self.hosts.values())

    def _each(self, fn: Callable[[HostVolume], object]) -> None:
        """``fn`` on every host, at most ``parallel_hosts`` at once; the first failure is raised after all end."""
        failures: list[BaseException] = []

        def call(host: HostVolume) -> None:
            try:
                fn(host)
            except Exception as exc:  # re-raised below, once every host has finished
                failures.append(exc)

        with ThreadPoolExecutor(max_workers=max(1, min(self.volume.parallel_hosts, len(self.hosts)))) as pool:
            list(pool.map(call, self.hosts.values()))
        if failures:
            raise failures[0]

    def _seed(self) -> None:
        """Each file no host holds goes from this machine to one host (largest first, to the least loaded)."""
        nobody = sorted({r for h in self.hosts.values() for r in h.todo()}
                        - {r for h in self.hosts.values() for r in h.have}, key=lambda r: -self.source[r][0])
        load = {n: 0 for n in self.hosts}
        plan: dict[str, list[str]] = {n: [] for n in self.hosts}
        for rel in nobody:
            target = min(load, key=lambda n: (load[n], n))
            plan[target].append(rel)
            load[target] += self.source[rel][0] + 1
        self._each(lambda h: self._upload(h, sorted(plan[h.name])))

    def _upload(self, host: HostVolume, rels: list[str]) -> None:
        """Copy ``rels`` from this machine to ``host``, in checksummed batches."""
        host.make_parents(rels)
        total, done = sum(self.source[r][0] for r in rels), 0
        label = f"{host.conn.target.address}:{host.path}"
        for batch in _batches(rels, self.source):
            for rel in batch:
                self._check_cancelled()
                host.conn.put(self.src / rel, host.full(rel) + PARTIAL, callback=self._progress(label, done, total))
                done += self.source[rel][0]
            self._placed(host, batch, True)

    def _progress(self, label: str, base: int, total: int) -> Callable[[int, int], None]:
        return lambda sent, _size: self.ctx.transfer(label, base + sent, total)

    def _spread(self, host: HostVolume, link: PeerLink) -> None:
        """Fetch what ``host`` lacks from hosts that hold it; from this machine when that fails."""
        todo = host.todo()
        turn = sorted(self.hosts).index(host.name) * len(todo) // len(self.hosts)
        todo = todo[turn:] + todo[:turn]  # each host starts elsewhere: the servers share the work
        host.make_parents(todo)
        total, done = sum(self.source[r][0] for r in todo), 0
        for batch in _batches(todo, self.source):
            for i, rel in enumerate(batch):
                self._check_cancelled()
                server = self._server_for(rel, host.name)
                try:
                    link.send(server, host.name, rel)
                except GpuformError as exc:
                    self.ctx.progress(f"{host.name}: host-to-host copy from {server} failed ({exc}); "
                                      "copying from this machine instead")
                    self._placed(host, batch[:i], False)
                    self._upload(host, host.todo())
                    return
                done += self.source[rel][0]
                self.ctx.transfer(f"{host.conn.target.address}:{host.path}", done, total)
            self._placed(host, batch, False)

    def _server_for(self, rel: str, receiver: str) -> str:
        with self._lock:
            holders = sorted(n for n, h in self.hosts.items() if rel in h.have and n != receiver)
        if not holders:
            raise ProviderError(f"no host holds {rel} to copy it from", "Run apply again.")
        return holders[next(self._turn) % len(holders)]

    def _placed(self, host: HostVolume, rels: list[str], from_here: bool) -> None:
        if not rels:
            return
        host.place(rels)
        size = sum(self.source[r][0] for r in rels)
        with self._lock:
            t = self.tally[host.name]
            t.copied += len(rels)
            if from_here:
                t.from_this_machine += len(rels)
                t.bytes_from_this_machine += size
            else:
                t.from_hosts += len(rels)
        faults.point("volume.placed")

    def _check_cancelled(self) -> None:
        if self.ctx.cancelled.is_set():
            raise ProviderError("volume staging interrupted", "Run apply again to finish copying; files already "
                                "verified on a host are kept.")


def _batches(rels: list[str], source: Manifest) -> list[list[str]]:
    out: list[list[str]] = [[]]
    size = 0
    for rel in rels:
        if out[-1] and (len(out[-1]) >= BATCH_FILES or size + source[rel][0] > BATCH_BYTES):
            out.append([])
            size = 0
        out[-1].append(rel)
        size += source[rel][0]
    return [b for b in out if b]


def stage(ctx: ProviderContext, volume: VolumeSpec, shells: Mapping[str, Shell]) -> Attrs:
    """Stage ``volume`` from its source onto the reachable hosts ``shells``; the per-host tallies."""
    return Staging(ctx, volume, shells).run()

