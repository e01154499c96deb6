"""Two whole gateways in one process on one PostgreSQL schema (replicas A and B, each with its own store
connection and queue listener): clients on B are served by a worker polling A through the RunPod routes, and
the routes answer 503 with Retry-After, never 500, while the database is unreachable."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gpuform.gateway.postgres import PostgresStore
from gpuform.gateway.shared_queue import SharedJobQueue
from tests.gateway_harness import CLIENT_KEY, FakeWorker, Harness, gateway
from tests.pg import postgres_url

pytestmark = [pytest.mark.unit, pytest.mark.postgres]


async def _ready_worker(h: Harness) -> FakeWorker:
    deadline = time.monotonic() + 5
    while not h.runtime.leadership.leading:  # only the leader starts workers (advisory lock, a moment after start)
        assert time.monotonic() < deadline, "the first replica did not take the lead"
        await asyncio.sleep(0.05)
    await h.tick()  # a new leader adopts the store's workers before it decides anything
    await h.run("warm-up")
    await h.settle()
    worker = h.worker()
    await worker.serve_one()
    return worker


async def _serve(worker: FakeWorker, *chunks: str, output: Any = "done") -> str:
    job = None
    while job is None:
        job = await worker.take()
    for chunk in chunks:
        assert (await worker.chunk(job["id"], chunk)).json() == {"accepted": True}
    await worker.done(job["id"], output)
    return str(job["id"])


def test_clients_on_one_replica_are_served_by_a_worker_polling_the_other(schema: str) -> None:
    async def main() -> None:
        async with gateway(store=PostgresStore(postgres_url(), schema, "key")) as a:
            worker = await _ready_worker(a)
            async with gateway(store=PostgresStore(postgres_url(), schema, "key"), clock=a.clock) as b:
                queue = b.runtime.queue
                assert isinstance(queue, SharedJobQueue)
                queue.recheck = 30.0  # B's runsync can only wake in time by A's notification
                serving = asyncio.create_task(_serve(worker, "a", "b", output="ab"))
                started = time.monotonic()
                sync = await b.call("POST", "/v2/ep/runsync", json={"input": "s"})
                assert time.monotonic() - started < 5
                assert sync.json()["status"] == "COMPLETED" and sync.json()["output"] == "ab"
                assert await serving == sync.json()["id"]
                streamed = await b.call("GET", f"/v2/ep/stream/{sync.json()['id']}")
                assert streamed.json()["stream"] == [{"output": "a"}, {"output": "b"}]
                again = await a.call("GET", f"/v2/ep/stream/{sync.json()['id']}")
                assert again.json()["stream"] == [], "drained on B: chunks since the previous call, on any replica"

                job_id = await b.run("sse")
                sse = asyncio.create_task(b.call("GET", f"/v2/ep/stream/{job_id}",
                                                 headers={"Accept": "text/event-stream"}))
                await _serve(worker, "x", output="sse-done")
                text = (await asyncio.wait_for(sse, 5)).text
                assert text.startswith('data: {"output": "x"}') and "event: status" in text and "sse-done" in text

                job_id = await b.run("to cancel")
                taken = await worker.take()
                assert taken is not None and taken["id"] == job_id
                assert (await b.call("POST", f"/v2/ep/cancel/{job_id}")).json()["status"] == "CANCELLED"
                stops = await a.call("GET", f"/v2/ep/job-stop/{worker.id}", worker.token)
                assert stops.json()["jobsToStop"] == [job_id]
                assert (await worker.done(job_id, "late")).json() == {"accepted": False}

                first, second = await a.run(1), await a.run(2)
                health = (await b.call("GET", "/v2/ep/health")).json()
                assert health["jobs"]["inQueue"] == 2 and health["jobs"]["completed"] >= 3
                assert (await b.call("POST", "/v2/ep/purge-queue")).json()["removed"] == 2
                assert (await a.status(first))["status"] == (await a.status(second))["status"] == "CANCELLED"

    asyncio.run(main())


def test_routes_answer_503_with_retry_after_while_postgres_is_unreachable(schema: str) -> None:
    async def main() -> None:
        store = PostgresStore(postgres_url(), schema, "key")
        async with gateway(store=store) as h:
            worker = await _ready_worker(h)
            job_id = await h.run("x")
            store.db.url = "postgresql://gpuform:pw@127.0.0.1:1/gpuform"  # the database becomes unreachable
            store.db.run(lambda c: c.close())
            for method, path, key in [("POST", "/v2/ep/run", None), ("POST", "/v2/ep/runsync", None),
                                      ("GET", f"/v2/ep/status/{job_id}", None),
                                      ("GET", f"/v2/ep/stream/{job_id}", None),
                                      ("POST", f"/v2/ep/cancel/{job_id}", None), ("GET", "/v2/ep/health", None),
                                      ("GET", f"/v2/ep/job-take/{worker.id}", worker.token),
                                      ("GET", f"/v2/ep/job-stop/{worker.id}", worker.token),
                                      ("POST", f"/v2/ep/job-done/{worker.id}/{job_id}", worker.token)]:
                kwargs: dict[str, Any] = {"json": {"input": 1}} if method == "POST" else {}
                resp = await h.call(method, path, key or CLIENT_KEY, **kwargs)
                assert resp.status_code == 503, (path, resp.status_code, resp.text)
                assert resp.headers["Retry-After"] == "5"

    asyncio.run(main())
