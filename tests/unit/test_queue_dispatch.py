"""Who gets a new job: a waiting worker that may still take work, or, when none is, the scale-from-zero hook
at once (not at the next reconcile tick)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpuform.config.schema import GatewayTimings
from gpuform.gateway.postgres import PostgresStore
from gpuform.gateway.queue import JobQueue
from gpuform.gateway.shared_queue import SharedJobQueue
from gpuform.gateway.sqlite import SQLiteStore
from tests.pg import drop_schema, fresh_schema, postgres_url

pytestmark = pytest.mark.unit
Make = Callable[[], JobQueue]


@pytest.fixture(params=["memory", pytest.param("shared", marks=pytest.mark.postgres)])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """Each test runs on the in-memory queue (SQLite) and on the shared one (PostgreSQL)."""
    if request.param == "memory":
        yield lambda: JobQueue(SQLiteStore(tmp_path / "gateway.db").jobs, GatewayTimings())
        return
    schema, made = fresh_schema(), []

    def shared() -> JobQueue:
        queue = SharedJobQueue(PostgresStore(postgres_url(), schema), GatewayTimings())
        queue.restore()
        made.append(queue)
        # listening, its wake-up of every waiter already scheduled: it wakes none of the test's takes
        assert queue.listener is not None and queue.listener.listening.wait(10)
        return queue
    yield shared
    for queue in made:
        queue.dispose()
        queue.pg.db.close()
    drop_schema(schema)


def _queue(make: Make) -> tuple[JobQueue, list[str]]:
    queue = make()
    unserved: list[str] = []
    queue.on_unserved.append(unserved.append)
    return queue, unserved


def _submit(queue: JobQueue) -> str:
    job, _ = queue.submit("ep", {"n": 1}, execution_timeout=60, ttl=600)
    return job.id


def test_a_waiting_worker_takes_the_job_and_nothing_scales(make: Make) -> None:
    async def main() -> None:
        queue, unserved = _queue(make)
        taking = asyncio.create_task(queue.take("ep", "w1", 1, timeout=5))
        await asyncio.sleep(0.05)
        job_id = _submit(queue)
        jobs = await asyncio.wait_for(taking, 1)
        assert [j.id for j in jobs] == [job_id]
        assert unserved == []

    asyncio.run(main())


def test_no_waiting_worker_scales_at_once(make: Make) -> None:
    async def main() -> None:
        queue, unserved = _queue(make)
        _submit(queue)
        assert unserved == ["ep"]

    asyncio.run(main())


def test_a_stopping_workers_poll_does_not_swallow_the_job(make: Make) -> None:
    async def main() -> None:
        queue, unserved = _queue(make)
        stopping = False
        taking = asyncio.create_task(queue.take("ep", "w1", 1, timeout=5, eligible=lambda: not stopping))
        await asyncio.sleep(0.05)
        stopping = True  # the worker is being stopped while its long-poll still waits
        _submit(queue)
        assert unserved == ["ep"], "the job must start a worker now, not after the poll's next wake-up"
        assert await asyncio.wait_for(taking, 0.5) == [], "the stopping worker's poll returns at once"

    asyncio.run(main())


def test_a_dead_workers_poll_passes_the_job_on(make: Make) -> None:
    async def main() -> None:
        queue, unserved = _queue(make)

        async def gone() -> bool:
            return True  # the worker's connection is closed: it crashed before the gateway noticed

        dead = asyncio.create_task(queue.take("ep", "dead", 1, timeout=5, disconnected=gone))
        await asyncio.sleep(0.05)
        job_id = _submit(queue)
        assert unserved == [], "a worker was waiting, as far as the queue could tell"
        assert await asyncio.wait_for(dead, 0.5) == []
        assert unserved == ["ep"], "the woken poll that will not take the job hands it on"
        alive = await asyncio.wait_for(queue.take("ep", "w2", 1, timeout=1), 1)
        assert [j.id for j in alive] == [job_id]

    asyncio.run(main())


def test_a_take_beyond_the_workers_concurrency_waits_for_its_job_to_end(make: Make) -> None:
    """limit=1: a worker holding a job gets nothing more (a batch take gets only the free slots); its next
    take is held while the job runs and takes the next job as soon as the first one ends."""

    async def main() -> None:
        queue, _ = _queue(make)
        first, second, third = _submit(queue), _submit(queue), _submit(queue)
        assert [j.id for j in await queue.take("ep", "w1", 3, timeout=1, limit=1)] == [first]
        held = asyncio.create_task(queue.take("ep", "w1", 1, timeout=5, limit=1))
        await asyncio.sleep(0.3)
        assert not held.done(), "the take waits while the worker's slot is taken"
        assert [j.id for j in await queue.take("ep", "w2", 1, timeout=1, limit=1)] == [second]
        queue.result(first, "w1", {"output": "ok"})
        assert [j.id for j in await asyncio.wait_for(held, 0.2)] == [third]

    asyncio.run(main())


def test_a_results_answer_waits_for_the_workers_next_job_only_while_it_polls(make: Make) -> None:
    async def main() -> None:
        queue, _ = _queue(make)
        started = asyncio.get_running_loop().time()
        await queue.next_handed("w1", 5)
        assert asyncio.get_running_loop().time() - started < 0.1, "no take waiting: nothing to wait for"
        polling = asyncio.create_task(queue.take("ep", "w1", 1, timeout=5, limit=1))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(queue.next_handed("w1", 5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        job_id = _submit(queue)
        await asyncio.wait_for(waiting, 0.2)
        assert [j.id for j in await polling] == [job_id]
        polling = asyncio.create_task(queue.take("ep", "w1", 1, timeout=5, limit=1))
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        await queue.next_handed("w1", 0.2)
        assert asyncio.get_running_loop().time() - started >= 0.19, "no job: it waits its timeout, no longer"
        polling.cancel()

    asyncio.run(main())
