"""The simulator runs the gateway's own autoscaler: the same arrivals through the real gateway (its reconciler,
queue and fleet, with the fake provider and a fake clock) and through ``gpuform.simulate`` give the same
worker starts and stops at the same times, and the same delay for every request.

The gateway side is driven by a small world model written here, independently of the simulator: workers
become ready (first contact) a fixed cold start after the gateway asks for them, pull jobs into their free
slots, finish each after its service time, and a job that arrives goes to the worker that has waited longest.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from gpuform.gateway.autoscaler import policy_of
from gpuform.gateway.states import WorkerState
from gpuform.gateway.workers import WorkerRecord
from gpuform.simulate.engine import simulate
from gpuform.simulate.model import ColdStart, Settings
from gpuform.spec import EndpointSpec
from tests.gateway_harness import T0, TIMINGS, FakeClock, FakeWorker, Harness, endpoint_spec, gateway, runtime_config

pytestmark = pytest.mark.unit
READY, DONE = 0, 1


def bursty_arrivals(seed: int, seconds: float) -> list[float]:
    """Bursts, lulls and silences longer than any idle timeout below (so workers stop and start again)."""
    rng = random.Random(seed)
    out, t = [], T0 + 0.37
    while t < T0 + seconds:
        phase = int((t - T0) // 40) % 4
        rate = (3.0, 0.4, 0.0, 1.2)[phase]
        if rate == 0:
            t = T0 + (int((t - T0) // 40) + 1) * 40 + rng.uniform(0.01, 0.9)
            continue
        t += rng.expovariate(rate)
        out.append(t)
    return out


@dataclass
class Driven:
    """One worker as the test world plays it."""

    number: int
    record: WorkerRecord
    fake: FakeWorker
    ready: bool = False
    held: dict[str, float] = field(default_factory=dict)
    free_since: float = 0.0
    stopped: bool = False


class World:
    def __init__(self, h: Harness, arrivals: list[float], service: list[float], cold: float, concurrency: int,
                 warm: bool) -> None:
        self.h, self.arrivals, self.service = h, arrivals, service
        self.cold, self.concurrency, self.warm = cold, concurrency, warm
        self.workers: list[Driven] = []
        self.events: list[tuple[float, int, int, int, str]] = []
        self.seq = 0
        self.actions: list[tuple[float, str, int]] = []
        self.delays = [float("inf")] * len(arrivals)

    def push(self, at: float, kind: int, worker: Driven, job: str = "") -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, worker.number, job))

    async def sync(self, ready_now: bool = False) -> None:
        """Record what the gateway started and stopped since the last look."""
        await self.h.settle()
        now = self.h.clock()
        known = {w.record.id for w in self.workers}
        for record in list(self.h.runtime.fleet.records.values()):
            if record.id not in known:
                worker = Driven(len(self.workers) + 1, record, self.h.worker(record.id))
                self.workers.append(worker)
                self.actions.append((now, "start", worker.number))
                if ready_now:
                    await self.ready(worker)
                else:
                    self.push(now + self.cold, READY, worker)
        for worker in self.workers:
            if not worker.stopped and worker.record.state in (WorkerState.STOPPING, WorkerState.STOPPED):
                worker.stopped = True
                self.actions.append((now, "stop", worker.number))

    async def take(self, worker: Driven) -> None:
        free = self.concurrency - len(worker.held)
        if free <= 0 or not self.h.runtime.queue.stats("ep").queued:
            worker.free_since = self.h.clock()
            return
        resp = await self.h.call("GET", f"/v2/ep/job-take-batch/{worker.record.id}?batch_size={free}", worker.fake.token)
        assert resp.status_code == 200, resp.text
        for job in resp.json():
            index = job["input"]["i"]
            held = self.h.runtime.queue.get(job["id"])
            assert held is not None and held.started_at is not None
            self.delays[index] = held.started_at - held.created_at
            worker.held[job["id"]] = index
            self.push(self.h.clock() + self.service[index], DONE, worker, job["id"])
        worker.free_since = self.h.clock()

    async def ready(self, worker: Driven) -> None:
        assert (await worker.fake.ping()).status_code == 200
        worker.ready = True
        await self.take(worker)

    async def arrive(self, index: int) -> None:
        await self.h.run({"i": index})
        await self.sync()
        waiting = [w for w in self.workers if w.ready and not w.stopped and len(w.held) < self.concurrency]
        if waiting:
            await self.take(min(waiting, key=lambda w: (w.free_since, w.number)))

    async def tick(self, at: float) -> None:
        self.h.clock.now = at
        await self.h.runtime.reconciler.tick(at)
        await self.sync()

    async def play(self, interval: float) -> None:
        t0, i, k = self.arrivals[0], 0, 1
        self.h.clock.now = t0
        await self.h.runtime.reconciler.tick(t0)
        await self.sync(ready_now=self.warm)
        while i < len(self.arrivals) or self.events or self.h.runtime.queue.stats("ep").queued:
            next_tick, t_arrival = t0 + k * interval, self.arrivals[i] if i < len(self.arrivals) else float("inf")
            t_event = self.events[0][0] if self.events else float("inf")
            if t_event <= t_arrival and t_event <= next_tick:
                await self.event(heapq.heappop(self.events))
            elif t_arrival <= next_tick:
                self.h.clock.now = t_arrival
                await self.arrive(i)
                i += 1
            else:
                await self.tick(next_tick)
                k += 1

    async def event(self, event: tuple[float, int, int, int, str]) -> None:
        at, _, kind, number, job_id = event
        self.h.clock.now = at
        worker = self.workers[number - 1]
        if kind == READY:
            await self.ready(worker)
            return
        resp = await worker.fake.done(job_id, "ok")
        assert resp.json() == {"accepted": True}
        del worker.held[job_id]
        await self.take(worker)

def through_gateway(spec: EndpointSpec, arrivals: list[float], service: list[float], cold: float,
                    interval: float, warm: bool) -> tuple[list[tuple[float, str, int]], list[float]]:
    config = runtime_config(pool_hosts=[{"name": "h1", "gpus": ["H100-80GB"] * 16}],
                            timings={**TIMINGS, "lease_timeout": 10**6, "reconcile_interval": interval})
    out: dict[str, Any] = {}

    async def main() -> None:
        async with gateway(config=config, endpoints={"ep": spec}, clock=FakeClock(arrivals[0])) as h:
            world = World(h, arrivals, service, cold, spec.worker.concurrency or 1, warm)
            await world.play(interval)
            out["actions"], out["delays"] = world.actions, world.delays

    asyncio.run(main())
    return out["actions"], out["delays"]


CASES = {
    "queue_delay, from zero, 2 per worker": dict(
        scaling={"min_workers": 0, "max_workers": 4, "idle_timeout": 5, "scaler": "queue_delay", "scaler_value": 2},
        worker={"template": "echo", "concurrency": 2}, cold=7.3, interval=1.0),
    "request_count, one warm worker, half-second ticks": dict(
        scaling={"min_workers": 1, "max_workers": 5, "idle_timeout": 9, "scaler": "request_count",
                 "scaler_value": 3},
        worker={"template": "echo", "concurrency": 1}, cold=4.05, interval=0.5),
    "queue_delay with a warm schedule window": dict(
        scaling={"min_workers": 0, "max_workers": 3, "idle_timeout": 3, "scaler": "queue_delay", "scaler_value": 1},
        worker={"template": "echo", "concurrency": 3}, cold=11.0, interval=1.0,
        schedule={"schedule": [{"cron": "8 11 * * *", "duration": 60, "min_workers": 2}]}),
    "rate_forecast with the learned keep-alive": dict(
        scaling={"min_workers": 0, "max_workers": 5, "idle_timeout": 2, "scaler": "rate_forecast", "scaler_value": 2,
                 "keep_alive": "learned", "cold_start": 6, "forecast": {"window": 5, "windows": 4},
                 "learned": {"bin": 4, "min_samples": 2, "low_percentile": 50, "high_percentile": 90}},
        worker={"template": "echo", "concurrency": 2}, cold=6.5, interval=1.0),
    "queue_delay with the learned keep-alive (kept and pre-warmed workers)": dict(
        scaling={"min_workers": 0, "max_workers": 3, "idle_timeout": 1, "scaler": "queue_delay", "scaler_value": 2,
                 "keep_alive": "learned", "cold_start": 3,
                 "learned": {"bin": 2, "min_samples": 2, "low_percentile": 10, "high_percentile": 60}},
        worker={"template": "echo", "concurrency": 4}, cold=3.5, interval=1.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_simulator_and_the_gateway_scale_identically(case: str) -> None:
    fields = dict(CASES[case])
    cold, interval = float(fields.pop("cold")), float(fields.pop("interval"))
    spec = endpoint_spec(**fields)
    arrivals = bursty_arrivals(seed=len(case), seconds=200)
    rng = random.Random(7)
    service = [rng.uniform(0.3, 6.0) for _ in arrivals]
    warm = spec.scaling.min_workers > 0
    real_actions, real_delays = through_gateway(spec, arrivals, service, cold, interval, warm)

    settings = Settings(policy_of(spec), ColdStart(cold, cold), spec.worker.concurrency or 1, interval, warm_start=warm)
    run = simulate(arrivals, service, settings)
    simulated = [(round(t - T0, 6), a, n) for t, a, n in run.actions if a in ("start", "stop")]
    real = [(round(t - T0, 6), a, n) for t, a, n in real_actions]

    assert sum(1 for _, a, _ in real if a == "start") >= 3 and any(a == "stop" for _, a, _ in real), \
        "the scenario must make the gateway scale up and down"
    assert simulated == real
    assert [round(d, 6) for d in run.delays] == [round(d, 6) for d in real_delays]
