"""The reconcile loop: every ``reconcile_interval`` it sweeps the queue's timers, notices dead workers,
asks the autoscaler what each endpoint needs, carries that decision out through the fleet, and accrues
billing. Every decision (how many workers, which to wake, sleep or stop, and why) is made by the pure
:func:`gpuform.gateway.autoscaler.desired_workers`; nothing here decides.

Only the leading replica does any of that (``leading``; :mod:`gpuform.gateway.leader`): on becoming leader it
first adopts every live worker the store has and settles the ones left by earlier gateways
(:meth:`lead`), and it stops deciding the moment it no longer leads. A follower's tick only takes what the
store says of the workers (its status and worker routes read them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gpuform.errors import Fenced, StoreError
from gpuform.gateway.autoscaler import Decision, Stats, desired_workers, policy_of, remember
from gpuform.gateway.demand import Demand
from gpuform.gateway.fleet import Clock, Fleet
from gpuform.gateway.metering import Ledger, today
from gpuform.gateway.metrics import WORKER_STATES, Metrics
from gpuform.gateway.outage import RepeatedFailure
from gpuform.gateway.queue import JobQueue
from gpuform.gateway.states import WorkerState

if TYPE_CHECKING:
    from gpuform.gateway.runtime import EndpointRecord

log = logging.getLogger("gpuform.reconciler")
OBSERVE_EVERY = 2  # ticks between provider listings
ORPHANS_EVERY = 30  # replicas: ticks between the leader's sweeps for orphans (a deposed leader's late start)
START_GRACE = 120.0  # replicas: seconds a start adopted from another leader is given before it is settled
Endpoints = Callable[[], list["EndpointRecord"]]


class Reconciler:
    def __init__(self, endpoints: Endpoints, fleet: Fleet, queue: JobQueue, ledger: Ledger, metrics: Metrics,
                 interval: float, clock: Clock, leading: Callable[[], bool] = lambda: True) -> None:
        self.endpoints = endpoints
        self.fleet = fleet
        self.queue = queue
        self.ledger = ledger
        self.metrics = metrics
        self.interval = interval
        self.clock = clock
        self.ticks = 0
        self.decisions: dict[str, Decision] = {}
        self.spent: dict[str, float] = {}  # per capped endpoint: today's spend as the last decision read it
        self.demand: dict[str, Demand] = {}  # per endpoint: idle gaps and load windows (see autoscaler.remember)
        self._task: asyncio.Task[None] | None = None
        self.active = False  # decisions are carried out (set by start; a test driving ticks sets it itself)
        self._stopping = False
        self.leading = leading
        self._adopt = False  # leadership gained: the next tick adopts the store's workers before deciding
        self._observing: dict[str, asyncio.Task[None]] = {}  # what -> its provider listing in flight
        # replicas (set by the runtime): each tick first takes what other replicas stored (endpoints; on a
        # follower, the leader's view), and the leader's tick ends by publishing its view (gateway/shared_state.py)
        self.pull: Callable[[bool], None] = lambda leading: None
        self.publish: Callable[[], None] = lambda: None
        self._store_failed = RepeatedFailure(log, logging.WARNING)

    def lead(self) -> None:
        """This replica now leads (called by its leadership): adopt, then decide, from the next tick."""
        self._adopt = True

    def follow(self) -> None:
        """This replica no longer leads: nothing more is decided (``leading`` already says so)."""
        self._adopt = False

    def deciding(self) -> bool:
        return self.leading() and not self._adopt and not self._stopping

    def scale_now(self, ep: EndpointRecord) -> None:
        """Scale ``ep`` now (a job arrived and no worker is live) rather than after a tick that may be
        waiting on a provider (listing workers over SSH can take seconds); a cold start can't wait."""
        if ep.deleting or not self.active or not self.deciding():
            return
        if self.fleet.condition(ep.name).status != "OK":
            return  # no capacity, backing off or capped: the tick retries at its pace, not once per request
        self.scale(ep, self.clock())

    def start(self) -> None:
        self.active = True
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            try:
                await self.tick(self.clock())
            except StoreError as exc:  # the database is down: the next tick tries again (no traceback per tick)
                self._store_failed("reconcile tick: %s", exc.message)
            except Exception:  # the loop must survive anything one tick hits; it is logged
                log.exception("reconcile tick failed")
            await asyncio.sleep(max(0.05, self.interval - (loop.time() - started)))

    async def tick(self, now: float) -> None:
        self.ticks += 1
        self.pull(self.leading())
        if not self.leading():  # a follower (replicas only: a lone gateway always leads)
            self._take_recorded()
            self._read_spend(now)
            self._gauges()
            return
        if self._adopt:
            await self._adopt_workers()
        else:
            self._take_recorded()
        self.queue.sweep()
        for ep in self.endpoints():
            if ep.deleting:
                continue
            if self.ticks % OBSERVE_EVERY == 0:
                self._observe(ep.name)
            if self.ticks % ORPHANS_EVERY == 0 and self.fleet.sharing is not None:
                self._background(f"orphans:{ep.name}", self.fleet.sweep_orphans(ep.name, ep.spec.pool, START_GRACE))
            await self.fleet.check_readiness(ep, now)
            self.scale(ep, now)
        if self.leading():
            for worker in list(self.fleet.records.values()):
                if worker.live or worker.state in (WorkerState.STOPPING, WorkerState.SLEEPING):
                    self.ledger.accrue(worker, now)  # a sleeping worker still holds its GPU
            self.publish()
        self._gauges()

    def _observe(self, endpoint: str) -> None:
        self._background(f"observe:{endpoint}", self.fleet.observe(endpoint))

    def _background(self, key: str, work: Coroutine[Any, Any, None]) -> None:
        """Provider listings run in the background, one per ``key`` at a time: a host that does not answer (SSH
        waits out its connect timeout) must not hold up the sweep of lapsed leases or the starts of replacements
        in the ticks meanwhile."""
        running = self._observing.get(key)
        if running is None or running.done():
            self._observing[key] = self.fleet.spawn(work)
        else:
            work.close()  # the previous one is still waiting on its provider

    def _read_spend(self, now: float) -> None:
        """A follower's spend gauges: today's spend of each capped endpoint, from the ledger in the store."""
        for ep in self.endpoints():
            if ep.spec.spend_limit_per_day is not None:
                self.spent[ep.name] = self.ledger.spent(ep.name, today(now))

    def _take_recorded(self) -> None:
        """Take what other replicas recorded of the workers (nothing to take for a lone gateway)."""
        if self.fleet.refresh():
            for ep in self.endpoints():
                self.fleet.mark_stale(ep)

    async def _adopt_workers(self) -> None:
        """Leadership gained: every live worker in the store is ours to manage, workers of this lineage no
        record knows are stopped, and starts interrupted by the previous leader are settled."""
        self.fleet.adopt()
        grace = START_GRACE if self.fleet.sharing is not None else 0.0
        for ep in self.endpoints():
            self.fleet.mark_stale(ep)
            # in the background: the records come from the store, so deciding need not wait for a listing that
            # may hang on the host the old leader was lost with
            self._background(f"orphans:{ep.name}", self.fleet.sweep_orphans(ep.name, ep.spec.pool, grace))
        self._adopt = False
        log.info("adopted %d live worker(s)", sum(1 for w in self.fleet.records.values() if w.live))

    def stats(self, ep: EndpointRecord, now: float) -> Stats:
        q = self.queue.stats(ep.name)
        cond = self.fleet.condition(ep.name)
        workers = tuple(w.view() for w in self.fleet.of(ep.name))
        spent = self.ledger.spent(ep.name, today(now)) if ep.spec.spend_limit_per_day is not None else 0.0
        self.spent[ep.name] = spent
        return Stats(queued=q.scalable_queued, running_jobs=q.running, oldest_wait=q.oldest_wait, workers=workers,
                     spent_today=spent, backoff_until=cond.backoff_until, backoff_reason=cond.message,
                     woke_at=q.woke_at)

    def scale(self, ep: EndpointRecord, now: float) -> Decision:
        """Decide (purely) and carry the decision out (only while this replica leads)."""
        stats, policy = self.stats(ep, now), policy_of(ep.spec)
        demand = remember(self.demand.get(ep.name, Demand()), stats, policy, now)
        self.demand[ep.name] = demand
        decision = desired_workers(replace(stats, demand=demand), policy, now)
        self.decisions[ep.name] = decision
        cond = self.fleet.condition(ep.name)
        if decision.blocked == "SPEND_CAP":
            cond.status, cond.message = "SPEND_CAP", decision.reasons[0]
        elif cond.status == "SPEND_CAP":
            cond.status, cond.message = "OK", ""
        if self.leading():
            self._carry_out(ep, decision)
        return decision

    def _carry_out(self, ep: EndpointRecord, decision: Decision) -> None:
        records = self.fleet.records
        for worker_id in decision.wake:
            self.fleet.wake(records[worker_id])
        for _ in range(decision.start):
            try:
                self.fleet.start(ep)
            except Fenced as exc:  # deposed since it last checked: the new leader decides now
                log.warning("%s", exc.message)
                return
        for worker_id in decision.sleep:
            self.fleet.sleep(records[worker_id])
        for worker_id, reason in decision.retire:
            self.fleet.spawn(self.fleet.stop(records[worker_id], reason))

    def _gauges(self) -> None:
        for ep in self.endpoints():
            counts = {WorkerState(state): 0 for state in WORKER_STATES}
            for w in self.fleet.of(ep.name):
                if w.state in counts:
                    counts[w.state] += 1
            for state, n in counts.items():
                self.metrics.workers.labels(ep.name, state).set(n)
            stats = self.queue.stats(ep.name)
            self.metrics.queue_depth.labels(ep.name).set(stats.queued)
            self.metrics.running.labels(ep.name).set(stats.running)
            self.metrics.set_condition(ep.name, self.fleet.condition(ep.name).status)
            self.metrics.crashes.labels(ep.name)  # present (at 0) before the first crash, so rate() sees it
            if ep.spec.spend_limit_per_day is not None:  # stats() read today's spend for the cap already
                self.metrics.spend_today.labels(ep.name).set(self.spent.get(ep.name, 0.0))
                self.metrics.spend_limit.labels(ep.name).set(ep.spec.spend_limit_per_day)
