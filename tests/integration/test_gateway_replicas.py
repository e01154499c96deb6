"""Two gateway runtimes in one process on one PostgreSQL schema, with the fake provider (one pool both drive)
and a shared fake clock: only the leader starts workers, a deposed leader's start is fenced before the
provider is called, a takeover adopts the workers and carries the ledger on to the second, and a worker
that only ever talks to the follower is neither lost nor kept past its idle timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
import pytest

from gpuform.gateway.app import build_app
from gpuform.gateway.leader import PostgresLeadership
from gpuform.gateway.postgres import PostgresStore
from gpuform.gateway.runtime import Runtime
from gpuform.gateway.states import JobStatus, WorkerState
from gpuform.providers.fake.provider import FakeProvider
from gpuform.spec import EndpointSpec
from tests.gateway_harness import FakeClock, FakeWorker, Harness, endpoint_spec, runtime_config
from tests.pg import postgres_url

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@asynccontextmanager
async def replica(schema: str, name: str, clock: FakeClock, spec: EndpointSpec) -> AsyncIterator[Harness]:
    """One replica: its own store connection, leadership and app; ticks driven by the test."""
    config = runtime_config()
    runtime = Runtime(config, PostgresStore(postgres_url(), schema, "replicas-test-key"), clock=clock)
    leadership = runtime.leadership
    assert isinstance(leadership, PostgresLeadership)
    leadership.replica_id, leadership.interval = name, 0.2
    await runtime.start(reconcile=False)
    transport = httpx.ASGITransport(app=build_app(runtime, reconcile=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=30) as client:
        h = Harness(runtime, client, clock, FakeProvider.world_of(config.lineage, "gpu"))
        await h.put(spec)
        try:
            yield h
        finally:
            await runtime.stop()


@asynccontextmanager
async def pair(schema: str, spec: EndpointSpec) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two replicas on one schema; the first leads."""
    FakeProvider.WORLDS.pop((runtime_config().lineage, "gpu"), None)
    clock = FakeClock()
    async with replica(schema, "r1", clock, spec) as first:
        await until(lambda: first.runtime.leadership.leading, 5, "r1 to lead")
        async with replica(schema, "r2", clock, spec) as second:
            yield first, second


async def until(predicate: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def kill_leadership(h: Harness) -> None:
    """The lock session of a replica ends, as when its process is killed (the rest of it is left as it is)."""
    task = h.runtime._leading
    assert task is not None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def on(h: Harness, worker: FakeWorker) -> FakeWorker:
    """The same worker, talking to replica ``h``."""
    return FakeWorker(h, worker.id, worker.endpoint, worker.token)


def rows(schema: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(postgres_url()) as conn:
        conn.execute(f'SET search_path = "{schema}"')
        return conn.execute(query).fetchall()


def test_a_leader_whose_epoch_was_superseded_starts_nothing(schema: str) -> None:
    async def main() -> None:
        async with pair(schema, endpoint_spec(scaling={"min_workers": 2, "max_workers": 3})) as (r1, r2):
            await r2.tick()
            assert r1.calls("start_worker") == [] and r2.runtime.reconciler.decisions == {}, "a follower decides nothing"
            await r1.tick()
            assert len(r1.calls("start_worker")) == 2
            rows(schema, "UPDATE leadership SET epoch = epoch + 1 RETURNING epoch")  # another leader's gain
            assert r1.runtime.leadership.leading, "r1 still holds the lock: only the epoch says it was deposed"
            await r1.put(endpoint_spec(scaling={"min_workers": 3, "max_workers": 3}))
            await r1.tick(advance=1)
            assert len(r1.calls("start_worker")) == 2, "the fenced insert failed before the provider was called"
            assert rows(schema, "SELECT count(*) FROM workers") == [(2,)]

    asyncio.run(main())


def test_a_takeover_adopts_the_workers_starts_none_and_bills_each_second_once(schema: str) -> None:
    async def main() -> None:
        async with pair(schema, endpoint_spec(scaling={"min_workers": 2, "max_workers": 4})) as (r1, r2):
            await r1.tick()
            started = r1.clock()
            workers = [r1.worker(w) for w in r1.world.launches]
            for worker in workers:  # they only ever talk to the follower
                assert (await on(r2, worker).ping()).status_code == 200
            await r2.tick(advance=10)
            await r1.tick()  # accrues 10 s of each
            assert {w.state for w in r1.runtime.fleet.records.values()} == {WorkerState.IDLE}
            await kill_leadership(r1)
            took = await until(lambda: r2.runtime.leadership.leading, 5, "r2 to take over")
            print(f"takeover: {took:.2f}s")
            await r1.tick(advance=2)  # the old leader, deposed, decides and bills nothing
            await r2.tick(advance=3)  # adopts; bills 10 s -> 15 s
            assert len(r2.calls("start_worker")) == 2 and len(r2.world.running()) == 2, "no start beyond the desired 2"
            assert sorted(w.id for w in r2.runtime.fleet.records.values() if w.live) == sorted(r1.world.launches)
            for worker in workers:
                assert r2.runtime.ledger.worker_seconds(worker.id) == pytest.approx(r2.clock() - started)
            status = (await r2.call("GET", "/admin/status", "admin-key")).json()["replica"]
            assert status["leader"] and status["current_leader"]["replica_id"] == "r2"
            assert status["epoch"] == r1.runtime.leadership.epoch + 1

    asyncio.run(main())


def test_a_worker_served_only_by_the_follower_is_not_lost_and_stops_after_its_idle_timeout(schema: str) -> None:
    spec = endpoint_spec(scaling={"min_workers": 0, "max_workers": 1, "idle_timeout": 5},
                         worker={"template": "echo", "ready_timeout": 30})
    async def main() -> None:
        async with pair(schema, spec) as (r1, r2):
            await r1.tick()  # the new leader adopts before it decides anything
            first = await r1.run(1)  # scales from zero on the leader
            await r1.settle()
            assert (await r1.call("POST", f"/v2/ep/cancel/{first}")).status_code == 200
            worker = on(r2, r1.worker())
            job_id = await r2.run({"via": "follower"})
            taken = await worker.take()
            assert taken is not None and taken["id"] == job_id
            for _ in range(10):  # 40 s: past its ready and idle timeouts, running a job it keeps renewing
                assert (await worker.ping(job_id)).status_code == 200
                await r1.tick(advance=4)
            assert r1.calls("stop_worker") == []
            assert r1.runtime.fleet.records[worker.id].state == WorkerState.RUNNING
            assert (await worker.done(job_id, {"ok": True})).json() == {"accepted": True}
            assert (await r2.status(job_id))["status"] == JobStatus.COMPLETED
            await r1.tick(advance=3)
            assert r1.calls("stop_worker") == [], "idle for 3 s of its 5"
            await r1.tick(advance=3)
            assert r1.calls("stop_worker") == [worker.id]
            await r2.tick(advance=1)
            assert worker.id not in r2.runtime.fleet.records, "the follower forgets a worker stopped elsewhere"
            assert (await worker.ping()).status_code == 401, "its token is no longer valid on the follower"

    asyncio.run(main())
