"""Endpoints changed through one replica reach the others (two runtimes on one PostgreSQL schema, the fake
provider, ticks driven by the test): a put on either is served by the other after its next tick, a new revision
rolls the workers over once (the leader retires them, whichever replica took the put), a delete through the
follower removes the endpoint from the leader, which fails its open jobs and stops the workers once; and the
leader's view of an endpoint (a spending cap, its decision) is what a follower's /health and status show."""

from __future__ import annotations

import asyncio
import time

import pytest

from gpuform.gateway.metering import today
from gpuform.gateway.replication import STOP_WAIT
from gpuform.gateway.states import JobStatus, WorkerState
from gpuform.gateway.store import LedgerEntry
from tests.gateway_harness import ADMIN_KEY, Harness, endpoint_spec
from tests.integration.test_gateway_replicas import kill_leadership, on, pair, rows, until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


async def health(h: Harness, name: str) -> int:
    return (await h.call("GET", f"/v2/{name}/health")).status_code


def test_an_endpoint_put_on_one_replica_is_served_by_the_other_after_one_tick(schema: str) -> None:
    async def main() -> None:
        async with pair(schema, endpoint_spec()) as (r1, r2):
            await r1.tick()
            await r1.put(endpoint_spec("fresh"), name="fresh")
            assert await health(r2, "fresh") == 404, "not taken before the follower's tick"
            await r2.tick()
            assert await health(r2, "fresh") == 200
            await r1.put(endpoint_spec("planned"), name="planned")
            listed = (await r2.call("GET", "/admin/endpoints", ADMIN_KEY)).json()["endpoints"]
            assert "planned" in listed, "the admin API (apply, plan) reads the store's endpoints at once"
            deleted = await r2.call("DELETE", "/admin/endpoints/planned?drain_timeout=0", ADMIN_KEY)
            assert deleted.status_code == 200
            await r1.tick()
            assert await health(r1, "planned") == 404
            job_id = await r2.run({"via": "follower"}, endpoint="fresh")
            assert (await r2.status(job_id, endpoint="fresh"))["status"] == JobStatus.IN_QUEUE
            assert r2.calls("start_worker") == [], "the follower starts nothing (one world: both replicas' calls)"

            await r2.put(endpoint_spec("other", scaling={"min_workers": 1, "max_workers": 1}), name="other")
            await r1.tick()
            assert await health(r1, "other") == 200
            started = r1.calls("start_worker")
            assert sorted(r1.world.launches[w].endpoint for w in started) == ["fresh", "other"], \
                "the leader starts the workers: for the job queued through the follower, and min_workers of other"
            await r2.tick()
            await r1.tick()
            assert r1.calls("start_worker") == started, "no second start for it"

    asyncio.run(main())


def test_a_new_revision_through_the_follower_rolls_the_workers_over_once(schema: str) -> None:
    async def main() -> None:
        async with pair(schema, endpoint_spec(scaling={"min_workers": 2, "max_workers": 2})) as (r1, r2):
            await r1.tick()
            old = sorted(r1.calls("start_worker"))
            assert len(old) == 2
            for worker_id in old:
                assert (await on(r2, r1.worker(worker_id)).ping()).status_code == 200
            await r2.tick()
            await r1.tick()
            await r2.put(endpoint_spec(scaling={"min_workers": 2, "max_workers": 2},
                                       worker={"template": "echo", "env": {"RELEASE": "2"}}))
            revision = r2.runtime.endpoints["ep"].revision
            assert r1.runtime.endpoints["ep"].revision != revision
            for _ in range(4):
                await r2.tick(advance=1)
                await r1.tick(advance=1)
            assert r1.runtime.endpoints["ep"].revision == revision
            assert sorted(r1.calls("stop_worker")) == old, "each old worker stopped once (one world: both replicas')"
            new = [w for w in r1.calls("start_worker") if w not in old]
            assert len(new) == 2, "two replacements in all"
            live = rows(schema, "SELECT id, spec_revision FROM workers WHERE state NOT IN ('stopped', 'unhealthy')")
            assert sorted(live) == sorted((w, revision) for w in new)

    asyncio.run(main())


def test_a_delete_through_the_follower_removes_the_endpoint_from_the_leader(schema: str) -> None:
    async def main() -> None:
        async with pair(schema, endpoint_spec(scaling={"min_workers": 1, "max_workers": 1})) as (r1, r2):
            await r1.tick()
            [worker_id] = r1.calls("start_worker")
            worker = on(r2, r1.worker(worker_id))
            running = await r2.run({"runs": "on the follower"})
            taken = await worker.take()
            assert taken is not None and taken["id"] == running
            open_job = await r1.run({"waits": True})  # queued on the leader; its worker never takes it
            deleting = asyncio.create_task(r2.call("DELETE", "/admin/endpoints/ep?drain_timeout=1", ADMIN_KEY))
            await asyncio.sleep(0.3)  # draining the follower's running job
            await r1.tick()
            assert await health(r1, "ep") == 404, "the leader takes no more work for it while the follower drains"
            assert await worker.take() is None and r1.calls("stop_worker") == []
            while not deleting.done():  # the follower waits for the leader to stop the endpoint's workers
                await r1.tick(advance=1)
                await asyncio.sleep(0.1)
            assert (await deleting).status_code == 200
            assert await health(r1, "ep") == 404 and await health(r2, "ep") == 404
            assert (await r1.call("GET", f"/v2/ep/status/{open_job}")).status_code == 404
            assert rows(schema, f"SELECT status FROM jobs WHERE id IN ('{open_job}', '{running}')") == [
                (JobStatus.FAILED,), (JobStatus.FAILED,)]
            for _ in range(3):
                await r1.tick(advance=1)
                await r2.tick(advance=1)
            assert r1.calls("stop_worker") == [worker_id], "stopped once, by the leader"
            assert r1.runtime.fleet.records[worker_id].state == WorkerState.STOPPED
            assert rows(schema, "SELECT count(*) FROM endpoints") == [(0,)]

    asyncio.run(main())


def test_a_follower_that_comes_to_lead_while_it_removes_an_endpoint_stops_the_workers_itself(schema: str) -> None:
    async def main() -> None:
        async with pair(schema, endpoint_spec(scaling={"min_workers": 1, "max_workers": 1})) as (r1, r2):
            await r1.tick()
            [worker_id] = r1.calls("start_worker")
            await r2.tick()
            await kill_leadership(r1)  # the leader is gone before it stops the removed endpoint's workers
            started = time.monotonic()
            deleting = asyncio.create_task(r2.call("DELETE", "/admin/endpoints/ep?drain_timeout=0", ADMIN_KEY))
            await asyncio.sleep(0.3)
            assert not deleting.done(), "the follower waits for a leader to stop the workers"
            await until(lambda: r2.runtime.leadership.leading, 15, "r2 to lead")
            while not deleting.done() and time.monotonic() - started < STOP_WAIT:
                await r2.tick(advance=1)
                await asyncio.sleep(0.1)
            took = time.monotonic() - started
            assert (await deleting).status_code == 200
            assert took < STOP_WAIT / 2, f"the delete waited {took:.1f}s for a leader that was itself"
            assert r2.calls("stop_worker") == [worker_id], "stopped once, by the new leader"
            assert r2.runtime.fleet.records[worker_id].state == WorkerState.STOPPED

    asyncio.run(main())


def test_a_follower_shows_the_leaders_spending_cap_and_decision(schema: str) -> None:
    spec = endpoint_spec(scaling={"min_workers": 0, "max_workers": 2}, spend_limit_per_day=0)
    async def main() -> None:
        async with pair(schema, spec) as (r1, r2):
            await r1.tick()
            await r1.run({"capped": True})  # queued on the leader: it would scale up but for the cap
            await r1.tick()
            assert (await r1.call("GET", "/v2/ep/health")).json()["status"] == "SPEND_CAP"
            assert (await r2.call("GET", "/v2/ep/health")).json()["status"] == "OK", "not before its tick"
            r1.runtime.store.ledger.add(LedgerEntry("w0", "ep", today(r1.clock()), "cpu", 1, 10.0, 0.25))
            await r2.tick()
            gauge = r2.runtime.metrics.registry.get_sample_value("gpuform_spend_today_dollars", {"endpoint": "ep"})
            assert gauge == 0.25, "the follower's gauge reads the ledger in the store"
            body = (await r2.call("GET", "/v2/ep/health")).json()
            assert body["status"] == "SPEND_CAP" and "spending cap" in body["condition"]["message"]
            status = (await r2.call("GET", "/admin/endpoints/ep/status", ADMIN_KEY)).json()
            assert status["status"] == "SPEND_CAP" and any("spending cap" in n for n in status["scaling_notes"])
            assert r1.calls("start_worker") == []

    asyncio.run(main())


def test_with_running_reconcile_loops_a_put_reaches_the_other_replica_within_about_a_second(schema: str) -> None:
    async def main() -> None:
        async with pair(schema, endpoint_spec()) as (r1, r2):
            for h in (r1, r2):
                h.runtime.reconciler.interval = 1.0  # the default reconcile_interval
                h.runtime.reconciler.start()
            waits: list[float] = []
            for name, (source, other) in (("a", (r1, r2)), ("b", (r2, r1)), ("c", (r1, r2))):
                await source.put(endpoint_spec(name), name=name)
                waits.append(await until(lambda n=name, o=other: n in o.runtime.endpoints, 3, f"{name} on the other"))
                assert await health(other, name) == 200
            print("put -> served by the other replica: " + ", ".join(f"{w:.2f}s" for w in waits))
            assert max(waits) <= 1.5

    asyncio.run(main())
