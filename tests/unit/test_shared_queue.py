"""The shared job queue on the tests' PostgreSQL, as two gateway replicas see it: two SharedJobQueues on one
schema, each with its own store connection and listener, in one event loop. A job submitted on one is taken on
the other; results, chunks, cancels and controls reach waiters on the other replica by NOTIFY (waiters re-check
only every 30 s here, so a prompt wake-up is the notification's); claims never hand a job twice."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, asynccontextmanager

import psycopg
import pytest

from gpuform.config.schema import GatewayTimings
from gpuform.gateway.jobs import Job
from gpuform.gateway.postgres import PostgresStore
from gpuform.gateway.queue import QueueFull, Quota
from gpuform.gateway.shared_queue import SharedJobQueue
from gpuform.gateway.store import HistoryQuery
from tests.gateway_harness import FakeClock
from tests.pg import postgres_url

pytestmark = [pytest.mark.unit, pytest.mark.postgres]
SLOW_RECHECK = 30.0  # longer than any wait below: a waiter that wakes in time was woken by a notification
PROMPT = 1.0  # a notification's wake-up, loosely (it takes milliseconds)


@asynccontextmanager
async def replicas(schema: str, clock: FakeClock | None = None, **timings: float
                   ) -> AsyncIterator[tuple[SharedJobQueue, SharedJobQueue]]:
    queues = []
    for _ in range(2):
        queue = SharedJobQueue(PostgresStore(postgres_url(), schema), GatewayTimings(**timings),
                               clock or time.time, recheck=SLOW_RECHECK)
        queue.restore()
        queues.append(queue)
    for queue in queues:
        assert queue.listener is not None and await asyncio.to_thread(queue.listener.listening.wait, 5)
    try:
        yield queues[0], queues[1]
    finally:
        for queue in queues:
            queue.dispose()
            queue.pg.db.close()


def _submit(queue: SharedJobQueue, n: int = 0, **options: object) -> Job:
    job, _ = queue.submit("ep", {"n": n}, execution_timeout=60, ttl=600, **options)  # type: ignore[arg-type]
    return job


def test_a_job_submitted_on_one_replica_is_taken_on_the_other_and_its_runsync_wakes_by_notify(schema: str) -> None:
    async def main() -> None:
        async with replicas(schema) as (a, b):
            taking = asyncio.create_task(b.take("ep", "w1", 1, timeout=20))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            job = _submit(a, 1)
            [taken] = await asyncio.wait_for(taking, PROMPT)
            assert time.monotonic() - started < PROMPT, "B's waiting take was woken by A's submit"
            assert taken.id == job.id and taken.input == {"n": 1} and taken.worker_id == "w1"
            waiting = asyncio.create_task(a.wait_done(job, 20))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            assert b.result(job.id, "w1", {"output": {"ok": True}}) is not None
            assert await asyncio.wait_for(waiting, PROMPT)
            assert time.monotonic() - started < PROMPT, "A's runsync woke by NOTIFY, not by its 30 s re-check"
            assert job.status == "COMPLETED" and job.view()["output"] == {"ok": True}
            assert b.result(job.id, "w1", {"output": "again"}) is None, "a second post changes nothing"
            assert a.get(job.id).output == {"ok": True}  # type: ignore[union-attr]

    asyncio.run(main())


def test_stream_chunks_posted_on_one_replica_are_drained_and_followed_on_the_other(schema: str) -> None:
    async def main() -> None:
        async with replicas(schema) as (a, b):
            job = _submit(a)
            await b.take("ep", "w1", 1, timeout=1)
            followed: list[object] = []

            async def follow() -> None:
                async with aclosing(a.follow(job, 15)) as changes:
                    async for chunks in changes:
                        followed.extend(chunks or ())

            following = asyncio.create_task(follow())
            for n in range(3):
                assert b.chunk(job.id, "w1", {"c": n}, 10) is not None
            assert a.drain_chunks(job) == [{"c": 0}, {"c": 1}, {"c": 2}]
            assert b.drain_chunks(job) == [], "chunks since the previous call, whichever replica served it"
            assert b.chunk(job.id, "w1", {"c": 3}, 10) is not None
            assert b.drain_chunks(job) == [{"c": 3}]
            assert b.chunk(job.id, "other-worker", {"c": 9}, 10) is None, "not that worker's job"
            b.result(job.id, "w1", {"output": "end"})
            await asyncio.wait_for(following, PROMPT)
            assert followed == [{"c": n} for n in range(4)] and job.status == "COMPLETED"

    asyncio.run(main())


def test_streams_over_their_budgets_are_refused(schema: str) -> None:
    async def main() -> None:
        async with replicas(schema) as (a, b):
            b.budget = type(b.budget)(stream_job=100, stream_total=150)
            job, other = _submit(a), _submit(a)
            await b.take("ep", "w1", 2, timeout=1)
            assert b.chunk(job.id, "w1", "x", 60) is not None
            assert b.chunk(job.id, "w1", "y", 60) is None, "over the job's stream budget"
            assert a.drain_chunks(job) == ["x"] and a.get(job.id).chunks_dropped == 1  # type: ignore[union-attr]
            assert b.chunk(other.id, "w1", "z", 60) is not None
            assert b.chunk(other.id, "w1", "z", 40) is None, "over the budget of all running jobs' streams"
            a.result(job.id, "w1", {"output": "x"})
            assert b.chunk(other.id, "w1", "z", 40) is not None, "a finished job's stream no longer counts"

    asyncio.run(main())


def test_a_cancel_on_one_replica_reaches_the_workers_stop_poll_on_the_other(schema: str) -> None:
    async def main() -> None:
        async with replicas(schema) as (a, b):
            job = _submit(a)
            await b.take("ep", "w1", 1, timeout=1)
            polling = asyncio.create_task(b.wait_stops("w1", 20))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            assert a.cancel(job.id).status == "CANCELLED"  # type: ignore[union-attr]
            assert await asyncio.wait_for(polling, PROMPT) == [job.id]
            assert time.monotonic() - started < PROMPT
            assert b.result(job.id, "w1", {"output": "late"}) is None, "a late post for a cancelled job"
            assert a.get(job.id).status == "CANCELLED"  # type: ignore[union-attr]
            b.renew("w1", [job.id])
            assert await a.wait_stops("w1", 0) == [job.id], "a heartbeat for a stopped job signals it again"

    asyncio.run(main())


def test_sleep_and_wake_controls_and_a_release_reach_the_stop_poll_on_another_replica(schema: str) -> None:
    async def main() -> None:
        async with replicas(schema) as (a, b):
            polling = asyncio.create_task(b.wait_stops("w1", 20))
            await asyncio.sleep(0.2)
            a.control("w1", "sleep")
            assert await asyncio.wait_for(polling, PROMPT) == []
            assert b.take_control("w1") == "sleep" and b.take_control("w1") is None
            polling = asyncio.create_task(b.wait_stops("w1", 20))
            await asyncio.sleep(0.2)
            a.release("w1")
            assert await asyncio.wait_for(polling, PROMPT) == [], "released: the poll answers now"

    asyncio.run(main())


def test_concurrent_takes_on_four_replicas_in_threads_hand_every_job_exactly_once(schema: str) -> None:
    """Four replicas, each in a thread with its own event loop and connection (truly concurrent claims), two
    workers on each: 200 jobs, each handed out once and completed once."""
    store = PostgresStore(postgres_url(), schema)
    submitter = SharedJobQueue(store, GatewayTimings())
    submitted = {_submit(submitter, n).id for n in range(200)}
    taken: dict[int, list[str]] = {}
    ready = threading.Barrier(4)

    async def replica(index: int) -> None:
        queue = SharedJobQueue(PostgresStore(postgres_url(), schema), GatewayTimings(), recheck=SLOW_RECHECK)
        queue.restore()
        mine = taken.setdefault(index, [])

        async def worker(name: str) -> None:
            while jobs := await queue.take("ep", name, 2, timeout=0.3):
                for job in jobs:
                    mine.append(job.id)
                    assert queue.result(job.id, name, {"output": job.input}) is not None
        await asyncio.to_thread(ready.wait)
        try:
            await asyncio.gather(worker(f"r{index}a"), worker(f"r{index}b"))
        finally:
            queue.dispose()
            queue.pg.db.close()

    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(asyncio.run, replica(i)) for i in range(4)]:
            done.result()
    store.close()
    every = [job_id for ids in taken.values() for job_id in ids]
    assert len(every) == 200 and set(every) == submitted, "every job exactly once"
    assert sum(1 for ids in taken.values() if ids) >= 2, "the replicas took jobs side by side"


def test_jobs_are_taken_in_order_requeued_first_and_a_lapsed_lease_requeues_then_fails(schema: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with replicas(schema, clock, lease_timeout=10, max_job_attempts=2) as (a, b):
            first, second = _submit(a, 1), _submit(b, 2)
            assert [j.id for j in await b.take("ep", "w1", 1, timeout=1)] == [first.id]
            clock.advance(5)
            b.renew("w1", [first.id])
            clock.advance(6)
            a.sweep()
            assert a.get(first.id).status == "IN_PROGRESS", "renewed: the lease has not lapsed"  # type: ignore
            clock.advance(5)
            a.sweep()
            assert a.get(first.id).status == "IN_QUEUE"  # type: ignore[union-attr]
            assert a.stats("ep").queued == 2 and a.requeued == {"ep": 1}
            [again] = await a.take("ep", "w2", 1, timeout=1)
            assert again.id == first.id and again.attempts == 2, "a requeued job goes first"
            assert b.result(first.id, "w1", {"output": "late"}) is None, "the first worker's late post is ignored"
            clock.advance(11)
            b.sweep()
            a.sweep()  # both replicas sweeping: conditional, so nothing happens twice
            lost = a.get(first.id)
            assert lost is not None and lost.status == "FAILED" and "gave up after 2 attempts" in str(lost.error)
            assert [j.id for j in await b.take("ep", "w3", 1, timeout=1)] == [second.id]

    asyncio.run(main())


def test_a_held_take_goes_on_when_the_workers_job_ends_on_another_replica(schema: str) -> None:
    async def main() -> None:
        async with replicas(schema) as (a, b):
            first, second = _submit(a, 1), _submit(a, 2)
            assert [j.id for j in await b.take("ep", "w1", 2, timeout=1, limit=1)] == [first.id]
            held = asyncio.create_task(b.take("ep", "w1", 1, timeout=20, limit=1))
            await asyncio.sleep(0.3)
            assert not held.done(), "its one slot is taken"
            started = time.monotonic()
            a.result(first.id, "w1", {"output": 1})
            assert [j.id for j in await asyncio.wait_for(held, PROMPT)] == [second.id]
            assert time.monotonic() - started < PROMPT

    asyncio.run(main())


def test_retry_purge_idempotency_and_limits_hold_across_replicas(schema: str) -> None:
    async def main() -> None:
        async with replicas(schema) as (a, b):
            job, new = a.submit("ep", 1, execution_timeout=60, ttl=600, idempotency_key="k", owner="app")
            again, fresh = b.submit("ep", 2, execution_timeout=60, ttl=600, idempotency_key="k", owner="app")
            assert new and not fresh and again.id == job.id
            with pytest.raises(QueueFull, match="max_queue"):
                b.submit("ep", 3, execution_timeout=60, ttl=600, max_queue=1)
            with pytest.raises(QueueFull, match="max_queued"):
                b.submit("ep", 3, execution_timeout=60, ttl=600, owner="app", quota=Quota(max_queued=1))
            other = _submit(b, 4, owner="other")
            assert a.purge("ep", "app") == 1 and a.get(job.id).status == "CANCELLED"  # type: ignore[union-attr]
            [taken] = await a.take("ep", "w1", 1, timeout=1)
            assert taken.id == other.id
            b.result(other.id, "w1", {"error": "boom"})
            assert a.get(other.id).status == "FAILED"  # type: ignore[union-attr]
            assert b.retry(other.id).status == "IN_QUEUE"  # type: ignore[union-attr]
            [retaken] = await a.take("ep", "w2", 1, timeout=1)
            assert retaken.id == other.id and retaken.retried == 1 and retaken.attempts == 1

    asyncio.run(main())


def test_execution_timeouts_ttls_and_retention_in_the_sweep(schema: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with replicas(schema, clock, result_retention_run=60) as (a, b):
            stopped: list[str] = []
            a.on_stop_worker.append(lambda worker, why: stopped.append(worker))
            slow, stale = _submit(a), a.submit("ep", 1, execution_timeout=600, ttl=30)[0]
            await b.take("ep", "w1", 1, timeout=1)
            clock.advance(61)
            a.sweep()
            assert a.get(slow.id).status == "TIMED_OUT" and stopped == ["w1"]  # type: ignore[union-attr]
            assert "ttl expired" in str(a.get(stale.id).error)  # type: ignore[union-attr]
            assert await b.wait_stops("w1", 0) == [slow.id]
            clock.advance(61)
            a.sweep()
            assert a.get(slow.id) is None and a.get(stale.id) is None, "results past retention are deleted"

    asyncio.run(main())


def test_a_killed_listener_reconnects_and_its_waiters_still_wake(schema: str) -> None:
    async def main() -> None:
        async with replicas(schema) as (a, b):
            assert b.listener is not None
            job = _submit(a)
            await b.take("ep", "w1", 1, timeout=1)
            waiting = asyncio.create_task(a.wait_done(job, 20))
            assert a.listener is not None
            await asyncio.sleep(0.2)
            with psycopg.connect(postgres_url(), autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (a.listener.backend_pid,))
            b.result(job.id, "w1", {"output": "while A's listener was down"})
            assert await asyncio.wait_for(waiting, 5), "woken after the reconnect (the notification was lost)"
            deadline = time.monotonic() + 5
            while a.listener.connections < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert a.listener.connections == 2
            taking = asyncio.create_task(a.take("ep", "w2", 1, timeout=20))
            await asyncio.sleep(0.2)
            second = _submit(b)
            assert [j.id for j in await asyncio.wait_for(taking, PROMPT)] == [second.id], "listening again"

    asyncio.run(main())


def test_a_lost_workers_jobs_go_to_a_taker_waiting_on_the_other_replica_and_a_removed_endpoint_fails_its_jobs(
        schema: str) -> None:
    async def main() -> None:
        async with replicas(schema, max_job_attempts=2) as (a, b):
            job = _submit(a)
            await a.take("ep", "w1", 1, timeout=1)
            taking = asyncio.create_task(b.take("ep", "w2", 1, timeout=20))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            assert [j.id for j in a.worker_lost("w1", "worker w1 stopped: gone")] == [job.id]
            assert [j.id for j in await asyncio.wait_for(taking, PROMPT)] == [job.id]
            assert time.monotonic() - started < PROMPT, "the requeue woke B's take by NOTIFY"
            assert a.jobs_of("w2")[0].id == job.id and a.jobs_of("w1") == []
            [failed] = b.worker_lost("w2", "worker w2 stopped: gone too")
            assert failed.status == "FAILED" and "gone too; gave up after 2 attempts" in str(failed.error)
            running, queued = _submit(b), _submit(b)
            assert [j.id for j in await a.take("ep", "w3", 1, timeout=1)] == [running.id]
            assert b.fail_endpoint("ep", "endpoint ep was removed") == 2
            assert a.get(queued.id).status == a.get(running.id).status == "FAILED"  # type: ignore[union-attr]
            assert await a.wait_stops("w3", 0) == [running.id], "the running one's worker is told to stop"

    asyncio.run(main())


def test_a_schema_from_before_the_shared_queue_migrates_with_its_open_jobs_in_order(
        schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpuform.gateway import postgres

    with monkeypatch.context() as before:  # a gateway of the previous version: schema version 2, its own queue
        before.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:2])
        before.setattr(postgres, "SCHEMA_VERSION", 2)
        old = PostgresStore(postgres_url(), schema)
        for n, created in enumerate([3.0, 1.0, 2.0]):
            old.jobs.insert(Job(id=f"j{n}", endpoint="ep", input=n, created_at=created, execution_timeout=60,
                                ttl=1e9))
        old.close()

    async def main() -> None:
        async with replicas(schema) as (a, _):
            assert a.pg.db.run(postgres._version) == postgres.SCHEMA_VERSION
            taken = await a.take("ep", "w1", 3, timeout=1)
            assert [j.id for j in taken] == ["j1", "j2", "j0"], "oldest first, as before the upgrade"
            new = _submit(a)
            assert [j.id for j in await a.take("ep", "w1", 1, timeout=1)] == [new.id], "and new ones after them"

    asyncio.run(main())


def test_a_listener_that_starts_listening_makes_every_waiter_look_again(schema: str) -> None:
    """A request can wait before the listener is listening (a runsync sent the moment a replica serves HTTP):
    a notification sent before LISTEN is lost, so the first LISTEN wakes every waiter too (else it waited
    out its recheck, 30 s here)."""
    from gpuform.gateway.pgnotify import Listener

    async def main() -> None:
        woken = asyncio.Event()
        listener = Listener(postgres_url(), f"{schema}_test", asyncio.get_running_loop(), lambda _: None, woken.set)
        listener.start()
        try:
            await asyncio.wait_for(woken.wait(), 10)
            assert listener.listening.wait(5) and listener.connections == 1
        finally:
            listener.stop()

    asyncio.run(main())


def test_a_finish_counts_key_usage_and_records_history_in_its_statement_and_held_needs_no_query(
        schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1_767_225_500.0)  # 2025-12-31 23:58:20 UTC: the finishes fall on the next day (UTC)

    async def main() -> None:
        async with replicas(schema, clock) as (a, b):
            done, other, cancelled = _submit(a, 1, owner="k1"), _submit(a, 2, owner="k1"), _submit(a, 3)
            assert len(await b.take("ep", "w1", 2, timeout=1, limit=4)) == 2
            clock.advance(120.0)
            a.cancel(cancelled.id)
            assert b.result(done.id, "w1", {"output": 1}) is not None
            with monkeypatch.context() as patched:  # right after result(), held() answers from the finish's count
                patched.setattr(b.pg, "held", lambda *_: pytest.fail("held() queried the database"))
                assert b.held("ep", "w1") == 1
            assert a.result(other.id, "w1", {"error": "boom"}) is not None
            assert a.held("ep", "w1") == 0
            usage = {(r["owner"], r["day"]): (r["jobs"], r["failed"], r["execution_seconds"])
                     for r in a.store.usage_by_key()}  # type: ignore[attr-defined]
            assert usage == {("k1", "2026-01-01"): (2, 1, 240.0), ("", "2026-01-01"): (1, 1, 0.0)}
            history = PostgresStore(postgres_url(), schema)
            try:
                rows = {e.job_id: e for e in history.history.query(HistoryQuery(endpoint="ep"))}
            finally:
                history.db.close()
            assert {j: (e.status, e.owner, e.worker_id) for j, e in rows.items()} == {
                done.id: ("COMPLETED", "k1", "w1"), other.id: ("FAILED", "k1", "w1"),
                cancelled.id: ("CANCELLED", None, None)}
            assert rows[done.id].execution == 120.0 and rows[cancelled.id].started_at is None

    asyncio.run(main())
