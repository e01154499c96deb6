"""The reconcile loop: every ``reconcile_interval`` it sweeps the queue's timers, notices dead workers,
asks the autoscaler how many workers each endpoint needs, starts and stops them, and accrues billing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from gpuform.gateway.autoscaler import IDLE, LIVE, SLEEPING, Decision, ScalingPolicy, Stats, Window, desired_workers
from gpuform.gateway.metering import today

if TYPE_CHECKING:
    from gpuform.gateway.runtime import EndpointRecord, Runtime

log = logging.getLogger("gpuform.reconciler")
OBSERVE_EVERY = 2  # ticks between provider listings


def policy_of(spec: dict[str, Any]) -> ScalingPolicy:
    scaling = spec.get("scaling") or {}
    schedule = spec.get("schedule") or {}
    windows = tuple(Window(w["cron"], float(w["duration"]), int(w["min_workers"]))
                    for w in schedule.get("schedule") or [])
    return ScalingPolicy(min_workers=int(scaling.get("min_workers", 0)),
                         max_workers=int(scaling.get("max_workers", 3)),
                         idle_timeout=float(scaling.get("idle_timeout", 5)),
                         scaler=scaling.get("scaler", "queue_delay"),
                         scaler_value=float(scaling.get("scaler_value", 4)), schedule=windows,
                         timezone=schedule.get("timezone", "UTC"), spend_limit_per_day=spec.get("spend_limit_per_day"))


class Reconciler:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.ticks = 0
        self.decisions: dict[str, Decision] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def scale_now(self, endpoint: str) -> None:
        """A job arrived for an endpoint with no live worker: decide at once rather than after a tick that
        may be waiting on a provider (listing workers over SSH can take seconds); a cold start can't wait."""
        ep = self.rt.endpoints.get(endpoint)
        if ep is None or ep.deleting or self._task is None or self._stopping:
            return
        if self.rt.fleet.condition(endpoint).status != "OK":
            return  # no capacity, backing off or capped: the tick retries at its pace, not once per request
        self._scale(ep, time.time())

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        for ep in list(self.rt.endpoints.values()):
            await self.rt.fleet.sweep_orphans(ep.name, ep.spec["pool"])
        while not self._stopping:
            started = time.monotonic()
            try:
                await self.tick(time.time())
            except Exception:  # the loop must survive anything one tick hits; it is logged
                log.exception("reconcile tick failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.05, self.rt.config.timings.reconcile_interval - elapsed))

    async def tick(self, now: float) -> None:
        self.ticks += 1
        self.rt.queue.sweep()
        for ep in list(self.rt.endpoints.values()):
            if ep.deleting:
                continue
            if self.ticks % OBSERVE_EVERY == 0:
                await self.rt.fleet.observe(ep.name)
            await self.rt.fleet.check_readiness(ep, now)
            self._scale(ep, now)
        for worker in list(self.rt.fleet.records.values()):
            if worker.live or worker.state in ("stopping", SLEEPING):  # a sleeping worker still holds its GPU
                self.rt.ledger.accrue(worker, now)
        self._gauges()

    def stats(self, ep: EndpointRecord, now: float) -> Stats:
        q = self.rt.queue.stats(ep.name)
        cond = self.rt.fleet.condition(ep.name)
        workers = tuple(w.view() for w in self.rt.fleet.of(ep.name))
        spent = self.rt.ledger.spent(ep.name, today(now)) if ep.spec.get("spend_limit_per_day") is not None else 0.0
        return Stats(queued=q.scalable_queued, running_jobs=q.running, oldest_wait=q.oldest_wait, workers=workers,
                     spent_today=spent, backoff_until=cond.backoff_until, backoff_reason=cond.message)

    def _scale(self, ep: EndpointRecord, now: float) -> None:
        decision = desired_workers(self.stats(ep, now), policy_of(ep.spec), now)
        self.decisions[ep.name] = decision
        cond = self.rt.fleet.condition(ep.name)
        if decision.blocked == "SPEND_CAP":
            cond.status, cond.message = "SPEND_CAP", decision.reasons[0]
        elif cond.status == "SPEND_CAP":
            cond.status, cond.message = "OK", ""
        worker_spec = ep.spec.get("worker") or {}
        sleep_mode = bool(worker_spec.get("sleep_mode"))
        starts = decision.start
        for worker in self.rt.fleet.of(ep.name):
            if worker.state != SLEEPING:
                continue
            if starts > 0 and not worker.stale:
                self.rt.fleet.wake(worker)  # a sleeping worker wakes in about a second; a cold start takes longer
                starts -= 1
            elif worker.stale or now - (worker.asleep_since or now) > float(worker_spec.get("sleep_timeout", 3600)):
                self.rt.fleet.spawn(self.rt.fleet.stop(worker, "asleep past sleep_timeout or replaced"))
        for _ in range(starts):
            self.rt.fleet.start(ep)
        stopping = set(decision.stop)
        for worker in self.rt.fleet.of(ep.name):
            if worker.id in stopping and sleep_mode and not worker.stale:
                self.rt.fleet.sleep(worker)
            elif worker.id in stopping:
                self.rt.fleet.spawn(self.rt.fleet.stop(worker, "idle timeout"))
            elif worker.stale and worker.state == IDLE:
                self.rt.fleet.spawn(self.rt.fleet.stop(worker, "replaced by a new endpoint revision"))

    def _gauges(self) -> None:
        metrics = self.rt.metrics
        for ep in self.rt.endpoints.values():
            counts = {state: 0 for state in (*LIVE, "stopping", "unhealthy")}
            for w in self.rt.fleet.of(ep.name):
                if w.state in counts:
                    counts[w.state] += 1
            for state, n in counts.items():
                metrics.workers.labels(ep.name, state).set(n)
            metrics.queue_depth.labels(ep.name).set(self.rt.queue.stats(ep.name).queued)
