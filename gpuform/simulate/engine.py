"""The discrete-event loop: a simulated clock, arrivals, worker start-ups, job completions and reconcile ticks.

Every scaling decision is :func:`gpuform.gateway.autoscaler.desired_workers`, called where the gateway calls
it and with the stats the gateway would build, after :func:`~gpuform.gateway.autoscaler.remember` has folded
them into the endpoint's remembered demand as the reconciler does (:class:`~gpuform.gateway.reconciler.Reconciler`):

- at every reconcile tick (``t0 + k * reconcile_interval``), after which billing accrues;
- when a request arrives, no worker is waiting for work and no worker is live (the queue's "unserved"
  signal: scale from zero now rather than at the next tick), unless the spending cap holds scale-up.

Workers behave as the gateway sees them: ``initializing`` from the request until their first contact (the
cold start), then they pull up to ``concurrency`` jobs; a job arriving goes to the worker that has waited
longest for work (the queue's long-poll order); a worker that finishes a job takes the next at once.
Events at the same instant run in this order: worker events (ready, job done), arrivals, the tick. A worker
is billed from its request until it stops (start-up included, as the ledger does); the run ends when the
last request completes, and billing is cut there.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from gpuform.gateway.autoscaler import Decision, Stats, WorkerView, desired_workers, remember
from gpuform.gateway.demand import Demand
from gpuform.gateway.states import WorkerState
from gpuform.simulate.model import Settings

Action = Literal["start", "stop", "sleep", "wake"]
INF = math.inf
_READY, _DONE = 0, 1


class _Worker:
    __slots__ = ("asleep_since", "free_since", "id", "idle_since", "jobs", "order", "requested_at", "state",
                 "stopped_at", "waking")

    def __init__(self, order: int, now: float) -> None:
        self.id = f"w{order}"
        self.order = order
        self.requested_at = now
        self.state = WorkerState.INITIALIZING
        self.idle_since: float | None = None
        self.asleep_since: float | None = None
        self.stopped_at: float | None = None
        self.jobs = 0
        self.free_since = now
        self.waking = False

    def view(self) -> WorkerView:
        return WorkerView(self.id, self.state, self.idle_since, False, self.asleep_since)

    def move(self, state: WorkerState, now: float) -> None:
        self.state = state
        self.idle_since = now if state == WorkerState.IDLE else None
        self.asleep_since = now if state == WorkerState.SLEEPING else None


@dataclass
class Run:
    """What one simulated policy did. ``actions``: (time, action, worker number) in order; ``delays``: per
    request, arrival to start of execution (``inf`` when it never started); ``timeline``: at each tick
    (time, live workers, ready workers, queued, running) when asked for."""

    t0: float
    end: float
    actions: list[tuple[float, Action, int]] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    worker_seconds: float = 0.0
    cold_starts: int = 0
    wakes: int = 0
    peak_workers: int = 0
    timeline: list[tuple[float, int, int, int, int]] = field(default_factory=list)


class Simulation:
    """One replay of ``arrivals`` (epoch seconds, sorted) with per-request ``service`` times."""

    def __init__(self, arrivals: list[float], service: list[float], settings: Settings) -> None:
        self.arrivals, self.service, self.s = arrivals, service, settings
        self.policy = settings.policy
        self.rng = random.Random(settings.seed)
        self.t0 = arrivals[0] if settings.start is None else min(settings.start, arrivals[0])
        self.now = self.t0
        self.run_ = Run(self.t0, self.t0, delays=[INF] * len(arrivals))
        self.events: list[tuple[float, int, int, _Worker, int]] = []  # (time, seq, kind, worker, job)
        self.seq = 0
        self.queue: list[int] = []  # job indices, FIFO from self.head
        self.head = 0
        self.running = 0
        self.workers: list[_Worker] = []  # live or sleeping, in start order
        self.by_id: dict[str, _Worker] = {}
        self.ended: list[_Worker] = []
        self.capped = False
        self.warming = False
        self.spent: dict[str, float] = {}
        self.billed: dict[str, float] = {}
        self.woke_at = 0.0  # the queue's: last arrival while no job was queued or running
        self.demand = Demand()  # what the reconciler remembers of the endpoint (autoscaler.remember)

    # ---- the loop -----------------------------------------------------------------------------------

    def run(self) -> Run:
        t0, interval, n = self.t0, self.s.reconcile_interval, len(self.arrivals)
        self.warming = self.s.warm_start
        self.tick(t0)
        self.warming = False
        until = -INF if self.s.until is None else self.s.until
        horizon = max(until, self.arrivals[-1] + max(3600.0, self.arrivals[-1] - t0))
        i, k = 0, 1
        next_tick = t0 + interval
        while i < n or self.running or self.head < len(self.queue) or next_tick <= until:
            t_event = self.events[0][0] if self.events else INF
            t_arrival = self.arrivals[i] if i < n else INF
            if t_event <= t_arrival and t_event <= next_tick:
                self._event(heapq.heappop(self.events))
            elif t_arrival <= next_tick:
                self.now = t_arrival
                self.arrive(i)
                i += 1
            else:
                if next_tick > horizon:
                    break
                self.tick(next_tick)
                k += 1
                next_tick = t0 + k * interval
        return self._finish()

    def _event(self, event: tuple[float, int, int, _Worker, int]) -> None:
        at, _, kind, worker, job = event
        self.now = at
        if kind == _READY:
            self.ready(worker)
        else:
            self.done(worker, job)

    def _push(self, at: float, kind: int, worker: _Worker, job: int = -1) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, worker, job))

    # ---- what happens -------------------------------------------------------------------------------

    def arrive(self, job: int) -> None:
        if self.head == len(self.queue) and not self.running:
            self.woke_at = self.now
        self.queue.append(job)
        waiting = self._waiting()
        if waiting is not None:
            self.take(waiting)
        elif not any(w.state in (WorkerState.INITIALIZING, WorkerState.IDLE, WorkerState.RUNNING)
                     for w in self.workers) and not self.capped:
            self.decide(self.now)  # the gateway's scale_now

    def _waiting(self) -> _Worker | None:
        """The worker that has waited longest for work with a free slot (the queue's long-poll order)."""
        best: _Worker | None = None
        for w in self.workers:
            if w.state in (WorkerState.IDLE, WorkerState.RUNNING) and w.jobs < self.s.concurrency and \
                    not w.waking and (best is None or w.free_since < best.free_since):
                best = w
        return best

    def take(self, worker: _Worker) -> None:
        """``worker`` pulls queued jobs into its free slots."""
        now = self.now
        while self.head < len(self.queue) and worker.jobs < self.s.concurrency:
            job = self.queue[self.head]
            self.head += 1
            self.run_.delays[job] = now - self.arrivals[job]
            worker.jobs += 1
            self.running += 1
            self._push(now + self.service[job], _DONE, worker, job)
        if self.head > 4096 and self.head * 2 > len(self.queue):
            del self.queue[:self.head]
            self.head = 0
        if worker.jobs and worker.state != WorkerState.RUNNING:
            worker.move(WorkerState.RUNNING, now)
        worker.free_since = now

    def ready(self, worker: _Worker) -> None:
        if worker.state != WorkerState.INITIALIZING:
            return
        worker.waking = False
        worker.move(WorkerState.IDLE, self.now)
        self.take(worker)

    def done(self, worker: _Worker, job: int) -> None:
        worker.jobs -= 1
        self.running -= 1
        if worker.jobs == 0:
            worker.move(WorkerState.IDLE, self.now)
        self.take(worker)

    # ---- decisions ----------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self.now = now
        self.decide(now)
        if self.policy.spend_limit_per_day is not None:
            for w in self.workers:
                self._accrue(w, now)
        if self.s.timeline:
            live = sum(1 for w in self.workers if w.state != WorkerState.SLEEPING)
            ready = sum(1 for w in self.workers if w.state in (WorkerState.IDLE, WorkerState.RUNNING))
            self.run_.timeline.append((now, live, ready, len(self.queue) - self.head, self.running))

    def stats(self, now: float) -> Stats:
        queued = len(self.queue) - self.head
        oldest = now - self.arrivals[self.queue[self.head]] if queued else 0.0
        return Stats(queued=queued, running_jobs=self.running, oldest_wait=oldest,
                     workers=tuple(w.view() for w in self.workers), spent_today=self._spent_today(now),
                     woke_at=self.woke_at, demand=self.demand)

    def decide(self, now: float) -> Decision:
        """Ask the autoscaler, then carry its decision out as the reconciler does."""
        stats = self.stats(now)
        self.demand = remember(self.demand, stats, self.policy, now)
        decision = desired_workers(replace(stats, demand=self.demand), self.policy, now)
        self.capped = decision.blocked == "SPEND_CAP"
        for worker_id in decision.wake:
            self._wake(self.by_id[worker_id])
        for _ in range(decision.start):
            self._start()
        for worker_id in decision.sleep:
            self._sleep(self.by_id[worker_id])
        for worker_id, _reason in decision.retire:
            self._stop(self.by_id[worker_id])
        return decision

    def _start(self) -> None:
        worker = _Worker(len(self.by_id) + len(self.ended) + 1, self.now)
        self.workers.append(worker)
        self.by_id[worker.id] = worker
        self.run_.actions.append((self.now, "start", worker.order))
        self.run_.peak_workers = max(self.run_.peak_workers, len(self.workers))
        if self.warming:
            self.ready(worker)
            return
        self.run_.cold_starts += 1
        self._push(self.now + self.s.cold_start.sample(self.rng), _READY, worker)

    def _wake(self, worker: _Worker) -> None:
        worker.move(WorkerState.INITIALIZING, self.now)
        worker.waking = True
        self.run_.wakes += 1
        self.run_.actions.append((self.now, "wake", worker.order))
        self._push(self.now + self.s.wake_time, _READY, worker)

    def _sleep(self, worker: _Worker) -> None:
        worker.move(WorkerState.SLEEPING, self.now)
        self.run_.actions.append((self.now, "sleep", worker.order))

    def _stop(self, worker: _Worker) -> None:
        self._accrue(worker, self.now)
        worker.move(WorkerState.STOPPED, self.now)
        worker.stopped_at = self.now
        self.workers.remove(worker)
        del self.by_id[worker.id]
        self.ended.append(worker)
        self.run_.actions.append((self.now, "stop", worker.order))

    # ---- billing ------------------------------------------------------------------------------------

    def _accrue(self, worker: _Worker, until: float) -> None:
        """The ledger's accrual (only needed for the spending cap): seconds since last billed, by UTC day."""
        price = self.s.price_per_second
        start = self.billed.get(worker.id, worker.requested_at)
        if price is None or until <= start:
            return
        while start < until:
            day = datetime.fromtimestamp(start, UTC)
            midnight = day.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() + 86400
            cut = min(until, midnight)
            key = day.strftime("%Y-%m-%d")
            self.spent[key] = self.spent.get(key, 0.0) + (cut - start) * price
            start = cut
        self.billed[worker.id] = until

    def _spent_today(self, now: float) -> float:
        if self.policy.spend_limit_per_day is None:
            return 0.0
        return self.spent.get(datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d"), 0.0)

    def _finish(self) -> Run:
        run, end = self.run_, max(self.now, -INF if self.s.until is None else self.s.until)
        run.end = end
        for w in (*self.ended, *self.workers):
            stop = end if w.stopped_at is None else min(w.stopped_at, end)
            run.worker_seconds += max(0.0, stop - w.requested_at)
        return run


def simulate(arrivals: list[float], service: list[float], settings: Settings) -> Run:
    """Replay ``arrivals`` (epoch seconds, sorted, at least one) under ``settings``."""
    return Simulation(arrivals, service, settings).run()
