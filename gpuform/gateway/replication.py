"""How one gateway replica keeps up with the others' records, each reconcile tick (PostgreSQL stores only; the
rules are in :mod:`gpuform.gateway.shared_state`, which this carries out on a :class:`~gpuform.gateway.runtime.
Runtime`): endpoints put or removed through another replica's admin API, the leader's view published for the
followers, and the stops of a removed endpoint's workers, which only the leader makes."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gpuform.gateway.shared_state import VIEW_KEY, endpoint_changes, take_view, view_of
from gpuform.gateway.sharing import SharedEndpointRows
from gpuform.gateway.states import WorkerState

if TYPE_CHECKING:
    from gpuform.gateway.runtime import Runtime

log = logging.getLogger("gpuform.gateway")
STOP_WAIT = 30.0  # how long a follower removing an endpoint waits for the leader to stop its workers


class Replication:
    def __init__(self, rt: Runtime, rows: SharedEndpointRows) -> None:
        self.rt = rt
        self.rows = rows
        self.view = ""  # the leader's view as this replica last published or took it
        self.removing: set[str] = set()  # endpoints this replica's admin API is removing now

    def pull(self, leading: bool) -> None:
        """Each tick of a replica: take the endpoints other replicas put or removed; a follower also takes the
        leader's view (conditions, decisions) when it changed."""
        self.take_endpoints(leading)
        if leading:
            return
        text = self.rt.store.get_meta(VIEW_KEY)
        if text and text != self.view:
            take_view(text, self.rt.fleet.conditions, self.rt.reconciler.decisions)
            self.view = text

    def publish(self) -> None:
        """The leader's tick: publish its view of the endpoints when it changed."""
        rt = self.rt
        text = view_of(list(rt.endpoints), rt.fleet.conditions, rt.reconciler.decisions)
        if text != self.view:
            rt.store.set_meta(VIEW_KEY, text)
            self.view = text

    def take_endpoints(self, leading: bool) -> None:
        """Take what other replicas' admin APIs stored: one query compares revisions, changed endpoints are
        read. The leader also stops the workers of endpoints that are gone (removed through a follower)."""
        rt = self.rt
        stored = self.rows.revisions()
        known = {n: (ep.revision, ep.deleting) for n, ep in rt.endpoints.items()}
        changes = endpoint_changes(known, stored, self.removing)
        for name in changes.load:
            found = self.rows.get(name)
            if found is not None:
                rt.take_endpoint(name, found)
                rt.endpoints[name].deleting = stored[name][1]  # being removed through another replica
                log.info("endpoint %s taken at revision %s%s (stored through another replica)", name,
                         found.revision, ", being removed," if stored[name][1] else "")
        for name in changes.removed:
            self._removed_elsewhere(name)
        if leading:  # its own removals already deleted from the store: begun as a follower, it leads now
            self._stop_unowned(frozenset(self.removing - stored.keys()))

    def _removed_elsewhere(self, name: str) -> None:
        rt = self.rt
        ep = rt.endpoints.pop(name)
        ep.deleting = True  # a request still holding the record stops using it
        failed = rt.queue.fail_endpoint(name, f"endpoint {name} was removed")
        rt.reconciler.decisions.pop(name, None)
        rt.metrics.forget_endpoint(name)
        log.info("endpoint %s removed through another replica: %d open job(s) here failed", name, failed)

    def _stop_unowned(self, gone: frozenset[str] = frozenset()) -> None:
        """The leader stops the workers of endpoints no replica serves any more, and of ``gone``: removed from the
        store by this replica's admin API while it followed (it leads now, so no other replica will)."""
        fleet = self.rt.fleet
        for worker in list(fleet.records.values()):
            held = worker.live or worker.state == WorkerState.SLEEPING
            unowned = worker.endpoint not in self.rt.endpoints or worker.endpoint in gone
            if held and unowned and worker.id not in fleet.stopping_here:
                fleet.spawn(fleet.stop(worker, "endpoint removed", grace=5.0))

    async def stopped_by_leader(self, name: str) -> None:
        """A follower removing ``name``: wait until the leader has stopped its workers (or :data:`STOP_WAIT`)."""
        sharing = self.rt.fleet.sharing
        assert sharing is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WAIT
        while any(w.endpoint == name for w in sharing.rows.current()):  # this replica's own tick, if it leads now
            if loop.time() > deadline:
                log.warning("endpoint %s removed; the leader has not stopped all its workers after %gs", name,
                            STOP_WAIT)
                return
            await asyncio.sleep(0.2)
